"""A run directory: one process at a time, crash-safe outputs.

`RunDirLock` holds an exclusive lock on `<run dir>/.lock` (flock, released by the kernel if the process dies) for
as long as a run writes there, so a second `synth generate --out RUN --resume` started while the first still runs
is refused with the pid of the process that holds it, and the first run's records stay intact.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from synth.errors import SynthError
from synth.jsonl import repair_jsonl

LOCK_FILE = ".lock"


class RunDirError(SynthError, RuntimeError):
    """The run cannot start in this directory (not empty, no stored config, in use …)."""


class RunDirInUse(RunDirError):
    """Another process is running in this run directory."""


class RunDirLock:
    """Exclusive use of a run directory by this process (created when missing)."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._fd: int | None = None

    def acquire(self, run_dir: Path | None = None) -> "RunDirLock":
        if run_dir is not None:
            self.run_dir = Path(run_dir)
        if self.run_dir is None:
            raise ValueError("RunDirLock.acquire needs the run dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        _lock_or_raise(fd, self.run_dir, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        self._fd = fd
        return self

    @contextmanager
    def taking(self, run_dir: Path) -> Iterator["RunDirLock"]:
        """Acquire the lock for the block that sets the run dir up; release it again if that block fails."""
        self.acquire(run_dir)
        try:
            yield self
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_or_raise(fd: int, run_dir: Path, mode: int) -> None:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirInUse(f"run dir {run_dir} is in use by {holder}; wait for that run to finish "
                          "(or stop it) before resuming, or choose another --out") from None


def ensure_not_in_use(run_dir: Path) -> None:
    """Raise RunDirInUse when a live process holds the run dir's lock (a run that has only just started may not
    have written its config yet: "in use" is the true answer, not "nothing to resume"). Takes nothing."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    _lock_or_raise(fd, Path(run_dir), fcntl.LOCK_SH)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def has_run_files(run_dir: Path) -> bool:
    """Whether the directory holds anything besides a lock file."""
    return run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())


def open_outputs(run_dir: Path) -> tuple[Path, Path]:
    """records.jsonl and rejected.jsonl, present and without a torn last line (a crash mid-append)."""
    paths = run_dir / "records.jsonl", run_dir / "rejected.jsonl"
    for path in paths:
        repair_jsonl(path)
        path.touch()
    return paths


def inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def grown_limit(requested: int | None, stored: int | None, run_dir: Path, unit: str) -> int | None:
    """The --limit of a resumed run: the stored one, or a larger one (a run's plan is a prefix-stable function of
    its config, so it can grow: the new work is appended); a smaller one is refused."""
    if requested is None or requested == stored:
        return stored
    if stored is None or requested < stored:
        raise RunDirError(f"--resume --limit {requested}: the run in {run_dir} plans "
                          f"{stored if stored is not None else 'every'} {unit}; a resumed run can only grow "
                          "(give a larger --limit, or none)")
    return requested


__all__ = ["RunDirLock", "RunDirError", "RunDirInUse", "ensure_not_in_use", "has_run_files", "open_outputs", "inside",
           "grown_limit", "LOCK_FILE"]
