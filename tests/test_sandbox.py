"""The local backend beyond the shared contract (tests/test_sandbox_contract.py): its options, the no-bubblewrap
warning, the supervisor between synth and the cells, bad input, and the `synth sandbox exec` CLI."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import host_processes_with, make_sources

from synth.errors import SynthError
from synth.sandbox import PROTECTIONS, Limits, SandboxError, get_sandbox, isolation
from synth.sandbox.local import LocalSandbox


def test_bad_input_gets_clear_errors(tmp_path):
    sandbox = get_sandbox()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sandbox.open([tmp_path / "nope.csv"])
    with pytest.raises(ValueError, match="mode must be"):
        sandbox.open(mode="notebook")
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        get_sandbox("cloud")
    with pytest.raises(FileNotFoundError, match="not an executable"):
        get_sandbox(python=tmp_path / "python")
    with sandbox.open() as session:
        with pytest.raises(TypeError, match="must be a str"):
            session.run(b"print(1)")
    with pytest.raises(SandboxError, match="closed"):
        session.run("print(1)")
    assert issubclass(SandboxError, SynthError) and issubclass(SandboxError, RuntimeError)


def test_cli_exec_prints_one_json_line_per_cell(tmp_path, capsys):
    from synth.commands.sandbox import exec_cells as exec_command

    ws = make_sources(tmp_path)
    cell1, cell2 = tmp_path / "a.py", tmp_path / "b.py"
    cell1.write_text("import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.amount.sum())")
    cell2.write_text("print(df.shape)\n1/0")
    assert exec_command([cell1, cell2], workspace=ws, mode="session", timeout=30) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["stdout"] for line in lines] == ["42\n", "(2, 2)\n"]
    assert lines[0]["error"] is None and "ZeroDivisionError" in lines[1]["error"]
    assert set(lines[0]) == {"stdout", "stderr", "error", "duration_s", "timed_out", "files_changed"}
    assert exec_command([cell1], workspace=ws / "missing", mode="script") == 2
    assert exec_command([cell1], workspace=ws, mode="repl") == 2
    assert exec_command([tmp_path / "none.py"], workspace=ws) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_via_typer(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    ws = tmp_path / "ws"
    ws.mkdir()
    cell = tmp_path / "c.py"
    cell.write_text("open('made.txt', 'w').write('x')")
    result = CliRunner().invoke(app, ["sandbox", "exec", "--workspace", str(ws), str(cell)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["files_changed"] == ["made.txt"]
    assert not (ws / "made.txt").exists()
    bad = CliRunner().invoke(app, ["sandbox", "exec", "--workspace", str(ws), "--backend", "moon", str(cell)])
    assert bad.exit_code == 2


def test_a_python_installed_under_tmp_is_visible_inside_the_sandbox(tmp_path_factory):
    # CI may clone the project (and its venv) under /tmp, which the sandbox replaces with a private /tmp.
    import subprocess
    import sys as _sys
    import tempfile

    try:
        LocalSandbox(bwrap=True)
    except SandboxError as exc:
        pytest.skip(f"needs bubblewrap: {exc}")
    venv = Path(tempfile.mkdtemp(prefix="ds-synth-venv-", dir="/tmp"))
    venv.chmod(0o755)  # like a checkout's folder; mkdtemp's 0700 would hide it from the sandbox's own uid
    try:
        subprocess.run([_sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        with LocalSandbox(python=str(venv / "bin" / "python"), bwrap=True).open([]) as session:
            result = session.run("import sys; print(sys.prefix)")
        assert result.ok and result.stdout.strip() == str(venv), result
    finally:
        shutil.rmtree(venv, ignore_errors=True)


# --- options and the warning ------------------------------------------------------------------------------------


def _bwrap_usable() -> bool:
    try:
        LocalSandbox(bwrap=True)
        return True
    except SandboxError:
        return False


def test_bwrap_option_and_the_env_override(monkeypatch):
    assert LocalSandbox(bwrap=False).isolation != "bwrap"
    assert "disabled with bwrap=False" in LocalSandbox(bwrap=False).warning
    monkeypatch.setenv("DS_SYNTH_SANDBOX_NO_BWRAP", "1")
    overridden = LocalSandbox()
    assert overridden.isolation != "bwrap" and "disabled by DS_SYNTH_SANDBOX_NO_BWRAP=1" in overridden.warning
    assert "private_filesystem" not in overridden.protections
    if _bwrap_usable():  # an explicit bwrap=True beats the environment
        assert LocalSandbox(bwrap=True).isolation == "bwrap"
        monkeypatch.delenv("DS_SYNTH_SANDBOX_NO_BWRAP")
        default = LocalSandbox()
        assert default.isolation == "bwrap" and default.warning is None
        assert "private_filesystem" in default.protections


def test_required_isolation_that_is_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(isolation.shutil, "which", lambda name, *a, **k: None)  # no bwrap, no unshare on PATH
    with pytest.raises(SandboxError, match=r"bubblewrap was required \(bwrap=True\) but is not installed"):
        LocalSandbox(bwrap=True)
    with pytest.raises(SandboxError, match="namespaces=True but `unshare` cannot"):
        LocalSandbox(bwrap=False, namespaces=True)
    fallback = LocalSandbox()  # what a machine without either gets: said, not hidden
    assert fallback.isolation == "rlimits" and "(not installed)" in fallback.warning
    assert not {"private_filesystem", "no_network", "pid_namespace"} & fallback.protections
    with fallback.open(mode="script") as session:  # and it still runs cells (setpriv missing too: ctypes path)
        result = session.run("import os\nprint(os.getppid() != 0)")
    assert result.ok and result.stdout == "True\n", result


def test_the_warning_lists_exactly_the_missing_protections():
    held = frozenset({"rlimits", "wall_timeout", "scrubbed_env", "supervisor", "no_network"})
    text = isolation.gap_warning("not installed", held)
    missing = [name for name in PROTECTIONS if name not in held]
    assert f"Missing on this machine: {', '.join(missing)} —" in text
    for name in PROTECTIONS:
        assert (f"{name}: {PROTECTIONS[name]}" in text) == (name in missing)
    assert "Applied: no_network, rlimits, scrubbed_env, supervisor, wall_timeout." in text


def test_each_warning_is_logged_once(caplog):
    message = f"!!! test warning {secrets.token_hex(4)} !!!"
    with caplog.at_level(logging.WARNING, logger="synth.sandbox.isolation"):
        isolation.warn_once(message)
        isolation.warn_once(message)
    assert [r.getMessage() for r in caplog.records].count(message) == 1


def test_get_sandbox_passes_the_options():
    sandbox = get_sandbox("local", bwrap=False, namespaces=False)
    assert isinstance(sandbox, LocalSandbox) and sandbox.isolation == "rlimits"


# --- the supervisor -------------------------------------------------------------------------------------------

PATHS = [{"bwrap": True}, {"bwrap": False}, {"bwrap": False, "namespaces": False}]
PATH_IDS = ["bwrap", "unshare", "rlimits"]


def _sandbox(options: dict) -> LocalSandbox:
    sandbox = None
    try:
        sandbox = LocalSandbox(**options)
    except SandboxError as exc:
        pytest.skip(f"not available here: {exc}")
    if options == {"bwrap": False} and sandbox.isolation != "unshare":
        pytest.skip("`unshare` cannot create namespaces on this machine")
    return sandbox


def test_the_cells_parent_is_the_supervisor_not_synth():
    sandbox = _sandbox({"bwrap": False, "namespaces": False})  # the one path where the cell sees its real parent
    with sandbox.open(mode="session") as session:
        result = session.run("import os\nprint(os.getppid(), os.getsid(0))")
        supervisor = session._worker.supervisor.pid
        ppid, sid = (int(v) for v in result.stdout.split())
        assert ppid == supervisor and ppid != os.getpid()
        assert sid not in (os.getsid(0), os.getsid(supervisor))  # a session of its own, not the supervisor's
        assert os.getsid(supervisor) != os.getsid(0)


@pytest.mark.parametrize("options", PATHS, ids=PATH_IDS)
def test_a_dead_supervisor_is_a_failed_cell_and_the_session_goes_on(options):
    sandbox = _sandbox(options)
    with sandbox.open(mode="session", limits=Limits(timeout_s=30)) as session:
        assert session.run("x = 1").ok
        supervisor = session._worker.supervisor.pid
        threading.Timer(0.5, os.kill, (supervisor, signal.SIGKILL)).start()
        result = session.run("import time\nprint('waiting', flush=True)\ntime.sleep(20)")
        assert not result.ok and not result.timed_out
        assert result.error.startswith("SupervisorKilled: the sandbox supervisor was killed by SIGKILL"), result
        assert "state was lost" in result.error
        assert session.run("print('again')").stdout.endswith("again\n")


_ORPHAN_DRIVER = textwrap.dedent(
    """
    import json, sys
    from synth.sandbox import get_sandbox
    session = get_sandbox("local", **json.loads(sys.argv[1])).open(mode=sys.argv[2])
    code = (
        "import os, subprocess\\n"
        f"subprocess.Popen(['sleep', '{sys.argv[3]}'], start_new_session=True)\\n"
        "while True:\\n    pass"
    )
    session.run(code, timeout=120)
    """
)


@pytest.mark.parametrize("mode", ["script", "session"])
@pytest.mark.parametrize("options", PATHS, ids=PATH_IDS)
def test_when_synth_dies_its_cells_die_too(options, mode):
    _sandbox(options)
    marker = f"{2000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    driver = subprocess.Popen([sys.executable, "-c", _ORPHAN_DRIVER, json.dumps(options), mode, marker],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(600):  # until the cell's child runs
            if host_processes_with(marker) or driver.poll() is not None:
                break
            time.sleep(0.05)
        assert host_processes_with(marker), driver.stderr.read().decode() if driver.poll() is not None else "no child"
    finally:
        driver.kill()  # synth dies without closing anything
        driver.wait()
    for _ in range(200):  # the supervisor sees its lifeline close and kills the cell's whole tree
        if not host_processes_with(marker):
            break
        time.sleep(0.05)
    assert host_processes_with(marker) == []


