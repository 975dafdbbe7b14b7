"""The local backend: model code runs in a child process with rlimits, a private filesystem view (bubblewrap) and
no network, in a fresh copy of its sources.

Containment layers, each used where the machine allows it:
- bubblewrap: private mount/pid/net/ipc/uts namespaces; only the Python installation, system libraries, the
  workspace (read-write) and a private /tmp are visible.
- a dedicated unprivileged uid per session when we run as root: RLIMIT_NPROC is not enforced for root, so a
  fork bomb is only bounded once the code runs as a uid of its own (which also makes "kill every process of this
  uid" a complete cleanup).
- a pids cgroup per session where the cgroup tree is writable (fallback path as root).
- rlimits (CPU, address space, file size, processes), a wall-clock timeout that SIGKILLs everything, a scrubbed
  environment, cwd = workspace.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import pwd
import random
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

from synth.sandbox.base import ExecResult, ExecutionMode, Limits
from synth.sandbox.cells import (
    OUTPUT_KILL_BYTES,
    CellSession,
    CellStream,
    copy_sources,
    split_traceback,
)

log = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
_RUNTIME_MOUNT = "/opt/ds-synth-runtime"
_SANDBOX_UID_RANGE = (1_500_000_000, 1_900_000_000)  # far above any real account; one uid per session
_ENV_PASSTHROUGH = ("LANG", "LC_ALL", "TZ")
_warned_no_bwrap = False
_warned_no_fork_guard = False
_warn_lock = threading.Lock()


def _bwrap_path() -> str | None:
    if os.environ.get("DS_SYNTH_SANDBOX_NO_BWRAP") == "1":
        return None
    return shutil.which("bwrap")


def _bwrap_works(bwrap: str) -> bool:
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "true"],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


_bwrap_checked: dict[str, bool] = {}


def _usable_bwrap() -> str | None:
    global _warned_no_bwrap
    path = _bwrap_path()
    if path is not None:
        if path not in _bwrap_checked:
            _bwrap_checked[path] = _bwrap_works(path)
        if _bwrap_checked[path]:
            return path
    with _warn_lock:
        if not _warned_no_bwrap:
            _warned_no_bwrap = True
            reason = "disabled by DS_SYNTH_SANDBOX_NO_BWRAP=1" if os.environ.get("DS_SYNTH_SANDBOX_NO_BWRAP") == "1" else (
                "not installed" if path is None else "installed but cannot create namespaces here"
            )
            log.warning(
                "!!! SANDBOX WITHOUT BUBBLEWRAP (%s): model code can read the host filesystem and reach the "
                "network; only rlimits, timeouts and a scrubbed environment apply. Install `bwrap` or use "
                "the docker backend for real isolation. !!!",
                reason,
            )
    return None


def _world_traversable(path: Path) -> bool:
    """Whether a uid with no rights can reach `path` (execute bit for others on every ancestor)."""
    path = path.resolve()
    for parent in [path, *path.parents]:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _pids_cgroup_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name == "cgroup" and "pids" not in (root / "cgroup.controllers").read_text(errors="ignore"):
                continue
            return root
    return None


def _python_roots(python: str) -> list[str]:
    """Directories that hold an interpreter and its libraries (a venv, its base installation)."""
    roots = set()
    exe = Path(python)
    for candidate in (exe, exe.resolve()):
        prefix = candidate.parent.parent
        roots.add(prefix)
        cfg = prefix / "pyvenv.cfg"
        if cfg.is_file():
            for line in cfg.read_text(errors="ignore").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    roots.add(Path(value.strip()).resolve().parent)
    if Path(python) == Path(sys.executable):
        roots.update(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix))
    system = {Path("/"), Path("/usr"), Path("/usr/local")}
    return sorted(str(r) for r in roots if r not in system and r.is_dir())


def _pid_alive_matching(token: str, uid: int | None, cgroup: Path | None) -> list[int]:
    """Processes that belong to a session: its cgroup, its dedicated uid, or carrying its env token."""
    pids: set[int] = set()
    if cgroup is not None:
        try:
            pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        except OSError:
            pass
    needle = f"DS_SYNTH_SANDBOX_TOKEN={token}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            if uid is not None and os.stat(entry.path).st_uid == uid:
                pids.add(pid)
                continue
            with open(f"{entry.path}/environ", "rb") as fh:
                if needle in fh.read():
                    pids.add(pid)
        except OSError:
            continue
    return sorted(pids)


_mpl_cache_lock = threading.Lock()
_mpl_cache: dict[str, Path | None] = {}


def _matplotlib_cache(python: str) -> Path | None:
    """A font cache built once per interpreter, copied into each session (building it costs ~1 s per process)."""
    with _mpl_cache_lock:
        if python not in _mpl_cache:
            # One stable place per user and interpreter, reused by later runs; built aside, then renamed in.
            key = hashlib.sha256(os.path.realpath(python).encode()).hexdigest()[:12]
            final = Path(tempfile.gettempdir()) / f"ds-synth-mplcache-{os.geteuid()}-{key}"
            if not final.is_dir():
                building = Path(tempfile.mkdtemp(prefix="ds-synth-mplcache-build-"))
                try:
                    subprocess.run(
                        [python, "-c", "import matplotlib.font_manager"],
                        env={"MPLCONFIGDIR": str(building), "PATH": "/usr/bin:/bin", "HOME": str(building)},
                        capture_output=True,
                        timeout=120,
                        check=True,
                    )
                    os.rename(building, final)
                except (OSError, subprocess.SubprocessError):
                    shutil.rmtree(building, ignore_errors=True)
            _mpl_cache[python] = final if final.is_dir() else None
        return _mpl_cache[python]


INNER_WORKSPACE = "/workspace"


class _Jail:
    """How a session's processes are started, limited, and killed."""

    def __init__(self, workspace: Path, limits: Limits, python: str):
        self.workspace = workspace
        self.limits = limits
        self.python = python
        self.token = secrets.token_hex(8)
        self.bwrap = _usable_bwrap()
        # Under bwrap the workspace appears at one fixed path: code that resolves absolute paths (SQLite does) never
        # meets the host's parent folders, and a replay in another workspace prints the same paths.
        self.inner_workspace = INNER_WORKSPACE if self.bwrap else str(workspace)
        self.private_tmp = Path(tempfile.mkdtemp(prefix="ds-synth-tmp-"))
        self.uid: int | None = None
        self.cgroup: Path | None = None
        cache = _matplotlib_cache(python)
        if cache is not None:
            shutil.copytree(cache, self.private_tmp / ".matplotlib")
        is_root = os.geteuid() == 0
        if is_root and (self.bwrap is not None or self._reachable_by_anyone()):
            self.uid = self._free_uid()
            self._hand_over(self.uid)
        if is_root and self.bwrap is None:
            self.cgroup = self._make_cgroup()
        if is_root and self.uid is None and self.cgroup is None:
            global _warned_no_fork_guard
            with _warn_lock:
                if not _warned_no_fork_guard:
                    _warned_no_fork_guard = True
                    log.warning(
                        "!!! SANDBOX HAS NO FORK-BOMB GUARD: running as root (RLIMIT_NPROC is not enforced), without "
                        "bubblewrap, the Python is not reachable by an unprivileged uid and no pids cgroup is "
                        "writable. !!!"
                    )

    def _reachable_by_anyone(self) -> bool:
        return all(_world_traversable(Path(p)) for p in [self.python, RUNTIME_DIR, *(_python_roots(self.python))])

    @staticmethod
    def _free_uid() -> int:
        rng = random.SystemRandom()
        while True:
            uid = rng.randrange(*_SANDBOX_UID_RANGE)
            try:
                pwd.getpwuid(uid)
            except KeyError:
                return uid

    def _hand_over(self, uid: int) -> None:
        for root, dirs, files in os.walk(self.workspace):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, uid)
        os.chown(self.workspace, uid, uid)
        for root, dirs, files in os.walk(self.private_tmp):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, uid)
        os.chown(self.private_tmp, uid, uid)

    def _make_cgroup(self) -> Path | None:
        root = _pids_cgroup_root()
        if root is None:
            return None
        group = root / f"ds-synth-{self.token}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(self.limits.max_processes))
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
            return None
        return group

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        tmp = "/tmp" if self.bwrap else str(self.private_tmp)
        env = {
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.inner_workspace,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": f"{tmp}/.matplotlib",
            "XDG_CACHE_HOME": f"{tmp}/.cache",
            "XDG_CONFIG_HOME": f"{tmp}/.config",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": _RUNTIME_MOUNT if self.bwrap else str(RUNTIME_DIR),
            # One BLAS thread: threads count against the process limit, and sessions already run in parallel.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "DS_SYNTH_SANDBOX_TOKEN": self.token,
        }
        for key in _ENV_PASSTHROUGH:
            if key in os.environ and key != "LANG":
                env[key] = os.environ[key]
        env.update(extra or {})
        return env

    def argv(self, command: list[str], pass_fds: Sequence[int] = ()) -> list[str]:
        if not self.bwrap:
            return command
        args = [
            self.bwrap, "--die-with-parent", "--new-session",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        roots = _python_roots(self.python)
        # A Python under /tmp (a venv in a checkout there) is bound after the private /tmp, or /tmp would hide it.
        late = [r for r in roots if r == "/tmp" or r.startswith("/tmp/")]
        early = [r for r in roots if r not in late]
        made: set[str] = set()

        def parents(target: str) -> list[str]:
            # bwrap would create missing parents 0700, unreadable for the unprivileged uid; 0711 lets the uid pass
            # through (to reach the Python) without listing what else is there.
            out = []
            for parent in reversed(Path(target).parents if target != "/etc" else [Path("/etc"), Path("/")]):
                name = str(parent)
                if name not in ("/", "/tmp") and name not in made and not name.startswith("/usr"):
                    made.add(name)
                    out += ["--perms", "0755" if name in ("/etc", "/opt") else "0711", "--dir", name]
            return out

        for target in ["/etc", _RUNTIME_MOUNT, *early]:
            args += parents(target)
            if target == "/etc" and "/etc" not in made:
                made.add("/etc")
                args += ["--perms", "0755", "--dir", "/etc"]
        for etc in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
                    "alternatives", "mime.types", "fonts"):  # fmt: skip
            args += ["--ro-bind-try", f"/etc/{etc}", f"/etc/{etc}"]
        for root in early:
            args += ["--ro-bind", root, root]
        args += [
            "--ro-bind", str(RUNTIME_DIR), _RUNTIME_MOUNT,
            "--proc", "/proc", "--dev", "/dev",
            "--bind", str(self.private_tmp), "/tmp",
        ]  # fmt: skip
        for root in late:
            args += parents(root) + ["--ro-bind", root, root]
        args += ["--bind", str(self.workspace), self.inner_workspace, "--chdir", self.inner_workspace]
        if self.uid is not None:
            # bwrap as root drops all capabilities; keep just enough to switch to the session's uid, then setpriv
            # drops those too. RLIMIT_NPROC is enforced from then on.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", "setpriv",
                     f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all"]  # fmt: skip
        else:
            args.append("--")
        return args + command

    def preexec(self, cpu_hard: bool = True):
        limits = self.limits
        cgroup = self.cgroup
        switch_uid = self.uid if not self.bwrap else None  # under bwrap, setpriv switches inside the namespace

        def _limit_child() -> None:
            if cgroup is not None:
                with open(cgroup / "cgroup.procs", "w") as fh:
                    fh.write(str(os.getpid()))
            cpu = limits.cpu_seconds
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu if cpu_hard else resource.RLIM_INFINITY))
            memory = limits.memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            size = limits.file_size_mb << 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if switch_uid is not None:
                os.setgroups([])
                os.setgid(switch_uid)
                os.setuid(switch_uid)

        return _limit_child

    def spawn(self, command: list[str], *, env_extra=None, pass_fds=(), cpu_hard=True) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(command),
            cwd=self.workspace,
            env=self.environment(env_extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            preexec_fn=self.preexec(cpu_hard),
        )

    def kill_all(self, proc: subprocess.Popen | None, quick: bool = False) -> None:
        """SIGKILL every process of this session: the group, the pid namespace, the uid, the cgroup, the token.

        `quick`: `proc` exited by itself; under bubblewrap its pid namespace died with it, so skip the sweep.
        """
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if quick and self.bwrap and proc is not None and proc.poll() is not None:
            return
        for _ in range(50):
            pids = _pid_alive_matching(self.token, self.uid, self.cgroup)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("sandbox process %s did not die after SIGKILL", proc.pid)

    def close(self) -> None:
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        shutil.rmtree(self.private_tmp, ignore_errors=True)


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


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for `proc` to exit; False on timeout. A pidfd wakes us the instant it exits (Popen.wait polls)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], max(timeout, 0))
    finally:
        os.close(pidfd)
    if not ready:
        return proc.poll() is not None
    proc.wait()
    return True


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

    def __init__(self, workspace: Path, mode: ExecutionMode, limits: Limits, python: str, owns_workspace: bool):
        if mode not in ("script", "session"):
            raise ValueError(f"sandbox mode must be 'script' or 'session', got {mode!r}")
        super().__init__()
        self.workspace = workspace
        self.mode: ExecutionMode = mode
        self.limits = limits
        self._owns_workspace = owns_workspace
        self._owner = (workspace.stat().st_uid, workspace.stat().st_gid)
        self._jail = _Jail(workspace, limits, python)
        self._python = python
        self._worker: subprocess.Popen | None = None
        self._streams: tuple[CellStream, CellStream] | None = None
        self._ctl: tuple[int, int] | None = None  # (write to worker, read from worker)
        self._reply_buffer = b""
        self._overflowed = threading.Event()
        self._state_lost_note: str | None = None
        _open_sessions.add(self)

    # --- public API (run and snapshot come from CellSession) ------------------------------------------------
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
    def _attach_streams(self, proc: subprocess.Popen) -> tuple[CellStream, CellStream]:
        self._overflowed.clear()

        def _overflow() -> None:  # stop a runaway printer at once; the run loop reports it
            self._overflowed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

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
        timed_out = not _wait_exit(proc, timeout) and not self._overflowed.is_set()
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
        worker = f"{_RUNTIME_MOUNT if self._jail.bwrap else RUNTIME_DIR}/_worker.py"
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
            returncode = self._worker.poll()
            self._stop_worker()  # kills the group; the streams then reach EOF
            if timed_out:
                error = f"TimeoutError: cell exceeded {timeout:g} s wall clock and was killed"
            elif overflowed:
                error = f"OutputLimitError: cell wrote more than {OUTPUT_KILL_BYTES >> 20} MiB of output and was killed"
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
    """`Sandbox` on this machine. `python` is the interpreter that runs model code (default: the one running us)."""

    name = "local"

    def __init__(self, python: str | os.PathLike | None = None):
        self.python = str(python) if python is not None else sys.executable
        if not os.access(self.python, os.X_OK):
            raise FileNotFoundError(f"sandbox python is not an executable file: {self.python}")

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
            return LocalSession(root, mode, limits or Limits(), self.python, owns)
        except BaseException:
            if owns:
                shutil.rmtree(root, ignore_errors=True)
            raise
