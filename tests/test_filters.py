"""Quality filters on constructed near-duplicates and planted benchmark questions."""

from __future__ import annotations

import json

import pytest
from test_export import reasoning_record

from synth.checklist import Verdict
from synth.dataset.filters import (
    ContaminationIndex,
    FilterConfig,
    FilterError,
    filter_records,
    load_questions,
    token_estimate,
    turn_count,
)
from synth.dataset.record import Record, RewardSpec, read_records, write_records

EXEC = "<Execute>\n{out}\n</Execute>\n"


def record(instruction: str, *, category: str = "data_analysis", cells: int = 1, decision: str = "accept",
           rid: str | None = None, words: int = 0) -> Record:
    body = "".join(f"<Analyze>\nStep {i}.\n</Analyze>\n<Code>\n```python\nprint({i})\n```\n</Code>\n"
                   + EXEC.format(out=i) for i in range(cells))
    body += "<Answer>\n" + ("word " * words) + "done\n</Answer>"
    prompt = f"# Instruction\n{instruction}\n\n# Data\nFile 1:\n{{\n    \"name\": \"t.csv\",\n    \"size\": \"1.0KB\"\n}}\n\n"
    return Record(id=rid or f"id-{abs(hash(instruction)) % 10**10}", kind="interaction", category=category,
                  messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": body}],
                  verdict=Verdict(decision=decision, score=1.0), reward_spec=RewardSpec(method="datatask"))


def test_measures():
    r = record("Count rows.", cells=3)
    assert turn_count(r) == 4
    assert token_estimate(record("a b", words=100)) > token_estimate(record("a b"))


def test_exact_and_near_duplicates_removed_distinct_kept():
    records = [
        record("Compute the average ticket price per genre and plot it as a bar chart.", rid="a"),
        record("compute the AVERAGE ticket price per genre, and plot it as a bar chart!", rid="b"),  # exact after norm
        record("Compute the average ticket price per genre and plot it as a bar chart please.", rid="c"),  # near
        record("Compute the average ticket price per music genre and plot it as a bar chart.", rid="d"),  # near (0.84)
        record("Find the customers who never placed an order and export them to CSV.", rid="e"),
        record("Train a logistic regression predicting churn and report its ROC AUC.", rid="f"),
    ]
    kept, report = filter_records(records, FilterConfig(dedup=True, near_dup_threshold=0.8))
    assert [r.id for r in kept] == ["a", "e", "f"]
    reasons = {r.id: (r.reason, r.detail) for r in report.removed}
    assert reasons["b"][0] == "exact_duplicate" and "a" in reasons["b"][1]
    assert reasons["c"][0] == "near_duplicate" and reasons["d"][0] == "near_duplicate"
    assert report.counts() == {"near_duplicate": 2, "exact_duplicate": 1}
    # A stricter threshold keeps the reworded one.
    kept, _ = filter_records(records, FilterConfig(dedup=True, near_dup_threshold=0.87))
    assert "d" in [r.id for r in kept]


def test_distilled_and_refined_twins_are_not_duplicates():
    twins = [reasoning_record("Which city is larger?", variant="distilled"),
             reasoning_record("Which city is larger?", variant="refined")]
    kept, report = filter_records(twins, FilterConfig(dedup=True))
    assert len(kept) == 2 and not report.removed


def test_decontamination_finds_planted_questions(tmp_path):
    planted = "Which team scored the most points in the 1998 season according to the table?"
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps({"id": i, "question": q}) for i, q in enumerate([
        planted, "What is the total number of gold medals won by Norway?", "Who?"])) + "\n")
    tsv = tmp_path / "wikitq.tsv"
    tsv.write_text("id\tutterance\tcontext\nnu-1\thow many films did the director release after 2005 in total\tcsv/1.csv\n")
    records = [
        record(f"Using the table, answer: {planted.lower()} Show your work.", rid="leak1"),
        record("How many films did the director release after 2005 in total? Use the csv.", rid="leak2"),
        record("Which team scored the most points overall?", rid="clean1"),  # shares words, not 8-grams
        record("Who is the oldest customer?", rid="clean2"),  # would match "Who?" if short questions counted
    ]
    kept, report = filter_records(records, FilterConfig(decontaminate=[bench, tsv]))
    assert sorted(r.id for r in kept) == ["clean1", "clean2"]
    details = {r.id: r.detail for r in report.removed}
    assert set(details) == {"leak1", "leak2"}
    assert "bench.jsonl" in details["leak1"] and "wikitq.tsv" in details["leak2"]


def test_contamination_threshold_partial_overlap():
    index = ContaminationIndex([("one two three four five six seven eight nine ten eleven twelve", "b")], n=8,
                               threshold=0.5)
    assert index.match("one two three four five six seven eight nine ten") is not None  # 3 of 5 grams
    assert index.match("one two three four five six seven eight") is None  # 1 of 5 grams


def test_load_questions_autodetects_and_errors(tmp_path):
    csv_file = tmp_path / "q.csv"
    csv_file.write_text("ID,Query,answer\n1,what is the mean price of tea,2.5\n")
    assert load_questions(csv_file) == ["what is the mean price of tea"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "answer": 3}) + "\n")
    with pytest.raises(FilterError, match="no question column .*found id, answer"):
        load_questions(bad)
    with pytest.raises(FilterError, match="no such file"):
        load_questions(tmp_path / "missing.tsv")


def test_selection_filters():
    records = [record("a task one", rid="short", cells=0), record("a task two", rid="long", cells=6),
               record("a task three", rid="insight", category="data_insight", cells=2),
               record("a task four", rid="revise", decision="revise", cells=2),
               record("a task five", rid="wordy", cells=2, words=5000)]
    kept, report = filter_records(records, FilterConfig(min_turns=2, max_turns=5, categories=["data_analysis"],
                                                        verdict="accept", max_tokens=2000))
    assert kept == []
    assert {r.id: r.reason for r in report.removed} == {
        "short": "min_turns", "long": "max_turns", "insight": "category", "revise": "verdict", "wordy": "max_tokens"}


def test_cli_filter_writes_records_and_report(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    run = tmp_path / "run"
    records = [record("Plot monthly revenue as a line chart with a title.", rid="x"),
               record("Plot monthly revenue as a line chart with a title!", rid="y"),
               record("List the top five artists by number of tracks.", rid="z")]
    write_records(run / "records.jsonl", records)
    (run / "config.yaml").write_text("sources: /data\n")
    before = (run / "records.jsonl").read_bytes()
    out = tmp_path / "clean" / "records.jsonl"
    result = CliRunner().invoke(app, ["filter", str(run), "--out", str(out), "--dedup"])
    assert result.exit_code == 0, result.output
    assert "2 of 3 records kept" in result.output and "exact_duplicate: 1" in result.output
    assert [r.id for r in read_records(out)] == ["x", "z"]
    report = json.loads((tmp_path / "clean" / "records.report.json").read_text())
    assert report["by_reason"] == {"exact_duplicate": 1} and report["removals"][0]["id"] == "y"
    assert (tmp_path / "clean" / "config.yaml").read_text() == "sources: /data\n"
    assert (run / "records.jsonl").read_bytes() == before  # source data never modified
    bad = CliRunner().invoke(app, ["filter", str(run), "--out", str(run / "records.jsonl")])
    assert bad.exit_code == 1 and "never modified" in bad.output
    bad = CliRunner().invoke(app, ["filter", str(run), "--out", str(out), "--near-dup-threshold", "3"])
    assert bad.exit_code == 1 and "near_dup_threshold" in bad.output
