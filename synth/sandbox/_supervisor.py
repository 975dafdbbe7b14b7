"""The supervisor: the one process between synth and a cell (local backend). Standard library only.

synth starts it as `python -I -S _supervisor.py CONFIG` (CONFIG: a dict, marshal-dumped and hex-encoded — json would
cost a cell ~25 ms of imports), in a session of its own, with:
- fd 0: the lifeline, a pipe whose only write end synth holds. EOF (synth closed it, or synth died) means: kill the
  cell and everything it started, then exit.
- fds 1 and 2: the cell's stdout/stderr pipes, handed to the cell; the supervisor itself then writes nothing there.
- `status_fd`: lines to synth: `pid N` once the cell runs (or `error MESSAGE` if it cannot start), then `exit CODE`
  (negative: killed by that signal) once the cell is gone and its process tree has been killed.

Why it exists: the cell's parent is this process, never synth. Model code that kills its parent, or its parent's
process group, kills the supervisor (synth sees the status pipe close and reports the cell as failed); synth itself is
in neither. The cell runs in a session of its own, dies with the supervisor (PR_SET_PDEATHSIG: set by `setpriv` or
bwrap in the cell's command line, or here when neither is there), and without a pid namespace the supervisor is a
child subreaper, so orphans of a double fork come back to it and are killed with the cell. What a process of the same uid can still do without namespaces (walk /proc to synth's pid and signal it)
is named by the backend's `protections`, not hidden.
"""

from __future__ import annotations

import marshal
import os
import resource
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36


_libc = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except Exception:  # not Linux, or no libc symbol: the other layers still apply
        return False


def _parent_map() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        try:
            fields = stat[stat.rfind(b")") + 2 :].split()
            if fields[0] in (b"Z", b"X"):  # already dead, only waiting to be reaped
                continue
            parents[int(name)] = int(fields[1])
        except (ValueError, IndexError):
            continue
    return parents


def descendants(root: int) -> list[int]:
    """Every live process whose chain of parents reaches `root`."""
    parents = _parent_map()
    found = []
    for pid in parents:
        seen = 0
        parent = parents.get(pid)
        while parent is not None and parent > 1 and seen < 4096:
            if parent == root:
                found.append(pid)
                break
            parent = parents.get(parent)
            seen += 1
    return found


def session_processes(token: str, uid: int | None, cgroup: str | None, skip: tuple[int, ...] = ()) -> list[int]:
    """Processes of one sandbox session: in its cgroup, owned by its dedicated uid, or carrying its env token."""
    pids: set[int] = set()
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as fh:
                pids.update(int(p) for p in fh.read().split())
        except OSError:
            pass
    needle = f"DS_SYNTH_SANDBOX_TOKEN={token}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in skip:
            continue
        try:
            if uid is not None and os.stat(f"/proc/{name}").st_uid == uid:
                pids.add(pid)
                continue
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read():
                    pids.add(pid)
        except OSError:
            continue
    return sorted(pids - set(skip))


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _exec_child(cfg: dict, err_w: int, supervisor: int) -> None:
    """In the forked child: become the cell (never returns)."""
    try:
        os.setsid()  # its own session and group: killpg(0) from the cell reaches neither us nor synth
        if cfg.get("pdeathsig"):  # else the command line sets it (setpriv --pdeathsig, bwrap --die-with-parent)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the supervisor (kept across exec)
        if os.getppid() != supervisor:  # the supervisor died already
            os._exit(125)
        os.chdir(cfg["cwd"])  # before any uid switch: the workspace may sit below folders only we can pass
        if cfg.get("cgroup"):
            with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        for name, (soft, hard) in cfg["rlimits"].items():
            soft = resource.RLIM_INFINITY if soft is None else soft
            hard = resource.RLIM_INFINITY if hard is None else hard
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg.get("drop_caps"):
            # Root without namespaces: the cell keeps uid 0 (or gets its own below) but no capability survives exec.
            for cap in range(64):
                _prctl(PR_CAPBSET_DROP, cap)
        uid = cfg.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.close(cfg["status_fd"])
        for fd in cfg["pass_fds"]:
            os.set_inheritable(fd, True)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - reported to synth through the error pipe
        try:
            os.write(err_w, f"{type(exc).__name__}: {exc}".encode())
        except OSError:
            pass
    os._exit(127)


def _kill_tree(main: int, cfg: dict) -> None:
    """SIGKILL the cell's group, every descendant of ours, and (on a kill request) the session's processes."""
    me = os.getpid()
    try:
        os.killpg(main, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(200):
        pids = descendants(me)
        if not pids:
            break
        _kill(pids)
        time.sleep(0.005)


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status = cfg["status_fd"]

    def report(kind: str, value) -> None:
        line = f"{kind} {value}".replace("\n", " ") + "\n"
        try:
            os.write(status, line.encode("utf-8", "replace"))
        except OSError:  # synth is gone: nobody to tell
            pass

    if cfg.get("subreaper"):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    supervisor = os.getpid()
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means the exec succeeded
    child = os.fork()
    if child == 0:
        os.close(err_r)
        _exec_child(cfg, err_w, supervisor)
    os.close(err_w)
    # Our copies of the cell's pipes and control fds would keep them open after the cell died.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):
        os.dup2(null, fd)
    os.close(null)
    for fd in cfg["pass_fds"]:
        try:
            os.close(fd)
        except OSError:
            pass
    failure = b""
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        failure += chunk
    os.close(err_r)
    if failure:
        os.waitpid(child, 0)
        report("error", failure.decode("utf-8", "replace"))
        return 0
    report("pid", child)

    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = None
    killed = False
    code = None
    while code is None:
        ready, _, _ = select.select([0] + ([pidfd] if pidfd is not None else []), [], [], None if pidfd else 0.05)
        if 0 in ready:
            try:
                os.read(0, 64)
            except OSError:
                pass
            killed = True  # synth asked (or died): nothing of the cell may survive
            _kill_tree(child, cfg)
        got, wait_status = os.waitpid(child, 0 if (killed or (pidfd is not None and pidfd in ready)) else os.WNOHANG)
        if got == child:
            code = os.waitstatus_to_exitcode(wait_status)
    if pidfd is not None:
        os.close(pidfd)
    # The cell is over; whatever it started goes with it (orphans were re-parented to us: we are a subreaper).
    _kill_tree(child, cfg)
    if killed and cfg.get("token"):
        _kill(session_processes(cfg["token"], cfg.get("sweep_uid"), cfg.get("cgroup"),
                                skip=(os.getpid(), os.getppid())))
    _reap_all()
    report("exit", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
