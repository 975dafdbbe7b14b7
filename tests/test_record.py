"""Records: one schema, stable ids, crash-safe JSONL."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from synth.checklist import ItemVerdict, Verdict, validate_items
from synth.dataset import Record, read_records, record_id, write_records
from synth.dataset.record import Reference
from synth.llm.base import Usage
from synth.protocol import build_user_prompt
from synth.sandbox.base import ExecResult
from synth.sources.ref import SourceRef, source_refs
from synth.trajectory import Trajectory, Turn


def _trajectory() -> Trajectory:
    prompt = build_user_prompt("Count the rows of  sales.csv.", [("sales.csv", 120)])
    turns = [
        Turn(text="<Analyze>Load it.</Analyze>\n<Code>\n```python\nprint(4)\n```\n</Code>", code="print(4)",
             result=ExecResult(stdout="4\n")),
        Turn(text="<Understand>4 rows.</Understand>\n<Answer>4</Answer>"),
    ]
    return Trajectory(prompt=prompt, turns=turns, answer="4", mode="session", model="embedded:0.5b",
                      usage=Usage(120, 30, 0.0))


def _record(**overrides) -> Record:
    items = validate_items([{"rule": "answer_matches"}, {"question": "Is the count stated?"}])
    verdict = Verdict(items=[ItemVerdict(id="answer_matches", kind="rule", passed=True, reason="ok"),
                             ItemVerdict(id="judged_2", kind="judged", passed=True, reason="yes")],
                      decision="accept", score=1.0)
    kwargs = dict(category="data_analysis", sources=[SourceRef(name="sales.csv", path=Path("sales.csv"), sha256="ab" * 32)],
                  checklist=items, verdict=verdict, reference=Reference(value=4, verified_by="program"), difficulty="easy",
                  models={"questioner": "openai:gpt-4o", "solver": "embedded:0.5b"}, revisions=1)
    kwargs.update(overrides)
    return Record.from_trajectory(_trajectory(), **kwargs)


def test_from_trajectory_builds_datascience_instruct_messages():
    record = _record()
    assert [m["role"] for m in record.messages] == ["user", "assistant"]
    assert record.prompt.startswith("# Instruction\nCount the rows") and "# Data\nFile 1:" in record.prompt
    assert "<Execute>\n4\n</Execute>" in record.completion and record.completion.endswith("<Answer>4</Answer>")
    assert record.kind == "interaction" and record.mode == "session"
    assert record.reward_spec.method == "qa" and record.reward_spec.ground_truth == 4
    assert [i.id for i in record.reward_spec.checklist] == ["answer_matches", "judged_2"]
    assert record.usage == {"prompt_tokens": 120, "completion_tokens": 30, "cost_usd": 0.0}
    assert record.sources[0].name == "sales.csv"
    assert _record(reference=None).reward_spec.method == "datatask"
    guess = _record(reference=4)  # a bare value is an unverified guess: kept, never a reward's ground truth
    assert guess.reference.verified_by == "none" and guess.reward_spec.method == "datatask"
    assert guess.reward_spec.ground_truth is None
    assert _record(category="open_research", open_ended=True).reward_spec.method == "openresearch"


def test_round_trip(tmp_path):
    records = [_record(), _record(category="data_cleaning", reference=None)]
    reasoning = Record(id=record_id([], "What is 2+2?", variant="refined"), kind="reasoning", category="tableqa",
                       messages=[{"role": "user", "content": "# Instruction\nWhat is 2+2?"},
                                 {"role": "assistant", "content": "<Analyze>2+2=4</Analyze><Answer>4</Answer>"}],
                       reward_spec={"method": "qa", "ground_truth": "4"}, variant="refined",
                       keywords=["Let's review the prior reasoning"])
    path = tmp_path / "out" / "records.jsonl"
    assert write_records(path, records) == 2
    write_records(path, [reasoning])
    back = read_records(path)
    assert back == [*records, reasoning]
    assert back[0].checklist[1].question == "Is the count stated?" and back[0].verdict.decision == "accept"
    write_records(path, [reasoning], append=False)
    assert read_records(path) == [reasoning]


def test_stable_ids(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x\n1\n")
    b.write_text("y\n2\n")
    first = record_id(source_refs([a, b]), "Sum x.")
    assert first == record_id(source_refs([b, a]), "  Sum   x. ")  # order and whitespace do not matter
    assert first == record_id([("renamed.csv", s.sha256) for s in source_refs([a, b])], "Sum x.")
    assert first != record_id(source_refs([a, b]), "Sum y.")
    assert first != record_id(source_refs([a]), "Sum x.")
    assert first != record_id(source_refs([a, b]), "Sum x.", variant="refined")
    a.write_text("x\n5\n")  # same name, different content -> different task
    assert first != record_id(source_refs([a, b]), "Sum x.")
    assert _record().id == _record(revisions=3).id  # derived from task and sources, not from the run


def test_torn_last_line_is_tolerated_and_repaired_on_append(tmp_path, caplog):
    path = tmp_path / "records.jsonl"
    write_records(path, [_record()])
    whole = _record(category="modeling").model_dump_json()
    with open(path, "a") as fh:
        fh.write(whole[: len(whole) // 2])  # the process died mid-write
    with caplog.at_level(logging.WARNING):
        assert [r.category for r in read_records(path)] == ["data_analysis"]
    assert "torn last line" in caplog.text
    write_records(path, [_record(category="data_insight")])
    assert [r.category for r in read_records(path)] == ["data_analysis", "data_insight"]
    assert path.read_text().count("\n") == 2


def test_corruption_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "records.jsonl"
    good = _record().model_dump_json()
    path.write_text(f"{good}\n{{broken\n{good}\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not valid JSON"):
        read_records(path)
    bad = json.loads(good)
    bad["kind"] = "chat"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:1: not a valid record \(kind"):
        read_records(path)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "none.jsonl")


def test_record_rejects_bad_messages_and_extra_fields():
    data = _record().model_dump()
    with pytest.raises(ValueError, match="ONE assistant message"):
        Record.model_validate({**data, "messages": [{"role": "user", "content": "q"}]})
    with pytest.raises(ValueError, match="ONE assistant message"):
        Record.model_validate({**data, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                                    {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    with pytest.raises(ValueError, match="Extra inputs"):
        Record.model_validate({**data, "colour": "red"})
