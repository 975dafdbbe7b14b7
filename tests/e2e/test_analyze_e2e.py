"""`synth analyze` end to end: the real embedded 0.5B model, the real local sandbox, a real seaborn CSV."""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from synth import protocol
from synth.cli import app
from synth.trajectory import Trajectory

pytestmark = pytest.mark.e2e


def _numbers(text):
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))]


def test_analyze_answers_an_aggregate_through_real_execution(shared_data, tmp_path):
    tips = shared_data / "sources" / "seaborn" / "tips.csv"
    expected = pd.read_csv(tips)["tip"].mean()  # 2.998…
    before = tips.read_bytes()
    out = tmp_path / "report"

    result = CliRunner().invoke(
        app,
        ["analyze", "What is the average tip?", "--data", str(tips), "--model", "embedded:0.5b",
         "--max-rounds", "6", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    traj = payload["trajectory"]
    assert payload["stop_reason"] == "answer"

    executed = [t for t in traj["turns"] if t["result"] is not None]
    assert executed, "the model never ran code"
    assert any(f"{expected:.3f}"[:4] in t["result"]["stdout"] for t in executed)  # the sandbox really computed it
    assert any(abs(x - expected) < 0.01 for x in _numbers(payload["answer"])), payload["answer"]

    assert protocol.validate(Trajectory.from_dict(traj).assistant_text()) == []
    assert json.loads((out / "trajectory.json").read_text())["answer"] == payload["answer"]
    assert payload["answer"] in (out / "report.md").read_text()
    assert tips.read_bytes() == before
