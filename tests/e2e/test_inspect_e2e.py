"""`synth inspect` with the real embedded 0.5B model as the inspector, on one record of a real run: whatever the
small model answers, a judged verdict only counts with a quote that really is in the trajectory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from synth.checklist.judge import quote_occurs, restates_question
from synth.checklist import load_checklist
from synth.dataset.inspect import InspectConfig, inspect_data

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "inspect"


async def test_embedded_judge_verdicts_carry_real_evidence_or_none(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text(min(lines, key=len) + "\n")  # the shortest record: one judge call is enough
    summary = await inspect_data(InspectConfig(data=run, sources=FIXTURE / "sources", out=tmp_path / "out",
                                               inspector_model="embedded:0.5b", category="data_analysis"))
    (row,) = summary.rows
    assert row["status"] == "inspected" and all(b["class"] == "identical" for b in row["blocks"])
    questions = {i.id: i.question for i in load_checklist("data_analysis").judged_items}
    assistant = (run / "records.jsonl").read_text()
    import json

    text = json.loads(assistant)["messages"][1]["content"]
    judged = [v for v in row["verdict"]["items"] if v["kind"] == "judged"]
    assert [v["id"] for v in judged] == list(questions)
    for verdict in judged:
        if verdict["not_judged"]:
            assert not verdict["passed"] and verdict["reason"]
        else:  # a verdict that counts rests on a quote from the trajectory and a reason of its own
            assert quote_occurs(verdict["evidence"], text), verdict
            assert not restates_question(verdict["reason"], questions[verdict["id"]]), verdict
    stats = summary.stats["judged"]
    assert stats["verdicts"] == len(judged) and stats["weak_evidence"] is True
    assert stats["empty"] == sum(v["not_judged"] for v in judged)
