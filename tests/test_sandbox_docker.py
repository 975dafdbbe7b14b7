"""Docker-specific checks (the contract and the containment battery run in tests/test_sandbox_contract.py).
Skips, with the reason, where no Docker engine answers."""

from __future__ import annotations

import pytest

from synth.errors import SynthError
from synth.sandbox import PROTECTIONS, SandboxError, get_sandbox
from synth.sandbox.docker import DockerSandbox

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker_sandbox():
    pytest.importorskip("docker", reason="the docker SDK is not installed (extra 'docker')")
    try:
        return get_sandbox("docker", build=True)
    except SandboxError as exc:
        pytest.skip(f"no usable Docker engine: {exc}")


def test_docker_claims_every_protection():
    assert DockerSandbox.protections == frozenset(PROTECTIONS)


def test_no_engine_is_a_clear_error(monkeypatch):
    pytest.importorskip("docker", reason="the docker SDK is not installed (extra 'docker')")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="no Docker engine answers") as info:
        get_sandbox("docker")
    assert isinstance(info.value, SynthError) and isinstance(info.value, RuntimeError)


def test_the_image_carries_the_data_science_stack(docker_sandbox):
    with docker_sandbox.open(mode="script") as session:
        result = session.run(
            "import numpy, pandas, scipy, sklearn, statsmodels, matplotlib, seaborn, openpyxl, pyarrow, duckdb\n"
            "import os\nprint(os.getuid(), os.getcwd())"
        )
    assert result.ok, result
    assert result.stdout == "10001 /workspace\n"


def test_a_script_cell_leaves_no_process_in_the_container(docker_sandbox):
    with docker_sandbox.open(mode="script") as session:
        assert session.run("import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)").ok
        listing = session.run("import os\nprint(sorted(open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc')"
                              " if p.isdigit()))")
    assert "sleep\\x00300" not in listing.stdout and "sleep\x00300" not in listing.stdout
