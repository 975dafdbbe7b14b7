"""`synth refine` runs over the reasoning graph, driven by a scripted teacher (real LangGraph + SQLite checkpointer)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from doubles import ScriptedChatModel

from synth.commands.refine import refine as refine_command
from synth.config import RefineConfig
from synth.dataset.record import read_records
from synth.protocol import parse, validate
from synth.refine import refine
from synth.refiner import missing_keywords

ITEMS = [
    {"id": "q1", "question": "How many teams won more than 5 games?", "answer": "2",
     "table": {"columns": ["Team", "Wins"], "data": [["Ants", "7"], ["Bees", "3"], ["Cats", "9"]]}},
    {"id": "q2", "question": "Which team won the fewest games?", "answer": "Bees",
     "table": {"columns": ["Team", "Wins"], "data": [["Ants", "7"], ["Bees", "3"], ["Cats", "9"]]}},
]
ANSWERS = {it["question"]: it["answer"] for it in ITEMS}


def _question(messages) -> str:
    text = messages[-1]["content"]
    return next(q for q in ANSWERS if q in text)


def _kind(messages) -> str:
    text = messages[-1]["content"]
    if "word for word" in text:
        return "refine"
    if "Rewrite the correct solution" in text:
        return "reformulate"
    return "distill"


def _keywords_in(prompt: str) -> list[str]:
    return re.findall(r'^- "(.+)"$', prompt, flags=re.M)


class Teacher:
    """A scripted teacher: answers right after `wrong_distills` wrong tries; refines with every keyword unless told
    to leave one out (`drop_keyword_tries`) or change the answer (`changed_answer_tries`)."""

    def __init__(self, *, wrong_distills: int = 0, drop_keyword_tries: int = 0, changed_answer_tries: int = 0,
                 garbled_reformulation: bool = False, fail_refine_for: str | None = None) -> None:
        self.wrong_distills = wrong_distills
        self.drop_keyword_tries = drop_keyword_tries
        self.changed_answer_tries = changed_answer_tries
        self.garbled_reformulation = garbled_reformulation
        self.fail_refine_for = fail_refine_for
        self.counts: Counter = Counter()
        self.model = ScriptedChatModel([self.reply], name="scripted-teacher")

    def reply(self, messages) -> str:
        kind, question = _kind(messages), _question(messages)
        self.counts[kind, question] += 1
        n = self.counts[kind, question]
        answer = ANSWERS[question]
        if kind == "distill":
            given = "999" if n <= self.wrong_distills else answer
            return f"Looking at the Wins column, I compare each row.\nThe rows give {given}.\nFinal answer: {given}"
        if kind == "reformulate":
            if self.garbled_reformulation:
                return "Sure! The answer is clear from the table."
            return (f"<Analyze>\nThe question asks about wins; I check each row of the Wins column.\n</Analyze>\n"
                    f"<Understand>\nThe table lists three teams with their wins.\n</Understand>\n"
                    f"<Answer>\n{answer}\n</Answer>")
        if self.fail_refine_for and self.fail_refine_for in question:
            raise RuntimeError("teacher connection lost")
        keywords = _keywords_in(messages[-1]["content"])
        if n <= self.drop_keyword_tries:
            keywords = keywords[1:]
        final = "42" if n <= self.changed_answer_tries else answer
        woven = " ".join(f"{k} I re-check the Wins cells row by row." for k in keywords)
        return (f"Here is the improved solution:\n<Analyze>\nThe question asks about wins. {woven}\n</Analyze>\n"
                f"<Understand>\nThe table lists three teams with their wins.\n</Understand>\n<Answer>\n{final}\n</Answer>")


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    path = tmp_path / "input" / "items.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(it) + "\n" for it in ITEMS), encoding="utf-8")
    return path


def _run(items_file: Path, out: Path, teacher: Teacher, **options) -> object:
    config = RefineConfig(input=items_file, out=out, keywords_per_trace=3, seed=7, **options)
    return asyncio.run(refine(config, model=teacher.model, out=io.StringIO(), live=False))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_verified_items_emit_distilled_and_refined_records_that_parse(items_file, tmp_path):
    teacher = Teacher()
    summary = _run(items_file, tmp_path / "run", teacher)
    records = read_records(tmp_path / "run" / "records.jsonl")
    assert sorted((r.sources[0].name, r.variant) for r in records) == [
        ("items:q1", "distilled"), ("items:q1", "refined"), ("items:q2", "distilled"), ("items:q2", "refined")]
    for record in records:
        assert record.kind == "reasoning"
        assert [m["role"] for m in record.messages] == ["user", "assistant"]
        assert "| Team | Wins |" in record.prompt and record.prompt.startswith("# Instruction\n")
        assert validate(record.completion, require_answer=True, model_written=True) == []
        assert [a.kind for a in parse(record.completion).actions] == ["Analyze", "Understand", "Answer"]
        assert parse(record.completion).answer.strip() == record.reference.value
        assert record.verdict.decision == "accept"
    for record in [r for r in records if r.variant == "refined"]:
        assert len(record.keywords) == 3
        assert missing_keywords(record.completion, record.keywords) == []
        for keyword in record.keywords:
            assert keyword.lower() in record.completion.lower()
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["distill"] == {"verified": 2, "failed": 0, "accuracy": 1.0, "matched_by": {"exact": 2},
                                "reformulation_fallbacks": 0}
    assert stats["refine"] == {"kept": 2, "rejected": 0, "keep_rate": 1.0}
    used = {k: v for k, v in stats["keywords"].items() if v["sampled"]}
    assert sum(v["sampled"] for v in used.values()) == 6 and all(v["kept"] == v["sampled"] for v in used.values())
    assert summary.records == 4 and summary.errors == 0


def test_wrong_distillation_is_retried_then_kept(items_file, tmp_path):
    teacher = Teacher(wrong_distills=1)
    _run(items_file, tmp_path / "run", teacher, limit=1)
    assert teacher.counts["distill", ITEMS[0]["question"]] == 2
    distill_calls = [c for c in teacher.model.calls if _kind(c["messages"]) == "distill"]
    assert distill_calls[1]["temperature"] > distill_calls[0]["temperature"]  # a retry is not a cache hit
    distilled = [r for r in read_records(tmp_path / "run" / "records.jsonl") if r.variant == "distilled"]
    assert len(distilled) == 1 and distilled[0].usage["distill_attempts"] == 2


def test_item_is_dropped_when_no_distillation_matches(items_file, tmp_path):
    teacher = Teacher(wrong_distills=10)
    _run(items_file, tmp_path / "run", teacher, max_distill_attempts=3)
    assert (tmp_path / "run" / "records.jsonl").read_text() == ""
    rejected = _rows(tmp_path / "run" / "rejected.jsonl")
    assert [r["stage"] for r in rejected] == ["distill", "distill"]
    assert all(len(r["failures"]) == 3 and r["failures"][0]["answer"] == "999" for r in rejected)
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["distill"]["accuracy"] == 0.0 and stats["distill"]["failed"] == 2
    assert stats["refine"]["keep_rate"] is None
    assert not any(k == "refine" for k, _ in teacher.counts)


def test_refined_trace_whose_answer_changed_is_rejected_but_distilled_kept(items_file, tmp_path):
    teacher = Teacher(changed_answer_tries=5)
    _run(items_file, tmp_path / "run", teacher, limit=1, max_refine_attempts=2)
    records = read_records(tmp_path / "run" / "records.jsonl")
    assert [r.variant for r in records] == ["distilled"]
    rejected = _rows(tmp_path / "run" / "rejected.jsonl")
    assert rejected[0]["stage"] == "refine" and rejected[0]["reason"].startswith("answer changed")
    assert len(rejected[0]["failures"]) == 2 and len(rejected[0]["keywords"]) == 3
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["refine"] == {"kept": 0, "rejected": 1, "keep_rate": 0.0}
    assert sum(v["sampled"] for v in stats["keywords"].values()) == 3
    assert sum(v["kept"] for v in stats["keywords"].values()) == 0


def test_refinement_missing_a_keyword_is_retried_with_feedback(items_file, tmp_path):
    teacher = Teacher(drop_keyword_tries=1)
    _run(items_file, tmp_path / "run", teacher, limit=1)
    refine_calls = [c for c in teacher.model.calls if _kind(c["messages"]) == "refine"]
    assert len(refine_calls) == 2
    assert "missing keywords" in refine_calls[1]["messages"][-1]["content"]
    refined = [r for r in read_records(tmp_path / "run" / "records.jsonl") if r.variant == "refined"]
    assert len(refined) == 1 and missing_keywords(refined[0].completion, refined[0].keywords) == []


def test_unusable_reformulation_falls_back_to_a_valid_trace(items_file, tmp_path):
    _run(items_file, tmp_path / "run", Teacher(garbled_reformulation=True), limit=1)
    distilled = [r for r in read_records(tmp_path / "run" / "records.jsonl") if r.variant == "distilled"][0]
    assert validate(distilled.completion, model_written=True) == []
    assert not distilled.verdict.item("reformulated_by_model").passed
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["distill"]["reformulation_fallbacks"] == 1


def test_resume_continues_interrupted_items_without_duplicates(items_file, tmp_path):
    run = tmp_path / "run"
    first = Teacher(fail_refine_for="fewest")
    summary = _run(items_file, run, first)
    assert summary.errors == 1
    assert len(read_records(run / "records.jsonl")) == 2  # q1 done, q2 stopped after reformulate

    second = Teacher()
    config = RefineConfig(input=Path("ignored"), out=run, resume=True)
    summary = asyncio.run(refine(config, model=second.model, out=io.StringIO(), live=False))
    assert summary.errors == 0
    # q2 continued from its checkpoint (only refine ran again); q1 was not touched.
    assert set(second.counts) == {("refine", ITEMS[1]["question"])}
    ids = [r["id"] for r in _rows(run / "records.jsonl")]
    assert len(ids) == 4 and len(set(ids)) == 4

    third = Teacher()
    asyncio.run(refine(config, model=third.model, out=io.StringIO(), live=False))
    assert third.model.calls == [] and len(_rows(run / "records.jsonl")) == 4


def test_resume_with_a_larger_limit_grows_the_run_and_a_smaller_one_is_refused(items_file, tmp_path):
    from synth.refine import RefineError

    run = tmp_path / "run"
    _run(items_file, run, Teacher(), limit=1)
    assert len(_rows(run / "records.jsonl")) == 2  # q1: distilled and refined
    more = Teacher()
    grown = RefineConfig(input=Path("ignored"), out=run, resume=True, limit=2)
    asyncio.run(refine(grown, model=more.model, out=io.StringIO(), live=False))
    assert {q for _, q in more.counts} == {ITEMS[1]["question"]}  # only the new item ran
    assert len(_rows(run / "records.jsonl")) == 4 and RefineConfig.load(run / "config.yaml").limit == 2
    with pytest.raises(RefineError, match="can only grow"):
        asyncio.run(refine(RefineConfig(input=Path("ignored"), out=run, resume=True, limit=1), model=more.model,
                           out=io.StringIO(), live=False))


def test_refine_command_reports_bad_input_in_one_line(tmp_path):
    out = io.StringIO()
    assert refine_command({"input": tmp_path / "missing.jsonl", "out": tmp_path / "run"}, out=out) == 2
    assert out.getvalue().count("\n") == 1 and "missing.jsonl: no such file" in out.getvalue()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?"}\n')
    out = io.StringIO()
    assert refine_command({"input": bad, "out": tmp_path / "run2"}, out=out) == 2
    assert "bad.jsonl:1: no answer field" in out.getvalue()
    out = io.StringIO()
    assert refine_command({"out": tmp_path / "run3", "resume": True}, out=out) == 2
    assert "nothing to resume" in out.getvalue()


def test_bare_answer_without_reasoning_is_not_a_trace(items_file, tmp_path):
    model = ScriptedChatModel(["Final answer: 2"])
    config = RefineConfig(input=items_file, out=tmp_path / "run", limit=1)
    asyncio.run(refine(config, model=model, out=io.StringIO(), live=False))
    rejected = _rows(tmp_path / "run" / "rejected.jsonl")
    assert rejected[0]["stage"] == "distill"
    assert rejected[0]["failures"][0]["detail"] == "no reasoning before the final answer"


def test_cli_refine_wires_its_options(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "x?"}\n')
    result = CliRunner().invoke(app, ["refine", "--input", str(bad), "--out", str(tmp_path / "run"),
                                      "--question-field", "q", "--answer-field", "gold", "--keywords-per-trace", "2"])
    assert result.exit_code == 2
    assert "bad.jsonl:1: no field 'gold' (--answer-field)" in result.output
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves nothing behind


def test_progress_stats_and_rejected_rows_agree(items_file, tmp_path):
    # Both items are accepted (their distilled records are kept) while both refinements fail: the run reports
    # 2 accepted and 0 rejected items everywhere, and rejected.jsonl says which stage each row is from.
    out = io.StringIO()
    config = RefineConfig(input=items_file, out=tmp_path / "run", keywords_per_trace=3, seed=7)
    summary = asyncio.run(refine(config, model=Teacher(changed_answer_tries=5).model, out=out, live=False))
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    rows = _rows(tmp_path / "run" / "rejected.jsonl")
    assert "2/2 done, 2 accepted, 0 rejected" in out.getvalue()
    assert stats["items"] == {"accepted": 2, "rejected": 0} and stats["rejected"] == summary.rejected == 0
    assert [r["stage"] for r in rows] == ["refine", "refine"] and stats["refine"]["rejected"] == 2
    dropped = io.StringIO()
    config = RefineConfig(input=items_file, out=tmp_path / "dropped", keywords_per_trace=3, seed=7)
    summary = asyncio.run(refine(config, model=Teacher(wrong_distills=9).model, out=dropped, live=False))
    stats = json.loads((tmp_path / "dropped" / "stats.json").read_text())
    assert "2/2 done, 0 accepted, 2 rejected" in dropped.getvalue()
    assert stats["items"] == {"accepted": 0, "rejected": 2} and summary.rejected == 2
    assert [r["stage"] for r in _rows(tmp_path / "dropped" / "rejected.jsonl")] == ["distill", "distill"]
