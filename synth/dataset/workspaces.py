"""The files an audited prompt names, found on this machine: in the row's own workspace (an rl archive), under
`--workspaces DIR` (one folder or archive per task, by `workspace_id` or by the files it holds), or under
`--sources DIR` (or the sources folder of the run that made the records).

Archives (.tar.gz/.tgz/.tar/.zip) are unpacked once per audit into a cache folder, refusing members that would
land outside it. A name the prompt shows with a size that differs from the file found is noted: the file is
probably not the one the trajectory ran on.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from synth.dataset.trajectories import AuditRow
from synth.protocol import format_size, parse_user_prompt

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass
class ResolvedFiles:
    files: dict[str, Path] = field(default_factory=dict)  # prompt name -> file (or folder) on this machine
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a size that differs from the prompt's

    @property
    def names(self) -> list[str]:
        return [*self.files, *self.missing]


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts


class FileResolver:
    """Finds the files of each row; one per audit (it caches unpacked archives and the --workspaces index)."""

    def __init__(self, *, sources: Path | None, workspaces: Path | None, cache_dir: Path) -> None:
        self.sources = Path(sources) if sources is not None else None
        self.workspaces = Path(workspaces) if workspaces is not None else None
        self.cache_dir = Path(cache_dir)
        self._unpacked: dict[Path, Path] = {}
        self._index: list[tuple[Path, set[str]]] | None = None
        self._lock = threading.Lock()  # rows are resolved in worker threads; an archive is unpacked once

    def resolve(self, row: AuditRow) -> ResolvedFiles:
        shown = parse_user_prompt(row.prompt).files
        out = ResolvedFiles()
        names = []
        for name, size in shown:
            if not _safe_name(name):
                out.missing.append(name)
                out.notes.append(f"{name!r} is not a relative path inside the workspace")
                continue
            names.append((name, size))
        roots = self._roots(row, [n for n, _ in names])
        out.notes += [(root / ".unreadable").read_text(encoding="utf-8").strip() for root in roots
                      if (root / ".unreadable").is_file()]
        for name, size in names:
            found = next((root / name for root in roots if (root / name).exists()), None)
            if found is None:
                out.missing.append(name)
                continue
            out.files[name] = found
            if size and found.is_file() and format_size(found.stat().st_size) != size:
                out.notes.append(f"{name}: the prompt shows {size}, the file found is "
                                 f"{format_size(found.stat().st_size)} ({found})")
        return out

    def _roots(self, row: AuditRow, names: list[str]) -> list[Path]:
        roots: list[Path] = []
        if row.workspace is not None:
            roots.append(self.open_workspace(row.workspace))
        if self.workspaces is not None:
            if row.workspace_id:
                for candidate in [self.workspaces / row.workspace_id,
                                  *(self.workspaces / f"{row.workspace_id}{s}" for s in ARCHIVE_SUFFIXES)]:
                    if candidate.exists():
                        roots.append(self.open_workspace(candidate))
                        break
            if names:
                match = self._best_workspace(names)
                if match is not None:
                    roots.append(match)
            roots.append(self.workspaces)
        for root in (self.sources, row.sources_root):
            if root is not None:
                roots.append(root if root.is_dir() else root.parent)
        return [r for r in dict.fromkeys(roots) if r.is_dir()]

    def _best_workspace(self, names: list[str]) -> Path | None:
        """The first workspace (sorted by name) under --workspaces holding every name, else the one holding most."""
        with self._lock:
            if self._index is None:
                self._index = self._workspace_index()
        wanted = set(names)
        best, best_count = None, 0
        for entry, held in self._index:
            count = len(wanted & held)
            if count > best_count:
                best, best_count = entry, count
            if count == len(wanted):
                break
        return self.open_workspace(best) if best is not None else None

    def _workspace_index(self) -> list[tuple[Path, set[str]]]:
        index: list[tuple[Path, set[str]]] = []
        if self.workspaces.is_dir():
            for entry in sorted(self.workspaces.iterdir()):
                if entry.is_dir():
                    held = {p.relative_to(entry).as_posix() for p in entry.rglob("*")}
                elif _is_archive(entry):
                    held = _archive_names(entry)
                else:
                    continue
                index.append((entry, held))
        return index

    def open_workspace(self, path: Path) -> Path:
        """A folder as is; an archive unpacked (once) into the cache."""
        path = Path(path)
        if not _is_archive(path):
            return path
        key = path.resolve()
        with self._lock:
            if key not in self._unpacked:
                dest = self.cache_dir / hashlib.sha256(str(key).encode()).hexdigest()[:16]
                if not dest.is_dir():
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    partial = Path(tempfile.mkdtemp(prefix=f"{dest.name}.", suffix=".part", dir=self.cache_dir))
                    _unpack(path, partial)
                    try:
                        partial.rename(dest)
                    except OSError:  # another audit of the same cache unpacked it first
                        shutil.rmtree(partial, ignore_errors=True)
                self._unpacked[key] = dest
            return self._unpacked[key]


def _archive_names(path: Path) -> set[str]:
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return {n.rstrip("/") for n in zf.namelist()}
        with tarfile.open(path) as tar:
            return {m.name.removeprefix("./") for m in tar.getmembers()}
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return set()


def _unpack(archive: Path, dest: Path) -> None:
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not _safe_name(member.rstrip("/") or "."):
                        raise ValueError(f"member {member!r} would land outside the workspace")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
        # An unreadable archive leaves an empty workspace: every file it should hold is then reported missing.
        (dest / ".unreadable").write_text(f"{archive}: {exc}\n", encoding="utf-8")


__all__ = ["FileResolver", "ResolvedFiles", "ARCHIVE_SUFFIXES"]
