"""Find the data sources under a directory (or classify one file)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from synth.sources.card import SourceKind

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DUCKDB_MAGIC = b"DUCK"  # at byte offset 8 of a DuckDB database file

_BY_SUFFIX: dict[str, SourceKind] = {
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
    ".db": "sqlite",
    ".duckdb": "duckdb",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".md": "text",
    ".markdown": "text",
    ".txt": "text",
    ".rst": "text",
}

# Directories and files that are never data: VCS/tool folders, OS litter, database side files, editor locks.
_JUNK_DIRS = {"__pycache__", "node_modules", "__MACOSX", "venv", ".venv", "site-packages"}
_JUNK_FILES = {"Thumbs.db", "desktop.ini", "Icon\r"}
_JUNK_SUFFIXES = ("-journal", "-wal", "-shm", ".wal", ".tmp", ".lock", ".pyc", "~")


@dataclass(frozen=True)
class DiscoveredFile:
    """One discovered source: `name` is its path relative to the scanned root (POSIX style), unique per run."""

    path: Path
    kind: SourceKind
    name: str


def discover(path: str | os.PathLike) -> list[DiscoveredFile]:
    """Walk `path` (a directory, or a single file) and return its data sources, sorted by name.

    Hidden entries, known junk and files of unknown type are skipped; SQLite/DuckDB files are also recognised by
    their magic header whatever their name. Symlinks are followed only when they point inside the root (symlinked
    directories are not descended); a dangling or looping symlink with a data suffix is still returned so that
    profiling reports it as unreadable instead of it silently vanishing.
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise FileNotFoundError(f"source path does not exist: {root}")
    if not root.is_dir():
        kind = _classify(root)
        if kind is None:
            raise ValueError(f"not a recognised data source (unknown type): {root}")
        return [DiscoveredFile(path=root.absolute(), kind=kind, name=root.name)]

    root_abs = root.absolute()
    root_real = root.resolve()
    found: list[DiscoveredFile] = []
    seen_targets: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root_abs, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden_or_junk_dir(d))
        for filename in sorted(filenames):
            if _is_junk_file(filename):
                continue
            file = Path(dirpath) / filename
            if file.is_symlink():
                target = Path(os.path.realpath(file))  # Path.resolve raises on loops
                if file.exists() and not target.is_relative_to(root_real):
                    continue  # never follow a link out of the source dir
                if not file.exists() and file.suffix.lower() not in _BY_SUFFIX:
                    continue
            kind = _classify(file)
            if kind is None:
                continue
            target = Path(os.path.realpath(file))  # Path.resolve raises on loops
            if file.exists():
                if target in seen_targets:
                    continue  # the same file reached through a link
                seen_targets.add(target)
            found.append(DiscoveredFile(path=file, kind=kind, name=file.relative_to(root_abs).as_posix()))
    return sorted(found, key=lambda s: s.name)


def _classify(file: Path) -> Optional[SourceKind]:
    magic = _read_magic(file)
    if magic.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if magic[8:12] == _DUCKDB_MAGIC:
        return "duckdb"
    return _BY_SUFFIX.get(file.suffix.lower())


def _read_magic(file: Path) -> bytes:
    try:
        if not file.is_file():
            return b""
        with open(file, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""  # unreadable: classified by suffix, and profiling reports the real error


def _is_hidden_or_junk_dir(name: str) -> bool:
    return name.startswith(".") or name in _JUNK_DIRS or name.endswith(".egg-info")


def _is_junk_file(name: str) -> bool:
    return (
        name.startswith(".")
        or name.startswith("~$")  # Excel/Word lock file
        or name in _JUNK_FILES
        or name.endswith(_JUNK_SUFFIXES)
    )
