"""The local sandbox: cells, modes, errors, figures, truncation, snapshots, workspace copies, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from synth.sandbox import Limits, get_sandbox
from synth.sandbox.local import LocalSandbox, _usable_bwrap


@pytest.fixture(params=["bwrap", "no-bwrap"])
def isolation(request, monkeypatch):
    """Run the test on the bubblewrap path and on the rlimits-only fallback."""
    if request.param == "bwrap":
        monkeypatch.delenv("DS_SYNTH_SANDBOX_NO_BWRAP", raising=False)
        if _usable_bwrap() is None:
            pytest.skip("bubblewrap is not usable on this machine")
    else:
        monkeypatch.setenv("DS_SYNTH_SANDBOX_NO_BWRAP", "1")
    return request.param


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make_sources(root: Path) -> Path:
    src = root / "sources"
    src.mkdir()
    (src / "sales.csv").write_text("region,amount\nnorth,10\nsouth,32\n")
    con = sqlite3.connect(src / "shop.sqlite")
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    con.executemany("INSERT INTO orders (total) VALUES (?)", [(1.5,), (2.5,), (4.0,)])
    con.commit()
    con.close()
    return src


def test_script_mode_is_stateless_and_session_mode_keeps_state(isolation, tmp_path):
    sandbox = get_sandbox()
    with sandbox.open(mode="script") as script:
        assert script.run("x = 41\nprint(x + 1)").stdout == "42\n"
        again = script.run("print(x)")
        assert not again.ok and "NameError" in again.error
    with sandbox.open(mode="session") as session:
        assert session.run("x = 41\nimport math").ok
        assert session.run("print(x + 1, math.pi > 3)").stdout == "42 True\n"


@pytest.mark.parametrize("mode", ["script", "session"])
def test_error_is_reported_as_traceback(isolation, mode):
    with get_sandbox().open(mode=mode) as session:
        result = session.run("print('before')\n{}['missing']")
    assert result.stdout == "before\n"
    assert result.error.startswith("Traceback (most recent call last):")
    assert result.error.rstrip().endswith("KeyError: 'missing'")
    assert "_worker.py" not in result.error  # the worker's own frames are hidden
    assert result.output() == "before\n[Error]:\n" + result.error
    assert not result.ok


@pytest.mark.parametrize("mode", ["script", "session"])
def test_figures_are_saved_as_numbered_files(isolation, mode):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nprint('drawn')"
    with get_sandbox().open(mode=mode) as session:
        first = session.run(code)
        second = session.run(code)
        assert first.ok and second.ok, (first, second)
        assert "[figure saved: figure_1.png]" in first.stdout
        assert "[figure saved: figure_2.png]" in second.stdout
        assert "figure_1.png" in first.files_changed
        png = (session.workspace / "figure_2.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        assert "cannot be shown" not in first.stderr


@pytest.mark.parametrize("mode", ["script", "session"])
def test_long_output_is_truncated_with_marker_keeping_head_and_tail(isolation, mode):
    limits = Limits(output_limit_chars=1000)
    code = "print('HEAD')\nfor i in range(20000):\n    print(i)\nprint('TAIL')"
    with get_sandbox().open(mode=mode, limits=limits) as session:
        result = session.run(code)
    assert result.ok
    assert result.stdout.startswith("HEAD\n")
    assert result.stdout.rstrip().endswith("TAIL")
    assert "... [truncated " in result.stdout and " chars] ..." in result.stdout
    assert len(result.stdout) < 1100


def test_snapshot_diff_and_files_changed(isolation, tmp_path):
    src = _make_sources(tmp_path)
    with get_sandbox().open([src / "sales.csv", src / "shop.sqlite"], mode="session") as session:
        before = session.snapshot()
        assert set(before.files) == {"sales.csv", "shop.sqlite"}
        assert before.db_rows == {"shop.sqlite": {"orders": 3}}
        result = session.run(
            "import sqlite3, os\n"
            "con = sqlite3.connect('shop.sqlite'); con.execute('INSERT INTO orders (total) VALUES (9)');"
            " con.execute('CREATE TABLE notes (t TEXT)'); con.commit(); con.close()\n"
            "os.makedirs('out', exist_ok=True)\nopen('out/report.txt', 'w').write('done')\n"
            "os.remove('sales.csv')"
        )
        assert result.ok, result
        assert result.files_changed == ["out/report.txt", "shop.sqlite"]
        after = session.snapshot()
        assert after.db_rows["shop.sqlite"] == {"notes": 0, "orders": 4}
        diff = after.diff(before)
        assert diff.added == ["out/report.txt"]
        assert diff.removed == ["sales.csv"]
        assert diff.modified == ["shop.sqlite"]
        assert after.files["out/report.txt"].size == 4
        assert after.files["out/report.txt"].sha256 == hashlib.sha256(b"done").hexdigest()
        assert session.run("print(1)").files_changed == []


def test_snapshot_counts_duckdb_rows(isolation):
    with get_sandbox().open(mode="script") as session:
        result = session.run(
            "import duckdb\ncon = duckdb.connect('w.duckdb')\n"
            "con.execute('CREATE TABLE t AS SELECT * FROM range(7)')\ncon.close()"
        )
        assert result.ok, result
        assert session.snapshot().db_rows["w.duckdb"] == {"t": 7}


def test_workspace_is_a_writable_copy_and_sources_stay_identical(isolation, tmp_path, shared_data):
    src = _make_sources(tmp_path)
    chinook = shared_data / "sources" / "chinook"
    before_src, before_chinook = _tree_hashes(src), _tree_hashes(chinook)
    for source in [*src.iterdir()]:
        source.chmod(0o444)
    for mode in ("script", "session"):
        for _ in range(3):
            with get_sandbox().open([src, chinook], mode=mode) as session:
                assert (session.workspace / "sources" / "sales.csv").is_file()
                result = session.run(
                    "import sqlite3\n"
                    "open('sources/sales.csv', 'a').write('west,1\\n')\n"
                    "con = sqlite3.connect('chinook/Chinook_Sqlite.sqlite'); con.execute('DELETE FROM Track');"
                    " con.commit()\n"
                    "con = sqlite3.connect('sources/shop.sqlite'); con.execute('DROP TABLE orders'); con.commit()\n"
                    "print(open('sources/sales.csv').read().count('west'))"
                )
                assert result.ok, result
                assert result.stdout == "1\n"
                assert session.snapshot().db_rows["chinook/Chinook_Sqlite.sqlite"]["Track"] == 0
    assert _tree_hashes(src) == before_src
    assert _tree_hashes(chinook) == before_chinook


def test_temp_workspace_removed_and_given_workspace_kept(isolation, tmp_path):
    with get_sandbox().open(mode="script") as session:
        session.run("open('x.txt', 'w').write('1')")
        temp = session.workspace
    assert not temp.exists()
    given = tmp_path / "ws"
    with get_sandbox().open(mode="script", workspace=given) as session:
        assert session.workspace == given.resolve()
        session.run("open('x.txt', 'w').write('1')")
    assert (given / "x.txt").read_text() == "1"
    assert (given / "x.txt").stat().st_uid == given.stat().st_uid  # handed back to the caller's owner


def test_session_timeout_restarts_worker_and_says_state_is_lost(isolation):
    with get_sandbox().open(mode="session") as session:
        assert session.run("x = 1").ok
        slow = session.run("import time\nprint('started')\ntime.sleep(60)", timeout=1.5)
        assert slow.timed_out and "TimeoutError" in slow.error and "state" in slow.error
        assert "started" in slow.stdout
        after = session.run("print('alive')\nprint(x)")
        assert after.stdout.startswith("[note: the previous cell killed the session")
        assert "alive" in after.stdout and "NameError" in after.error
        assert session.run("print(2 + 2)").stdout == "4\n"


def test_session_cells_may_exit_and_read_stdin_without_breaking_protocol(isolation):
    with get_sandbox().open(mode="session") as session:
        assert session.run("import sys\nprint('bye')\nsys.exit(0)").ok
        eof = session.run("input()")
        assert "EOFError" in eof.error
        bad = session.run("raise SystemExit(3)")
        assert bad.error == "SystemExit: 3"
        assert session.run("print('still here')").stdout == "still here\n"


def test_concurrent_sessions_from_asyncio(isolation):
    sandbox = get_sandbox()

    async def episode(n: int) -> list[str]:
        session = await asyncio.to_thread(sandbox.open, (), mode="session")
        try:
            await asyncio.to_thread(session.run, f"v = {n}")
            result = await asyncio.to_thread(session.run, "print(v * 10)")
            return [result.stdout]
        finally:
            await asyncio.to_thread(session.close)

    async def main():
        return await asyncio.gather(*(episode(n) for n in range(4)))

    assert asyncio.run(main()) == [[f"{n * 10}\n"] for n in range(4)]


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
    with pytest.raises(RuntimeError, match="closed"):
        session.run("print(1)")


def test_cli_exec_prints_one_json_line_per_cell(tmp_path, capsys):
    from synth.sandbox.commands import exec_command

    ws = _make_sources(tmp_path)
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


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_a_python_installed_under_tmp_is_visible_inside_the_sandbox(tmp_path_factory):
    # CI may clone the project (and its venv) under /tmp, which the sandbox replaces with a private /tmp.
    import subprocess
    import sys as _sys
    import tempfile

    venv = Path(tempfile.mkdtemp(prefix="ds-synth-venv-", dir="/tmp"))
    venv.chmod(0o755)  # like a checkout's folder; mkdtemp's 0700 would hide it from the sandbox's own uid
    try:
        subprocess.run([_sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        with LocalSandbox(python=str(venv / "bin" / "python")).open([]) as session:
            result = session.run("import sys; print(sys.prefix)")
        assert result.ok and result.stdout.strip() == str(venv), result
    finally:
        shutil.rmtree(venv, ignore_errors=True)
