"""How one session's processes are started, limited, and killed: its environment, its command line (bubblewrap,
unshare, setpriv), its uid and cgroup, and the sweep that leaves nothing of it running."""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from synth.sandbox import _supervisor
from synth.sandbox.base import Limits
from synth.sandbox.isolation import (
    RUNTIME_DIR,
    RUNTIME_MOUNT,
    SANDBOX_UID_RANGE,
    IsolationPlan,
    no_caps,
    python_roots,
    setpriv_pdeathsig,
    warn_once,
)
from synth.sandbox.supervised import Supervised

_ENV_PASSTHROUGH = ("LANG", "LC_ALL", "TZ")


def _pid_alive_matching(token: str, uid: int | None, cgroup: Path | None) -> list[int]:
    """Processes that belong to a session: its cgroup, its dedicated uid, or carrying its env token."""
    return _supervisor.session_processes(token, uid, str(cgroup) if cgroup else None, skip=(os.getpid(),))


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


class Jail:
    """How a session's processes are started, limited, and killed."""

    def __init__(self, workspace: Path, limits: Limits, python: str, plan: IsolationPlan):
        self.workspace = workspace
        self.limits = limits
        self.python = python
        self.plan = plan
        self.token = secrets.token_hex(8)
        self.bwrap = plan.bwrap
        self.unshare = plan.unshare
        # Under bwrap the workspace appears at one fixed path: code that resolves absolute paths (SQLite does) never
        # meets the host's parent folders, and a replay in another workspace prints the same paths.
        self.inner_workspace = INNER_WORKSPACE if self.bwrap else str(workspace)
        self.private_tmp = Path(tempfile.mkdtemp(prefix="ds-synth-tmp-"))
        self.uid: int | None = None
        self.cgroup: Path | None = None
        self.protections = plan.protections
        cache = _matplotlib_cache(python)
        if cache is not None:
            shutil.copytree(cache, self.private_tmp / ".matplotlib")
        if plan.dedicated_uid:
            self.uid = self._free_uid()
            self._hand_over(self.uid)
        if plan.cgroup_root is not None:
            self.cgroup = self._make_cgroup(plan.cgroup_root)
            if self.cgroup is None and self.uid is None:
                self.protections = self.protections - {"process_limit"}
                warn_once("!!! SANDBOX HAS NO FORK-BOMB GUARD for this session: running as root (RLIMIT_NPROC is "
                           f"not enforced) and no pids cgroup could be made under {plan.cgroup_root}. !!!")

    @staticmethod
    def _free_uid() -> int:
        rng = random.SystemRandom()
        while True:
            uid = rng.randrange(*SANDBOX_UID_RANGE)
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

    def _make_cgroup(self, root: Path) -> Path | None:
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
            "PYTHONPATH": RUNTIME_MOUNT if self.bwrap else str(RUNTIME_DIR),
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

    def argv(self, command: list[str]) -> list[str]:
        if self.bwrap:
            return self._bwrap_argv(command)  # --die-with-parent: bwrap dies with the supervisor
        setpriv = setpriv_pdeathsig()
        outer = [setpriv, "--pdeathsig=KILL"] if setpriv else []  # (else the supervisor sets it)
        if self.unshare:
            inside: list[str] = []
            if self.plan.root:
                # Root created the namespaces; the cell gets no capability (no setns back out, no umount of the
                # private /proc) and, where it can reach the Python, a uid of its own.
                inside = ["setpriv", *(self._switch_uid() if self.uid is not None else []), *no_caps(), "--"]
            else:
                prlimit = shutil.which("prlimit")
                if prlimit:  # set inside the user namespace, RLIMIT_NPROC counts only this session's processes
                    n = self.limits.max_processes
                    inside = [prlimit, f"--nproc={n}:{n}", "--"]
            # A shell as the namespace's pid 1: the cell must not be init, which ignores the signals of its own
            # rlimits (SIGXCPU, SIGXFSZ) and every signal it sends itself.
            inner = [*self.unshare, *inside, "/bin/sh", "-c", '"$@"; exit $?', "sh", *command]
            return [*outer, "--", *inner] if outer else inner
        if outer and self.plan.root and self.uid is None:
            outer += no_caps()  # root without a uid of its own: no capability survives exec
        return [*outer, "--", *command] if outer else command

    def _switch_uid(self) -> list[str]:
        return [f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]

    def _bwrap_argv(self, command: list[str]) -> list[str]:
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
        roots = python_roots(self.python)
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

        for target in ["/etc", RUNTIME_MOUNT, *early]:
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
            "--ro-bind", str(RUNTIME_DIR), RUNTIME_MOUNT,
            "--proc", "/proc", "--dev", "/dev",
            "--bind", str(self.private_tmp), "/tmp",
        ]  # fmt: skip
        for root in late:
            args += parents(root) + ["--ro-bind", root, root]
        args += ["--bind", str(self.workspace), self.inner_workspace, "--chdir", self.inner_workspace]
        if self.uid is not None:
            # bwrap as root drops all capabilities; keep just enough to switch to the session's uid, then setpriv
            # drops those too. RLIMIT_NPROC is enforced from then on.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", "setpriv", *self._switch_uid(),
                     *no_caps()]  # fmt: skip
        else:
            args.append("--")
        return args + command

    def _rlimits(self, cpu_hard: bool) -> dict[str, list[int | None]]:
        limits = self.limits
        cpu = limits.cpu_seconds
        memory = limits.memory_mb << 20
        size = limits.file_size_mb << 20
        rlimits: dict[str, list[int | None]] = {
            "RLIMIT_CPU": [cpu, cpu if cpu_hard else None],
            "RLIMIT_AS": [memory, memory],
            "RLIMIT_FSIZE": [size, size],
            "RLIMIT_CORE": [0, 0],
        }
        in_userns = self.unshare is not None and not self.plan.root and shutil.which("prlimit")
        if not in_userns:
            rlimits["RLIMIT_NPROC"] = [limits.max_processes, limits.max_processes]
        return rlimits

    def spawn(self, command: list[str], *, env_extra=None, pass_fds=(), cpu_hard=True) -> "Supervised":
        bare_root = self.plan.root and not self.bwrap and not self.unshare
        config = {
            "pdeathsig": not self.bwrap and not setpriv_pdeathsig(),
            "subreaper": not self.bwrap and not self.unshare,  # without a pid namespace, orphans come back to it
            "argv": self.argv(command),
            "env": self.environment(env_extra),
            "cwd": str(self.workspace),
            "pass_fds": list(pass_fds),
            "rlimits": self._rlimits(cpu_hard),
            "cgroup": str(self.cgroup) if self.cgroup else None,
            # Without bwrap/unshare the supervisor's child switches uid itself (or, as root without one, drops
            # every capability); with them, setpriv does it inside the namespaces.
            "uid": self.uid if bare_root else None,
            "drop_caps": bare_root and self.uid is None and not setpriv_pdeathsig(),
            "token": self.token,
            "sweep_uid": self.uid,
        }
        return Supervised(config, self.workspace, self.limits.timeout_s)

    def kill_all(self, proc: "Supervised | None", quick: bool = False) -> None:
        """SIGKILL every process of this session: the supervisor's tree, the pid namespace, the uid, the cgroup, the
        token.

        `quick`: `proc` exited by itself and its supervisor already killed what it left; inside a pid namespace
        nothing else can remain, so skip the sweep.
        """
        clean_exit = proc is not None and proc.stop()
        if quick and clean_exit and (self.bwrap or self.unshare):
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

    def close(self) -> None:
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        shutil.rmtree(self.private_tmp, ignore_errors=True)
