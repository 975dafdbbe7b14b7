"""Containment details of particular local paths, beyond the shared battery in tests/test_sandbox_contract.py:
what bubblewrap mounts, and what running as root adds (a dedicated uid, a pids cgroup, no capabilities)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from synth.sandbox import Limits, SandboxError
from synth.sandbox.isolation import SANDBOX_UID_RANGE, world_traversable
from synth.sandbox.local import LocalSandbox

SMALL = Limits(timeout_s=20, memory_mb=512, max_processes=16, output_limit_chars=4000)
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the dedicated-uid and cgroup paths exist only as root")
CAPS = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))])"


def _sandbox(**options) -> LocalSandbox:
    try:
        return LocalSandbox(**options)
    except SandboxError as exc:
        pytest.skip(f"not available here: {exc}")


def _reachable_python() -> str:
    """A Python an unprivileged uid can run (what the dedicated-uid path needs without bubblewrap)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists() and world_traversable(Path(candidate)):
            return candidate
    pytest.skip("no Python here is reachable by an unprivileged uid")


def test_bwrap_shows_only_the_workspace_python_and_system_libraries():
    sandbox = _sandbox(bwrap=True)
    code = (
        "import os, socket\n"
        "print(os.getcwd())\n"
        "print(sorted(os.listdir('/')))\n"
        "print(sorted(os.listdir('/etc')))\n"
        "print(socket.gethostname())\n" + CAPS + "\n"
        f"print(os.path.exists({str(Path(__file__))!r}), os.path.isdir({sys.prefix!r}), os.path.exists('/home'))"
    )
    with sandbox.open(mode="script", limits=SMALL) as session:
        result = session.run(code)
    assert result.ok, result
    cwd, top, etc, host, caps, seen = result.stdout.splitlines()
    assert cwd == "/workspace"  # one fixed path: replays in another workspace print the same paths
    assert "home" not in eval(top) and seen == "False True False"  # the Python's folders, not the checkout
    assert "shadow" not in etc and "passwd" in etc
    assert host == "sandbox"
    assert eval(caps) == ["0000000000000000"] * 3


@root_only
def test_root_with_bwrap_runs_cells_as_a_dedicated_uid():
    sandbox = _sandbox(bwrap=True)
    assert "separate_uid" in sandbox.protections
    with sandbox.open(mode="session", limits=SMALL) as session:
        first = session.run("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
        uid = int(first.stdout.split()[0])
        assert SANDBOX_UID_RANGE[0] <= uid < SANDBOX_UID_RANGE[1]
        assert first.stdout.split()[1] == str(uid) and first.stdout.split()[2] == "[]"
        assert session.workspace.stat().st_uid == uid
    with sandbox.open(mode="script", limits=SMALL) as other:
        assert int(other.run("import os\nprint(os.getuid())").stdout) != uid  # one uid per session


@root_only
@pytest.mark.parametrize("namespaces", [False, None], ids=["rlimits", "unshare"])
def test_root_without_bwrap_uses_a_dedicated_uid_when_the_python_is_reachable(namespaces, tmp_path):
    python = _reachable_python()
    sandbox = _sandbox(python=python, bwrap=False, namespaces=namespaces)
    assert "separate_uid" in sandbox.protections and "process_limit" in sandbox.protections
    given = tmp_path / "ws"
    with sandbox.open(mode="script", limits=SMALL, workspace=given) as session:
        result = session.run("import os\nopen('made.txt', 'w').write('x')\nprint(os.getuid())\n" + CAPS)
        assert result.ok, result
        uid = int(result.stdout.splitlines()[0])
        assert SANDBOX_UID_RANGE[0] <= uid < SANDBOX_UID_RANGE[1]
        assert eval(result.stdout.splitlines()[1])[:2] == ["0000000000000000"] * 2
        forks = session.run(
            "import os, time\nn = 0\n"
            "for _ in range(100):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(20); os._exit(0)\n"
            "    n += 1\n"
            "print(n)"
        )
        assert int(forks.stdout) < SMALL.max_processes  # RLIMIT_NPROC binds the dedicated uid
    assert (given / "made.txt").stat().st_uid == os.getuid()  # handed back


@root_only
@pytest.mark.parametrize("namespaces", [False, None], ids=["rlimits", "unshare"])
def test_root_without_a_uid_of_its_own_gets_a_pids_cgroup_and_no_capabilities(namespaces):
    sandbox = _sandbox(bwrap=False, namespaces=namespaces)
    if "separate_uid" in sandbox.protections:
        pytest.skip("this machine's Python is reachable by an unprivileged uid, so cells get one")
    if sandbox._plan.cgroup_root is None:
        assert "process_limit" not in sandbox.protections
        assert "process_limit" in sandbox.warning
        return
    assert "process_limit" in sandbox.protections
    with sandbox.open(mode="session", limits=SMALL) as session:
        group = session._jail.cgroup
        assert group is not None and (group / "pids.max").read_text().strip() == str(SMALL.max_processes)
        result = session.run("import os\nprint(os.getuid(), open('/proc/self/cgroup').read().count('ds-synth-'))\n" + CAPS)
        assert result.ok, result
        uid, in_group = result.stdout.splitlines()[0].split()
        assert uid == "0" and int(in_group) >= 1
        assert eval(result.stdout.splitlines()[1]) == ["0000000000000000"] * 3  # uid 0, but no capability
        denied = session.run("import os\nos.setuid(12345)")
        assert "PermissionError" in denied.error
    assert not group.exists()
