"""The docker backend against a real engine. Skips (with the reason) where no Docker engine answers."""

from __future__ import annotations

import hashlib

import pytest

from synth.sandbox import Limits, get_sandbox

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker_sandbox():
    pytest.importorskip("docker", reason="the docker SDK is not installed (extra 'docker')")
    try:
        return get_sandbox("docker", build=True)
    except RuntimeError as exc:
        pytest.skip(f"no usable Docker engine: {exc}")


def test_no_engine_is_a_clear_error(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeError, match="no Docker engine answers"):
        get_sandbox("docker")


def test_script_and_session_modes(docker_sandbox, tmp_path):
    src = tmp_path / "data.csv"
    src.write_text("a\n1\n2\n")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    with docker_sandbox.open([src], mode="script") as session:
        result = session.run("import pandas as pd\nx = pd.read_csv('data.csv').a.sum()\nprint(x)\nopen('data.csv','w')")
        assert result.stdout == "3\n" and result.ok, result
        assert "data.csv" in result.files_changed
        assert "NameError" in session.run("print(x)").error
    with docker_sandbox.open([src], mode="session") as session:
        assert session.run("x = 5").ok
        assert session.run("print(x * 2)").stdout == "10\n"
        assert "ZeroDivisionError" in session.run("1/0").error
        figure = session.run("import matplotlib.pyplot as plt\nplt.plot([1])\nplt.show()")
        assert "[figure saved: figure_1.png]" in figure.stdout
        assert "figure_1.png" in session.snapshot().files
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_containment(docker_sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    limits = Limits(timeout_s=20, memory_mb=256, max_processes=32, output_limit_chars=1000)
    with docker_sandbox.open(mode="session", limits=limits) as session:
        net = session.run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)")
        assert not net.ok
        env = session.run("import os\nprint('OPENAI_API_KEY' in os.environ)")
        assert env.stdout == "False\n"
        ro = session.run("open('/usr/pwned', 'w')")
        assert "OSError" in ro.error or "PermissionError" in ro.error
        loop = session.run("while True: pass", timeout=2)
        assert loop.timed_out
        assert session.run("print('back')").stdout.endswith("back\n")
        big = session.run("print('y' * 100000)")
        assert "... [truncated " in big.stdout
