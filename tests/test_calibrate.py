"""Calibration on a real run (tests/fixtures/inspect: accepted records of `synth generate` with the embedded model):
its Execute blocks reproduce, an edited one is found, and every planted defect is caught by the rule items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synth.dataset.calibrate import calibrate, calibration_lines
from synth.dataset.defects import (
    DEFECTS,
    PLANTS,
    PlantContext,
    answer_of,
    with_outputs,
    without_cell,
)
from synth.dataset.inspect import InspectConfig, inspect_data
from synth.dataset.trajectories import read_trajectories
from synth.protocol import parse, validate

FIXTURE = Path(__file__).parent / "fixtures" / "inspect"
RUN = FIXTURE / "run"


def records():
    return list(read_trajectories(RUN))


async def test_generate_records_reproduce_and_an_edited_block_is_reported_exactly(tmp_path):
    summary = await inspect_data(InspectConfig(data=RUN, out=tmp_path / "clean"))
    blocks = [b for row in summary.rows for b in row["blocks"]]
    # 100 % of the Execute blocks reproduce: byte for byte, or — where a traceback names this machine's Python
    # installation or a cell file whose /tmp path differs without bubblewrap — equal after normalising paths
    assert blocks and all(b["class"] in ("identical", "normalized") for b in blocks), blocks
    assert summary.stats["authenticity_rate"] == 1.0 and summary.stats["accepted"] == len(summary.rows)
    # a copy of the run whose one Execute block (the second record's last) was edited
    copy = tmp_path / "edited"
    shutil.copytree(RUN, copy)
    (copy / "config.yaml").write_text(f"sources: {FIXTURE / 'sources'}\n")
    lines = (copy / "records.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    text = record["messages"][1]["content"]
    last = [a for a in parse(text).actions if a.kind == "Execute"][-1]
    body = last.content.replace("3.43", "3.73") if "3.43" in last.content else last.content + "tampered\n"
    record["messages"][1]["content"] = text[:last.start] + f"<Execute>{body}</Execute>" + text[last.end:]
    lines[1] = json.dumps(record)
    (copy / "records.jsonl").write_text("\n".join(lines) + "\n")
    summary = await inspect_data(InspectConfig(data=copy, out=tmp_path / "out"))
    different = [(row["index"], b["block"]) for row in summary.rows for b in row["blocks"] if b["class"] not in ("identical", "normalized")]
    edited_block = len([a for a in parse(text).actions if a.kind == "Execute"])
    assert different == [(1, edited_block)]  # exactly that block, nothing else
    assert [r["accepted"] for r in summary.rows] == [True, False, True]


async def test_every_planted_defect_is_caught_by_the_rules_and_clean_records_pass(tmp_path):
    result = await calibrate(InspectConfig(data=RUN, out=tmp_path / "cal"))
    summary = result.summary
    assert summary["records"] == len(records()) and summary["clean_acceptance"] == 1.0
    for defect, row in summary["defects"].items():
        if defect == "deliverable_deleted":
            assert row["counted"] == 1  # only one record has a required file
        else:
            assert row["counted"] == summary["records"], defect
        assert row["recall"] == 1.0 and not row["missed"], (defect, row)
    by = {d: set(r["caught_by"]) for d, r in summary["defects"].items()}
    assert "execute_blocks_authentic" in by["execute_altered"] and "sources_unchanged" in by["source_modified"]
    assert {"answer_complete", "answer_states_result"} <= by["answer_truncated"]
    assert "answer_states_result" in by["answer_without_result"] and "no_unresolved_errors" in by["last_cell_fails"]
    assert "deliverable_1" in by["deliverable_deleted"] and "answer_grounded" in by["wrong_number"]
    assert (result.out / "calibration.json").is_file()
    rows = [json.loads(line) for line in (result.out / "verdicts.jsonl").read_text().splitlines()]
    assert {r["defect"] for r in rows} == {"clean", *DEFECTS}
    text = "\n".join(calibration_lines(summary))
    assert "clean acceptance 3/3" in text and "answer_truncated" in text and "rules only" in text


def test_each_plant_makes_exactly_its_defect(tmp_path):
    rows = records()
    row = rows[1]  # the iris record: several cells, an answer with a name and a number
    files = {"iris.csv": FIXTURE / "sources" / "iris.csv"}
    ctx = PlantContext(rows[:1] + rows[2:], files, tmp_path)
    answer = answer_of(row.assistant)
    planted = {name: plant(row, ctx) for name, plant in PLANTS.items()}
    assert planted["deliverable_deleted"] is None  # this record has no required file
    assert answer_of(planted["wrong_number"].assistant) != answer
    assert planted["wrong_number"].assistant.replace(answer_of(planted["wrong_number"].assistant), answer) == row.assistant
    assert answer_of(planted["foreign_answer"].assistant) == answer_of(rows[0].assistant)
    cut = answer_of(planted["answer_truncated"].assistant)
    assert answer.startswith(cut) and cut[-1].isalpha() and answer[len(cut)].isalpha()  # mid-word
    n_code = lambda text: sum(a.kind == "Code" for a in parse(text).actions)  # noqa: E731
    assert n_code(planted["cells_removed"].assistant) == n_code(row.assistant) - 1
    assert not [i for i in validate(planted["cells_removed"].assistant) if i.code != "not_starting_with_analyze"]
    assert "raise KeyError" in planted["last_cell_fails"].assistant
    source = planted["source_modified"]
    assert source.assistant == row.assistant and (source.workspace / "iris.csv").read_bytes() != files["iris.csv"].read_bytes()
    executes = lambda text: [a.content for a in parse(text).actions if a.kind == "Execute"]  # noqa: E731
    changed = [a != b for a, b in zip(executes(row.assistant), executes(planted["execute_altered"].assistant))]
    assert changed.count(True) == 1


def test_text_edits_keep_the_protocol():
    row = records()[1]
    outputs = [f"out {n}" for n in range(5)]
    replaced = with_outputs(row.assistant, outputs)
    assert [a.content for a in parse(replaced).actions if a.kind == "Execute"][:1] == ["\nout 0\n"]
    assert not validate(replaced)
    removed = without_cell(row.assistant, 0)
    assert "<Execute>" in removed and removed.count("<Code>") == row.assistant.count("<Code>") - 1


async def test_calibration_needs_records(tmp_path):
    from synth.dataset.inspect import InspectError

    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "records.jsonl").write_text("")
    with pytest.raises(InspectError, match="no readable accepted records"):
        await calibrate(InspectConfig(data=empty, out=tmp_path / "o"))
    with pytest.raises(InspectError, match="unknown defect"):
        await calibrate(InspectConfig(data=RUN, out=tmp_path / "p"), defects=["nope"])
