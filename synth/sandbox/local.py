"""The local backend: model code runs in child processes of a supervisor, with rlimits, a private filesystem view
(bubblewrap) and no network where the machine allows it, in a fresh copy of its sources.

What the machine allows is decided in isolation.py (and said, once, when something is missing); how a session's
processes are started and killed in jail.py; the supervisor between synth and every cell in supervised.py and
_supervisor.py. This module holds the sessions: script mode (a fresh process per cell) and session mode (one
long-lived worker, like a notebook).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

from synth.sandbox.base import ExecResult, ExecutionMode, Limits
from synth.sandbox.cells import OUTPUT_KILL_BYTES, CellSession, CellStream, copy_sources, split_traceback
from synth.sandbox.isolation import RUNTIME_DIR, RUNTIME_MOUNT, IsolationPlan, gap_warning, plan_isolation, warn_once
from synth.sandbox.jail import Jail
from synth.sandbox.supervised import Supervised

__all__ = ["LocalSandbox", "LocalSession"]


def _exit_reason(returncode: int) -> str:
    if 0 <= returncode <= 128:
        return f"process exited with code {returncode}"
    number = -returncode if returncode < 0 else returncode - 128
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"process exited with code {returncode}"
    why = {
        "SIGXCPU": "hit the CPU time limit",
        "SIGXFSZ": "hit the file size limit",
        "SIGKILL": "was killed (out of memory or a limit)",
        "SIGSEGV": "crashed (segmentation fault)",
    }.get(name, "was terminated by a signal")
    return f"process {why} ({name})"


def _supervisor_killed(how: str) -> str:
    return (f"SupervisorKilled: {how}: the cell killed the process that supervised it (model code must not signal "
            "processes outside its own); the cell was stopped")


_open_sessions: "weakref.WeakSet[LocalSession]" = weakref.WeakSet()


@atexit.register
def _close_forgotten_sessions() -> None:
    """Sessions a caller never closed still must not leave processes, cgroups or temp dirs behind."""
    for session in list(_open_sessions):
        try:
            session.close()
        except Exception:
            pass


class LocalSession(CellSession):
    """One episode's workspace and the processes that run its cells."""

    def __init__(self, workspace: Path, mode: ExecutionMode, limits: Limits, python: str, owns_workspace: bool,
                 plan: IsolationPlan):
        if mode not in ("script", "session"):
            raise ValueError(f"sandbox mode must be 'script' or 'session', got {mode!r}")
        super().__init__()
        self.workspace = workspace
        self.mode: ExecutionMode = mode
        self.limits = limits
        self._owns_workspace = owns_workspace
        self._owner = (workspace.stat().st_uid, workspace.stat().st_gid)
        self._jail = Jail(workspace, limits, python, plan)
        self._python = python
        self._worker: Supervised | None = None
        self._streams: tuple[CellStream, CellStream] | None = None
        self._ctl: tuple[int, int] | None = None  # (write to worker, read from worker)
        self._reply_buffer = b""
        self._overflowed = threading.Event()
        self._state_lost_note: str | None = None
        _open_sessions.add(self)

    # --- public API (run and snapshot come from CellSession) ------------------------------------------------
    @property
    def protections(self) -> frozenset[str]:
        """What holds for this session's cells (the sandbox's protections, less any this session could not get)."""
        return self._jail.protections

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_worker()
            self._jail.kill_all(None)
            self._jail.close()
            if self._owns_workspace:
                shutil.rmtree(self.workspace, ignore_errors=True)
            elif self._jail.uid is not None:
                self._give_back_workspace()

    def __enter__(self) -> "LocalSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a forgotten session must not leave processes behind
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    # --- helpers shared by both modes -------------------------------------------------------------------------
    def _attach_streams(self, proc: Supervised) -> tuple[CellStream, CellStream]:
        self._overflowed.clear()

        def _overflow() -> None:  # stop a runaway printer at once; the run loop reports it
            self._overflowed.set()
            proc.kill_group()

        streams = []
        for pipe in (proc.stdout, proc.stderr):
            fd = os.dup(pipe.fileno())  # the stream thread owns (and closes) its own fd
            pipe.close()
            streams.append(CellStream(fd, self.limits.output_limit_chars, _overflow))
        return streams[0], streams[1]

    # --- script mode ------------------------------------------------------------------------------------------
    def _run_script(self, code: str, timeout: float) -> ExecResult:
        cell_path = self._jail.private_tmp / f"cell_{self._cells}.py"
        cell_path.write_text(code, encoding="utf-8")
        if self._jail.uid is not None:
            os.chown(cell_path, self._jail.uid, self._jail.uid)
        inside = f"/tmp/{cell_path.name}" if self._jail.bwrap else str(cell_path)
        proc = self._jail.spawn([self._python, inside], env_extra={"DS_SYNTH_SAVE_FIGURES_AT_EXIT": "1"})
        out, err = self._attach_streams(proc)
        timed_out = not proc.wait(timeout) and not self._overflowed.is_set()
        # The cell is over: nothing it started may outlive it (a fresh process per cell keeps no state either).
        self._jail.kill_all(proc, quick=not timed_out)
        out.wait(time.monotonic() + 5)
        err.wait(time.monotonic() + 5)
        stdout, _ = out.take()
        stderr, _ = err.take()
        cell_path.unlink(missing_ok=True)
        error = None
        if timed_out:
            error = f"TimeoutError: cell exceeded {timeout:g} s wall clock and was killed"
        elif self._overflowed.is_set():
            error = f"OutputLimitError: cell wrote more than {OUTPUT_KILL_BYTES >> 20} MiB of output and was killed"
        elif proc.lost is not None:
            error = _supervisor_killed(proc.lost)
        elif proc.returncode != 0:
            stderr, error = split_traceback(stderr)
            if error is None:
                error = _exit_reason(proc.returncode)
        return ExecResult(stdout=stdout, stderr=stderr, error=error, timed_out=timed_out)

    # --- session mode -----------------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = {"DS_SYNTH_CTL_IN": str(to_worker_r), "DS_SYNTH_CTL_OUT": str(from_worker_w)}
        worker = f"{RUNTIME_MOUNT if self._jail.bwrap else RUNTIME_DIR}/_worker.py"
        try:
            proc = self._jail.spawn(
                [self._python, worker], env_extra=env, pass_fds=(to_worker_r, from_worker_w), cpu_hard=False
            )
        except BaseException:
            os.close(to_worker_w)
            os.close(from_worker_r)
            raise
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self._worker = proc
        self._streams = self._attach_streams(proc)
        self._ctl = (to_worker_w, from_worker_r)
        self._reply_buffer = b""

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        self._jail.kill_all(self._worker)
        for stream in self._streams or ():
            stream.join(5)
        for fd in self._ctl or ():
            try:
                os.close(fd)
            except OSError:
                pass
        self._worker = self._streams = self._ctl = None

    def _read_reply(self, deadline: float) -> dict | None:
        """The worker's one-line answer; None if the deadline passes or the worker dies first."""
        fd = self._ctl[1]
        while b"\n" not in self._reply_buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._reply_buffer += chunk
        line, _, self._reply_buffer = self._reply_buffer.partition(b"\n")
        return json.loads(line)

    def _run_in_worker(self, code: str, timeout: float) -> ExecResult:
        note = self._state_lost_note
        if self._worker is None:
            self._start_worker()
        self._state_lost_note = None
        token = secrets.token_hex(8)
        marker = b"\0\1ds-synth:" + token.encode() + b"\0\1"
        out, err = self._streams
        out.expect(marker)
        err.expect(marker)
        request = {"code": code, "token": token, "cell": self._cells, "cpu_seconds": self.limits.cpu_seconds}
        deadline = time.monotonic() + timeout
        reply = None
        try:
            os.write(self._ctl[0], (json.dumps(request) + "\n").encode())
            reply = self._read_reply(deadline)
        except BrokenPipeError:
            pass
        finished = reply is not None and out.wait(deadline) and err.wait(deadline)
        overflowed = self._overflowed.is_set()
        timed_out = not finished and not overflowed and time.monotonic() >= deadline
        error = reply.get("error") if reply else None
        if not finished or overflowed:
            self._worker.wait(0 if timed_out or overflowed else 2)  # let the supervisor report how it ended
            returncode, lost = self._worker.returncode, self._worker.lost
            self._stop_worker()  # kills the group; the streams then reach EOF
            if timed_out:
                error = f"TimeoutError: cell exceeded {timeout:g} s wall clock and was killed"
            elif overflowed:
                error = f"OutputLimitError: cell wrote more than {OUTPUT_KILL_BYTES >> 20} MiB of output and was killed"
            elif lost is not None:
                error = _supervisor_killed(lost)
            else:
                error = "WorkerDied: " + (_exit_reason(returncode) if returncode is not None else "worker vanished")
            error += "\n[the session was restarted and its state was lost: variables and imports of earlier cells are gone]"
            self._state_lost_note = "[note: the previous cell killed the session; earlier state is gone]"
        stdout, _ = out.take()
        stderr, _ = err.take()
        if note:
            stdout = f"{note}\n{stdout}" if stdout else note
        return ExecResult(stdout=stdout, stderr=stderr, error=error, timed_out=timed_out)

    def _give_back_workspace(self) -> None:
        uid, gid = self._owner
        os.chown(self.workspace, uid, gid)
        for root, dirs, files in os.walk(self.workspace):
            for name in [*dirs, *files]:
                try:
                    os.lchown(os.path.join(root, name), uid, gid)
                except OSError:
                    pass


