"""Hostile cells: each attempt is contained, reported in the cell result, and leaves the host unaffected.

Run on the bubblewrap path and (where the fallback claims to contain it) on the rlimits-only fallback.
"""

from __future__ import annotations

import os
import resource
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest

from synth.sandbox import Limits, get_sandbox
from synth.sandbox.local import _usable_bwrap

SMALL = Limits(timeout_s=20, memory_mb=512, max_processes=16, output_limit_chars=2000)


def _use(path: str, monkeypatch) -> None:
    if path == "bwrap":
        monkeypatch.delenv("DS_SYNTH_SANDBOX_NO_BWRAP", raising=False)
        if _usable_bwrap() is None:
            pytest.skip("bubblewrap is not usable on this machine")
    else:
        monkeypatch.setenv("DS_SYNTH_SANDBOX_NO_BWRAP", "1")


@pytest.fixture(params=["bwrap", "no-bwrap"])
def any_path(request, monkeypatch):
    _use(request.param, monkeypatch)
    return request.param


@pytest.fixture
def bwrap_path(monkeypatch):
    _use("bwrap", monkeypatch)


def _processes_with(needle: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/cmdline", "rb") as fh:
                    if needle.encode() in fh.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("mode", ["script", "session"])
def test_files_outside_the_workspace_are_invisible(bwrap_path, tmp_path, mode):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    secret.chmod(0o600)
    code = (
        "import os\n"
        "for path in [%r, '/etc/shadow', '/root', '/work', %r]:\n"
        "    try:\n"
        "        print(path, 'READ', open(path).read()[:20] if os.path.isfile(path) else os.listdir(path))\n"
        "    except OSError as exc:\n"
        "        print(path, 'DENIED', type(exc).__name__)\n"
        "print(open(%r).read())" % (str(secret), str(Path(__file__).parent), str(secret))
    )
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run(code)
    assert "TOP-SECRET" not in result.output()
    assert "READ" not in result.stdout, result.stdout
    assert result.stdout.count("DENIED") == 5
    assert "FileNotFoundError" in result.error


@pytest.mark.parametrize("mode", ["script", "session"])
def test_writes_outside_the_workspace_fail(bwrap_path, tmp_path, mode):
    outside = tmp_path / "pwned.txt"
    repo_file = Path(__file__).parent / f"pwned-{secrets.token_hex(4)}.txt"
    code = (
        "for path in [%r, %r, '/usr/pwned.txt', '/tmp/../pwned.txt']:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('DENIED', type(exc).__name__)\n"
    ) % (str(outside), str(repo_file))
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run(code)
        assert "WROTE /usr" not in result.stdout
    assert not outside.exists() and not repo_file.exists() and not Path("/usr/pwned.txt").exists()
    assert result.stdout.count("DENIED") >= 3


def test_network_is_unreachable(bwrap_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn.recv(100))
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve)
    thread.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\ns.sendall(b'LEAK')"
    try:
        with get_sandbox().open(mode="session", limits=SMALL) as session:
            result = session.run(code)
            dns = session.run("import socket\nsocket.getaddrinfo('pypi.org', 443)")
    finally:
        done.set()
        thread.join()
        server.close()
    assert accepted == []
    assert "ConnectionRefusedError" in result.error or "OSError" in result.error, result
    assert not dns.ok


@pytest.mark.parametrize("mode", ["script", "session"])
def test_api_keys_in_the_parent_environment_are_not_passed(any_path, monkeypatch, mode):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_parent_secret")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    code = "import os\nprint(sorted(os.environ))\nprint([v for v in os.environ.values() if 'secret' in v or v == 'hunter2'])"
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run(code)
    assert result.ok, result
    assert "sk-parent-secret" not in result.stdout and "hf_parent_secret" not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout and "HF_TOKEN" not in result.stdout
    assert "MY_DB_PASSWORD" not in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_process_limit_bounds_forks(any_path):
    # Counted forks first: each child sleeps, so they all stay alive and count against the limit.
    code = (
        "import os, time\nkids = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print('refused:', type(exc).__name__)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids += 1\n"
        "print('forked', kids)"
    )
    with get_sandbox().open(mode="script", limits=SMALL) as session:
        result = session.run(code)
        token = session._jail.token
    assert "refused: BlockingIOError" in result.stdout, result
    assert int(result.stdout.split("forked ")[1]) < SMALL.max_processes
    assert _processes_with_env(token) == []


def _processes_with_env(token: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                with open(f"{entry.path}/environ", "rb") as fh:
                    if token.encode() in fh.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_fork_bomb_is_contained_and_killed(any_path):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    with get_sandbox().open(mode="session", limits=SMALL) as session:
        result = session.run(bomb, timeout=2)
        assert result.timed_out and "TimeoutError" in result.error
        assert session.run("print('recovered')").stdout.endswith("recovered\n")
        token = session._jail.token
    assert _processes_with_env(token) == []


@pytest.mark.parametrize("mode", ["script", "session"])
def test_memory_limit_raises_memory_error(any_path, mode):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run("block = bytearray(2 * 1024 ** 3)\nprint('allocated')")
        assert "MemoryError" in result.error and "allocated" not in result.stdout
        if mode == "session":
            assert session.run("print('worker alive')").stdout == "worker alive\n"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize("mode", ["script", "session"])
def test_infinite_loop_is_killed_at_the_timeout(any_path, mode):
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        started = time.monotonic()
        result = session.run("print('looping', flush=True)\nwhile True:\n    pass", timeout=1)
        elapsed = time.monotonic() - started
        token = session._jail.token
        assert result.timed_out and not result.ok
        assert "TimeoutError" in result.error and "looping" in result.stdout
        assert elapsed < 15  # killed, not waited out (a loose bound: the cell itself never ends)
        if mode == "script":
            assert _processes_with_env(token) == []


@pytest.mark.parametrize("mode", ["script", "session"])
def test_printing_a_gigabyte_is_truncated_and_host_memory_stays_flat(any_path, mode):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nchunk = 'x' * (1 << 20)\nprint('BEGIN')\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run(code)
        assert session.run("print('next')").stdout.endswith("next\n")
    assert result.stdout.startswith("BEGIN")
    assert "... [truncated " in result.stdout
    assert len(result.stdout) < SMALL.output_limit_chars + 200
    assert "OutputLimitError" in result.error
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize("mode", ["script", "session"])
def test_background_processes_do_not_survive(any_path, mode):
    marker = f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    code = (
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"  # a double fork: the grandchild is orphaned and in its own session
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}1'])\n"
        "    os._exit(0)\n"
        "import time; time.sleep(0.3)\nprint('spawned')"
    )
    with get_sandbox().open(mode=mode, limits=SMALL) as session:
        result = session.run(code)
        assert result.ok, result
        if mode == "session":
            assert len(_processes_with(marker)) == 2  # they really ran (a notebook keeps them while open)
    assert _processes_with(marker) == []


def test_close_leaves_no_worker_behind(any_path):
    session = get_sandbox().open(mode="session", limits=SMALL)
    session.run("x = 1")
    worker_pid = session._worker.pid
    token = session._jail.token
    session.close()
    assert not Path(f"/proc/{worker_pid}").exists() or Path(f"/proc/{worker_pid}/status").read_text().find(
        "State:\tZ"
    ) >= 0
    assert _processes_with_env(token) == []
