"""What both sandbox backends share: one cell at a time with timing and the workspace diff, bounded output capture
split per cell, the traceback of a failed cell, and copying the sources into a fresh workspace."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Sequence

from synth.sandbox.base import ExecResult, ExecutionMode, Limits, SandboxError, SandboxState
from synth.sandbox.snapshot import changed_paths, stat_signature, take_snapshot

OUTPUT_KILL_BYTES = 64 << 20  # a cell printing more than this is killed: the rest would be truncated anyway


class CellSession:
    """The run() every backend shares. Subclasses set workspace, mode, limits and implement _run_script and
    _run_in_worker (one cell, given its timeout) and close()."""

    workspace: Path
    mode: ExecutionMode
    limits: Limits

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cells = 0
        self._closed = False

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        if not isinstance(code, str):
            raise TypeError(f"cell code must be a str, got {type(code).__name__}")
        with self._lock:
            if self._closed:
                raise SandboxError(f"sandbox session over {self.workspace} is closed")
            self._cells += 1
            timeout = self.limits.timeout_s if timeout is None else timeout
            before = stat_signature(self.workspace)
            started = time.monotonic()
            run = self._run_script if self.mode == "script" else self._run_in_worker
            result = run(code, timeout)
            result.duration_s = round(time.monotonic() - started, 4)
            result.files_changed = changed_paths(before, stat_signature(self.workspace))
            return result

    def snapshot(self) -> SandboxState:
        return take_snapshot(self.workspace)

    def _run_script(self, code: str, timeout: float) -> ExecResult:
        raise NotImplementedError

    def _run_in_worker(self, code: str, timeout: float) -> ExecResult:
        raise NotImplementedError


def truncate_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(limit // 2, 1)
    return f"{text[:keep]}\n... [truncated {len(text) - 2 * keep} chars] ...\n{text[-keep:]}"


class OutputCapture:
    """Keeps the head and the tail of a stream (bounded memory however much is written) and counts the rest."""

    def __init__(self, limit_chars: int):
        self._keep = max(limit_chars, 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self._keep:
                del self.tail[: len(self.tail) - self._keep]

    def text(self, limit_chars: int) -> str:
        tail = bytes(self.tail[-self._keep :])
        dropped = self.total - len(self.head) - len(tail)
        head_text = self.head.decode("utf-8", errors="replace")
        tail_text = tail.decode("utf-8", errors="replace")
        if not dropped:
            return truncate_middle(head_text + tail_text, limit_chars)
        keep = max(limit_chars // 2, 1)
        dropped += max(len(head_text) - keep, 0) + max(len(tail_text) - keep, 0)
        return f"{head_text[:keep]}\n... [truncated {dropped} chars] ...\n{tail_text[-keep:]}"


class CellStream:
    """Reads one pipe in a thread; splits it into per-cell captures at end markers written by the worker."""

    def __init__(self, fd: int, limit_chars: int, on_overflow):
        self._fd = fd
        self._limit = limit_chars
        self._on_overflow = on_overflow
        self._cond = threading.Condition()
        self._capture = OutputCapture(limit_chars)
        self._next: OutputCapture | None = None
        self._marker: bytes | None = None
        self._carry = b""
        self.eof = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def expect(self, marker: bytes) -> None:
        with self._cond:
            self._marker = marker

    def _sink(self) -> OutputCapture:
        return self._next if self._next is not None else self._capture

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._sink().feed(self._carry)
                    self._carry = b""
                    self.eof = True
                    self._cond.notify_all()
                    break
                buf = self._carry + data
                self._carry = b""
                if self._marker is not None and self._next is None:
                    index = buf.find(self._marker)
                    if index >= 0:
                        self._capture.feed(buf[:index])
                        self._next = OutputCapture(self._limit)
                        self._next.feed(buf[index + len(self._marker) :])
                        self._marker = None
                        self._cond.notify_all()
                    else:
                        keep = len(self._marker) - 1
                        self._capture.feed(buf[: len(buf) - keep])
                        self._carry = buf[len(buf) - keep :]
                else:
                    self._sink().feed(buf)
                overflow = self._sink().total > OUTPUT_KILL_BYTES
            if overflow:
                self._on_overflow()
        os.close(self._fd)

    def wait(self, deadline: float) -> bool:
        """Until this cell's end marker (or EOF) arrives; False on deadline."""
        with self._cond:
            while self._next is None and not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def take(self) -> tuple[str, int]:
        """The finished cell's text (truncated) and its size in bytes; later output goes to the next cell."""
        with self._cond:
            capture = self._capture
            if self._carry and self._next is None:
                capture.feed(self._carry)
                self._carry = b""
            self._capture = self._next if self._next is not None else OutputCapture(self._limit)
            self._next = None
            self._marker = None
            return capture.text(self._limit), capture.total

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def split_traceback(stderr: str) -> tuple[str, str | None]:
    """A failed script's stderr -> (what came before the traceback, the traceback)."""
    index = stderr.rfind("Traceback (most recent call last):")
    if index < 0:
        return stderr, None
    return stderr[:index], stderr[index:].rstrip("\n")


def copy_sources(sources: Sequence[Path], workspace: Path) -> None:
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"sandbox workspace source does not exist: {source}")
        target = workspace / source.name
        if target.exists():
            raise FileExistsError(f"two workspace sources share the name {source.name!r} (second: {source})")
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(source, target)
    # Copies are writable by the cell even when the originals are read-only.
    for root, dirs, files in os.walk(workspace):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)
