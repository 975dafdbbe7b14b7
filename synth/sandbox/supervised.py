"""A cell process as synth sees it: started through the supervisor (_supervisor.py), reported on by it, stopped
through its lifeline. synth is never the cell's parent."""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from synth.sandbox import _supervisor
from synth.sandbox.base import SandboxError

log = logging.getLogger(__name__)

SUPERVISOR = Path(_supervisor.__file__).resolve()


class Supervised:
    """A cell process as synth sees it: started by (and reported on by) its supervisor.

    `returncode` is the cell's exit code once it is gone; `lost` says why the supervisor vanished without reporting
    one (the cell killed it); `pid` is the cell's own pid (its process group id too).
    """

    def __init__(self, config: dict, cwd: Path, start_timeout: float):
        status_r, status_w = os.pipe()
        life_r, life_w = os.pipe()
        config = {**config, "status_fd": status_w}
        try:
            self.supervisor = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR), marshal.dumps(config).hex()],
                cwd=cwd,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=life_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w, *config["pass_fds"]),
                start_new_session=True,  # its own group: killpg of the cell's parent's group never reaches synth
            )
        except BaseException:
            os.close(status_r)
            os.close(life_w)
            raise
        finally:
            os.close(status_w)
            os.close(life_r)
        self.stdout, self.stderr = self.supervisor.stdout, self.supervisor.stderr
        self._status = status_r
        self._life: int | None = life_w
        self._buffer = b""
        self._lock = threading.Lock()
        self.pid: int | None = None
        self.returncode: int | None = None
        self.lost: str | None = None
        first = self._next_message(time.monotonic() + max(start_timeout, 30.0))
        if first is None or first[0] != "pid":
            why = (first[1] if first else None) or self.lost or "no answer from the supervisor"
            self.stop()
            for pipe in (self.stdout, self.stderr):
                pipe.close()
            raise SandboxError(f"the sandboxed process could not start: {why}")
        self.pid = int(first[1])

    def _next_message(self, deadline: float) -> tuple[str, str] | None:
        """The supervisor's next status line; None on deadline, or (setting `lost`) when it died first."""
        while b"\n" not in self._buffer:
            if self._status is None:
                return None
            left = deadline - time.monotonic()
            if left < 0:
                return None
            ready, _, _ = select.select([self._status], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._status, 4096)
            if not chunk:
                os.close(self._status)
                self._status = None
                self._supervisor_lost()
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        kind, _, value = line.decode("utf-8", "replace").partition(" ")
        return kind, value

    def _supervisor_lost(self) -> None:
        try:
            code = self.supervisor.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.supervisor.kill()
            code = self.supervisor.wait()
        if self.returncode is None:
            try:
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            except ValueError:
                how = f"died (status {code})"
            self.lost = f"the sandbox supervisor {how}"

    def wait(self, timeout: float) -> bool:
        """Until the cell is gone (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + max(timeout, 0)
        while self.returncode is None and self.lost is None:
            message = self._next_message(deadline)
            if message is None:
                return self.returncode is not None or self.lost is not None
            if message[0] == "exit":
                self.returncode = int(message[1])
        return True

    def poll(self) -> int | None:
        self.wait(0)
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL the cell's process group now (from any thread); the supervisor then reaps and reports."""
        if self.pid is not None and self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> bool:
        """Make sure the cell, its tree and the supervisor are gone; True when the supervisor saw it through."""
        with self._lock:
            life, self._life = self._life, None
        if life is not None:
            self.kill_group()
            os.close(life)  # the lifeline: the supervisor kills the whole tree and reports
        if self.lost is None and self.returncode is None:
            self.wait(10)
        try:
            self.supervisor.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("sandbox supervisor %s did not exit; killing it", self.supervisor.pid)
            self.supervisor.kill()
            self.supervisor.wait()
        if self._status is not None:
            os.close(self._status)
            self._status = None
        return self.lost is None
