"""What this machine lets the local backend do to contain model code, decided once per LocalSandbox.

Layers, each used where the machine allows it (`IsolationPlan.protections` says which hold):
- bubblewrap: private mount/pid/net/ipc/uts namespaces; only the Python installation, system libraries, the
  workspace (read-write) and a private /tmp are visible.
- without bubblewrap, util-linux `unshare`: pid/net/ipc/uts/mount namespaces (an unprivileged user namespace when
  not root), so host processes are invisible and unsignalable and there is no network — the host filesystem stays
  visible.
- a dedicated unprivileged uid per session when we run as root: RLIMIT_NPROC is not enforced for root, so a
  fork bomb is only bounded once the code runs as a uid of its own (which also makes "kill every process of this
  uid" a complete cleanup). Root without one drops every capability before the cell starts.
- a pids cgroup per session where the cgroup tree is writable (root without bubblewrap).
- always: rlimits, a wall-clock timeout, a scrubbed environment, and the supervisor (see supervised.py).
Without bubblewrap the backend logs once, loudly, exactly which protections are missing on this machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from synth.sandbox.base import PROTECTIONS, SandboxError, missing_protections

log = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_MOUNT = "/opt/ds-synth-runtime"
SANDBOX_UID_RANGE = (1_500_000_000, 1_900_000_000)  # far above any real account; one uid per session
_warned: set[str] = set()
_warn_lock = threading.Lock()


def setpriv_pdeathsig() -> str | None:
    """`setpriv` when it can set the parent-death signal (util-linux >= 2.33): saves the supervisor importing ctypes."""
    exe = shutil.which("setpriv")
    if exe is None:
        return None

    def works() -> bool:
        try:
            return subprocess.run([exe, "--pdeathsig=KILL", "--", "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    return exe if _probe(("setpriv", exe), works) else None


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


_probed: dict[tuple, bool] = {}
_probe_lock = threading.Lock()


def _probe(key: tuple, check) -> bool:
    with _probe_lock:
        if key not in _probed:
            _probed[key] = check()
        return _probed[key]


def _bwrap_choice(wanted: bool | None) -> tuple[str | None, str]:
    """(bwrap path or None, why not): `wanted` None = use it where it works unless DS_SYNTH_SANDBOX_NO_BWRAP=1."""
    if wanted is False:
        return None, "disabled with bwrap=False"
    if wanted is None and os.environ.get("DS_SYNTH_SANDBOX_NO_BWRAP") == "1":
        return None, "disabled by DS_SYNTH_SANDBOX_NO_BWRAP=1"
    path = shutil.which("bwrap")
    if path is None:
        reason = "not installed"
    elif _probe(("bwrap", path), lambda: _bwrap_works(path)):
        return path, ""
    else:
        reason = "installed but cannot create namespaces here"
    if wanted:
        raise SandboxError(f"bubblewrap was required (bwrap=True) but is {reason}")
    return None, reason


def _unshare_prefix(root: bool) -> list[str] | None:
    """The `unshare` command line that puts a cell in fresh pid/net/ipc/uts/mount namespaces, if that works here."""
    exe = shutil.which("unshare")
    if exe is None or (root and shutil.which("setpriv") is None):
        return None
    prefix = [exe, *([] if root else ["--user", "--map-current-user"]),
              "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts", "--"]  # fmt: skip

    def works() -> bool:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    return prefix if _probe(("unshare", tuple(prefix)), works) else None


def warn_once(message: str) -> None:
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def gap_warning(reason: str, protections: frozenset[str]) -> str:
    missing = missing_protections(protections)
    lines = "; ".join(f"{name}: {PROTECTIONS[name]}" for name in missing) or "none"
    return (
        f"!!! SANDBOX WITHOUT BUBBLEWRAP ({reason}). Missing on this machine: {', '.join(missing) or 'nothing'} — "
        f"{lines}. Applied: {', '.join(sorted(protections))}. Install `bwrap` or use the docker backend for real "
        "isolation. !!!"
    )


def world_traversable(path: Path) -> bool:
    """Whether a uid with no rights can reach `path` (execute bit for others on every ancestor)."""
    path = path.resolve()
    for parent in [path, *path.parents]:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def pids_cgroup_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name == "cgroup" and "pids" not in (root / "cgroup.controllers").read_text(errors="ignore"):
                continue
            return root
    return None


def python_roots(python: str) -> list[str]:
    """Directories that hold an interpreter and its libraries (a venv, its base installation)."""
    roots = set()
    exe = Path(python)
    for candidate in (exe, exe.resolve()):
        prefix = candidate.parent.parent
        roots.add(prefix)
        try:
            lines = (prefix / "pyvenv.cfg").read_text(errors="ignore").splitlines()
        except OSError:  # not a venv, or a folder this uid may not read
            lines = []
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                roots.add(Path(value.strip()).resolve().parent)
    if Path(python) == Path(sys.executable):
        roots.update(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix))
    system = {Path("/"), Path("/usr"), Path("/usr/local")}

    def is_dir(path: Path) -> bool:
        try:
            return path.is_dir()
        except OSError:
            return False

    return sorted(str(r) for r in roots if r not in system and is_dir(r))


@dataclass(frozen=True)
class IsolationPlan:
    """How this machine lets a LocalSandbox contain code: decided once per sandbox, followed by every session."""

    bwrap: str | None
    unshare: tuple[str, ...] | None  # the `unshare ... --` prefix, when namespaces come from unshare instead
    root: bool
    dedicated_uid: bool
    cgroup_root: Path | None
    no_bwrap_reason: str

    @property
    def protections(self) -> frozenset[str]:
        held = {"rlimits", "wall_timeout", "scrubbed_env", "supervisor"}
        if self.bwrap:
            held |= {"private_filesystem", "no_network", "pid_namespace"}
        elif self.unshare:
            held |= {"no_network", "pid_namespace"}
        if self.dedicated_uid:
            held.add("separate_uid")
        # RLIMIT_NPROC binds any uid but root; root is bounded by its dedicated uid or a pids cgroup.
        if not self.root or self.dedicated_uid or self.cgroup_root is not None:
            held.add("process_limit")
        return frozenset(held)


def plan_isolation(python: str, bwrap: bool | None, namespaces: bool | None) -> IsolationPlan:
    root = os.geteuid() == 0
    bwrap_path, reason = _bwrap_choice(bwrap)
    unshare = None
    if bwrap_path is None and namespaces is not False:
        unshare = _unshare_prefix(root)
        if unshare is None and namespaces:
            raise SandboxError("namespaces=True but `unshare` cannot create pid/net namespaces on this machine")
    reachable = all(world_traversable(Path(p)) for p in [python, RUNTIME_DIR, *python_roots(python)])
    dedicated = root and (bwrap_path is not None or reachable)
    cgroup_root = pids_cgroup_root() if root and bwrap_path is None else None
    return IsolationPlan(bwrap_path, tuple(unshare) if unshare else None, root, dedicated, cgroup_root, reason)


def no_caps() -> list[str]:
    return ["--inh-caps=-all", "--bounding-set=-all"]