class LocalSandbox:
    """`Sandbox` on this machine. `python` is the interpreter that runs model code (default: the one running us).

    `bwrap`: None (default) uses bubblewrap where it works, unless DS_SYNTH_SANDBOX_NO_BWRAP=1; False never uses it;
    True requires it (SandboxError when unusable). `namespaces`: without bubblewrap, None (default) puts cells in
    fresh pid/net namespaces with `unshare` where that works; False never; True requires it.
    `protections` says what holds here; `warning` is the message logged (once) when bubblewrap is not used.
    """

    name = "local"

    def __init__(
        self,
        python: str | os.PathLike | None = None,
        *,
        bwrap: bool | None = None,
        namespaces: bool | None = None,
    ):
        self.python = str(python) if python is not None else sys.executable
        # The running interpreter needs no check (and access() can deny what exec allows on some mounts).
        if python is not None and not os.access(self.python, os.X_OK):
            raise FileNotFoundError(f"sandbox python is not an executable file: {self.python}")
        self._plan = plan_isolation(self.python, bwrap, namespaces)
        self.warning: str | None = None
        if self._plan.bwrap is None:
            self.warning = gap_warning(self._plan.no_bwrap_reason, self._plan.protections)
            warn_once(self.warning)

    @property
    def protections(self) -> frozenset[str]:
        return self._plan.protections

    @property
    def isolation(self) -> str:
        """'bwrap', 'unshare' or 'rlimits': which containment path cells take."""
        return "bwrap" if self._plan.bwrap else "unshare" if self._plan.unshare else "rlimits"

    def open(
        self,
        workspace_files: Sequence[Path] = (),
        *,
        mode: ExecutionMode = "script",
        limits: Limits | None = None,
        workspace: Path | None = None,
    ) -> LocalSession:
        owns = workspace is None
        if owns:
            root = Path(tempfile.mkdtemp(prefix="ds-synth-ws-"))
        else:
            root = Path(workspace).resolve()
            root.mkdir(parents=True, exist_ok=True)
        try:
            copy_sources(list(workspace_files), root)
            root.chmod(0o755)
            return LocalSession(root, mode, limits or Limits(), self.python, owns, self._plan)
        except BaseException:
            if owns:
                shutil.rmtree(root, ignore_errors=True)
            raise
