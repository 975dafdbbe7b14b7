"""`synth generate` runs: run dir handling, stats, and a real subprocess killed with SIGKILL then --resume'd.

Models are `openai:` specs against a local FakeOpenAIServer whose replies are a pure function of the request,
so an interrupted-and-resumed run and an uninterrupted run see the same answers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.commands.generate import generate as generate_command
from synth.llm.testing_server import FakeOpenAIServer, RoleScript

CSV = "region,amount\nnorth,10\nsouth,5\nnorth,20\neast,7\n"
CHECKLIST = """\
category: {category}
items:
  - rule: answer_present
  - rule: sources_unchanged
  - rule: execute_blocks_authentic
  - id: supported
    question: Is the answer supported by the printed output?
"""
TASKS = {
    ("regional_sales", "easy"): "Report the mean amount of the rows whose region is north in sales.csv.",
    ("data_analysis", "easy"): "Sum the amount column per region and report which region has the largest total.",
    ("data_analysis", "medium"): "Count how many rows each region has in sales.csv and list them sorted.",
    ("data_cleaning", "easy"): "Check `region` and `amount` in sales.csv for missing values and report counts.",
    ("data_cleaning", "medium"): "Find outliers of `amount` in sales.csv by the 1.5 IQR rule and count them.",
}
CODE = ("<Analyze>Look at the data.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
        "df = pd.read_csv('sales.csv')\nprint(df.groupby('region')['amount'].sum().to_string())\n```\n</Code>")
ANSWER = "<Understand>Done.</Understand>\n<Answer>north has the largest total, 30.</Answer>"


scripted_reply = RoleScript(lambda category, difficulty, file: TASKS[(category, difficulty)], CODE, ANSWER)


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    tmp_path.chmod(0o755)  # sandbox workers run as another uid and must reach the run dir
    src = tmp_path / "src"
    src.mkdir()
    (src / "sales.csv").write_text(CSV)
    checklists = tmp_path / "checklists"
    checklists.mkdir()
    for category in ("data_analysis", "data_cleaning"):
        (checklists / f"{category}.yaml").write_text(CHECKLIST.format(category=category))
    return {"root": tmp_path, "src": src, "checklists": checklists}


def _args(ws: dict[str, Path], out: Path, base_url: str) -> list[str]:
    return ["--sources", str(ws["src"]), "--out", str(out), "--model", "openai:fake", "--base-url", base_url,
            "--limit", "3", "--categories", "data_analysis,data_cleaning", "--difficulties", "easy,medium",
            "--checklists", str(ws["checklists"]), "--concurrency", "1", "--seed", "7", "--max-rounds", "4"]


def _cli(args: list[str], *, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "synth", "generate", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def _src_hash(ws) -> str:
    return hashlib.sha256((ws["src"] / "sales.csv").read_bytes()).hexdigest()


def test_sigkill_then_resume_equals_an_uninterrupted_run(workspace) -> None:
    ws = workspace
    before = _src_hash(ws)
    with FakeOpenAIServer(reply=scripted_reply, latency_s=0.25) as server:
        # Reference: one uninterrupted run.
        full = ws["root"] / "full"
        proc = _cli(_args(ws, full, server.base_url), cwd=ws["root"])
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output
        assert f"records: {full / 'records.jsonl'}" in output
        expected = _ids(full / "records.jsonl")
        assert len(expected) == 3 and len(set(expected)) == 3

        # Interrupted: SIGKILL as soon as the first record is on disk, mid-run.
        crashed = ws["root"] / "crashed"
        proc = _cli(_args(ws, crashed, server.base_url), cwd=ws["root"])
        records = crashed / "records.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (records.exists() and records.read_text().strip()):
            time.sleep(0.05)
        time.sleep(0.4)  # into the next episode's LLM calls
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        partial = _ids(records)
        assert 1 <= len(partial) < 3, "the kill must land mid-run"

        calls_before_resume = server.count
        proc = _cli(["--out", str(crashed), "--resume"], cwd=ws["root"])
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output
        resumed_calls = server.count - calls_before_resume

    final = _ids(records)
    assert sorted(final) == sorted(expected) and len(final) == len(set(final))
    assert final[: len(partial)] == partial  # nothing rewritten
    assert resumed_calls < 3 * 4  # finished episodes and cached replies cost no new calls
    stats = json.loads((crashed / "stats.json").read_text())
    assert stats["accepted"] == 3 and stats["rejected"] == 0
    assert sum(v.get("accepted", 0) for v in stats["by_category"].values()) == 3
    assert stats["checklist_items"]["sources_unchanged"]["pass_rate"] == 1.0
    assert _src_hash(ws) == before and sorted(p.name for p in ws["src"].iterdir()) == ["sales.csv"]


def test_run_dir_holds_config_stats_and_outputs(workspace) -> None:
    ws = workspace
    out = ws["root"] / "run"
    with FakeOpenAIServer(reply=scripted_reply) as server:
        log = io.StringIO()
        code = generate_command(dict(zip(["sources", "out", "model", "base_url", "limit", "categories",
                                          "difficulties", "checklists", "seed"],
                                         [ws["src"], out, "openai:fake", server.base_url, 2, ["data_analysis"],
                                          ["easy", "medium"], ws["checklists"], 3])), out=log)
    assert code == 0, log.getvalue()
    for name in ("config.yaml", "records.jsonl", "rejected.jsonl", "stats.json", "checkpoints.sqlite",
                 "cache.sqlite"):
        assert (out / name).exists(), name
    assert not (out / "work").exists()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["planned"] == 2 and stats["accepted"] == 2
    assert stats["by_difficulty"] == {"easy": {"accepted": 1}, "medium": {"accepted": 1}}
    assert stats["tokens"]["prompt"] > 0 and stats["llm_calls"] == 2 * 5  # questioner, verifier, solver x2, inspector
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert record["models"] == {"questioner": "openai:fake", "solver": "openai:fake", "inspector": "openai:fake"}
    assert "<Execute>\nregion\neast      7" in record["messages"][-1]["content"]
    # Running into the same dir without --resume is refused, and nothing there is touched.
    before = (out / "records.jsonl").read_bytes()
    log = io.StringIO()
    assert generate_command({"sources": ws["src"], "out": out}, out=log) == 2
    assert "not empty; pass --resume" in log.getvalue() and (out / "records.jsonl").read_bytes() == before
    # The stored config reruns the same plan.
    from synth.config import GenerateConfig

    stored = GenerateConfig.load(out / "config.yaml")
    assert stored.seed == 3 and stored.limit == 2 and stored.out == out


def test_resume_with_a_larger_limit_grows_the_run(workspace) -> None:
    ws = workspace
    out = ws["root"] / "grow"
    options = {"sources": ws["src"], "out": out, "model": "openai:fake", "limit": 1, "categories": ["data_analysis"],
               "difficulties": ["easy", "medium"], "checklists": ws["checklists"], "seed": 3}
    with FakeOpenAIServer(reply=scripted_reply) as server:
        options["base_url"] = server.base_url
        assert generate_command(options, out=io.StringIO()) == 0
        first = _ids(out / "records.jsonl")
        calls_per_episode = server.count
        log = io.StringIO()
        assert generate_command({"out": out, "resume": True, "limit": 2}, out=log) == 0, log.getvalue()
        calls_after_growth = server.count
        assert calls_after_growth == 2 * calls_per_episode  # only the new episode ran
        shrink = io.StringIO()
        assert generate_command({"out": out, "resume": True, "limit": 1}, out=shrink) == 2
        assert server.count == calls_after_growth
    grown = _ids(out / "records.jsonl")
    assert len(first) == 1 and grown[:1] == first and len(grown) == len(set(grown)) == 2
    assert "2 accepted, 0 rejected of 2 planned" in log.getvalue()
    assert "can only grow" in shrink.getvalue()
    from synth.config import GenerateConfig

    assert GenerateConfig.load(out / "config.yaml").limit == 2
    assert json.loads((out / "stats.json").read_text())["planned"] == 2


def test_clear_errors(workspace, tmp_path: Path) -> None:
    log = io.StringIO()
    assert generate_command({"sources": tmp_path / "missing"}, out=log) == 2
    assert "no such file or directory" in log.getvalue()
    log = io.StringIO()
    assert generate_command({"out": tmp_path / "nothing", "resume": True}, out=log) == 2
    assert "nothing to resume" in log.getvalue()
    log = io.StringIO()
    assert generate_command({"sources": workspace["src"], "out": workspace["src"] / "run"}, out=log) == 2
    assert "inside the source folder" in log.getvalue() and not (workspace["src"] / "run").exists()
    log = io.StringIO()
    assert generate_command({"sources": workspace["src"], "categories": ["cooking"]}, out=log) == 2
    assert "unknown category 'cooking'" in log.getvalue()
    empty = tmp_path / "empty"
    empty.mkdir()
    log = io.StringIO()
    assert generate_command({"sources": empty, "out": tmp_path / "r"}, out=log) == 2
    assert "no usable data sources" in log.getvalue()


def test_a_user_category_with_its_own_checklist_is_planned_and_inspected(workspace) -> None:
    ws = workspace
    (ws["checklists"] / "regional_sales.yaml").write_text(
        "category: regional_sales\nhint: questions about sales per region\nitems:\n"
        "  - rule: answer_present\n  - id: mentions_region\n    rule: answer_min_length\n"
        "    params: {chars: 5}\n")
    out = ws["root"] / "mine"
    with FakeOpenAIServer(reply=scripted_reply) as server:
        log = io.StringIO()
        code = generate_command({"sources": ws["src"], "out": out, "model": "openai:fake", "base_url": server.base_url,
                                 "categories": ["regional_sales"], "difficulties": ["easy"],
                                 "checklists": ws["checklists"], "limit": 1}, out=log)
        assert code == 0, log.getvalue()
        prompts = [m["content"] for call in server.requests for m in call.body["messages"]]
    [record] = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["category"] == "regional_sales"
    # the user's items, and the seeded task's own: no group-by on a measure (`amount` in the CSV)
    assert [i["id"] for i in record["verdict"]["items"]] == ["answer_present", "mentions_region",
                                                              "groupby_on_categories"]
    assert any("questions about sales per region" in text for text in prompts)  # the hint reached the questioner
    # Without --categories every category with a checklist is planned: the built-ins and the user's.
    from synth.config import GenerateConfig

    planned = GenerateConfig(sources=ws["src"], checklists=ws["checklists"]).categories
    assert "regional_sales" in planned and "data_analysis" in planned and "open_research" in planned


def test_a_second_process_on_a_run_dir_in_use_is_refused(workspace) -> None:
    ws = workspace
    out = ws["root"] / "busy"
    with FakeOpenAIServer(reply=scripted_reply, latency_s=0.3) as server:
        first = _cli(_args(ws, out, server.base_url), cwd=ws["root"])
        lock = out / ".lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        log = io.StringIO()
        assert generate_command({"out": out, "resume": True}, out=log) == 2
        assert f"in use by pid {first.pid}" in log.getvalue()
        output, _ = first.communicate(timeout=240)
        assert first.returncode == 0, output
        records = _ids(out / "records.jsonl")
        assert len(records) == 3 and len(set(records)) == 3  # the first run's records are intact
        # Once the first run is over, the run dir is free again.
        log = io.StringIO()
        assert generate_command({"out": out, "resume": True}, out=log) == 0, log.getvalue()
    assert _ids(out / "records.jsonl") == records


def test_tasks_from_the_user_with_and_without_references_and_a_bad_row(workspace) -> None:
    ws = workspace
    tasks = ws["root"] / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(r) for r in [
        {"id": "given", "instruction": "Which region has the largest total amount in sales.csv?",
         "files": ["sales.csv"], "reference": "north"},
        {"id": "verified", "instruction": "Name the region whose amounts sum highest in sales.csv.",
         "files": ["sales.csv"]},
        {"id": "bad", "instruction": "Mean amount?", "files": ["nope.csv"]},
    ]) + "\n")
    program = ("import pandas as pd\ndf = pd.read_csv('sales.csv')\n"
               "print('ANSWER:', df.groupby('region')['amount'].sum().idxmax())")
    out = ws["root"] / "tasks-run"
    with FakeOpenAIServer(reply=RoleScript(lambda *a: "unused", CODE, ANSWER, program)) as server:
        log = io.StringIO()
        code = generate_command({"sources": ws["src"], "tasks": tasks, "out": out, "model": "openai:fake",
                                 "base_url": server.base_url, "checklists": ws["checklists"]}, out=log)
        assert code == 0, log.getvalue()
        asked = [json.dumps(r.body["messages"]) for r in server.requests]
    assert "nope.csv" in log.getvalue() and "skipping task row" in log.getvalue()
    records = {r["task_id"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert set(records) == {"given", "verified"}
    assert records["given"]["reference"] == {"value": "north", "verified_by": "given", "program": None,
                                             "output": None}
    assert records["verified"]["reference"]["verified_by"] == "program"
    assert records["verified"]["reference"]["value"] == "north"
    assert not any("You write data-science tasks" in a for a in asked)  # no questioner for user tasks
    stats = json.loads((out / "stats.json").read_text())
    assert stats["planned"] == 2 and stats["accepted"] == 2
    assert len(stats["task_errors"]) == 1 and "nope.csv" in stats["task_errors"][0]
    assert stats["verification"]["accepted_by_reference"] == {"given": 1, "program": 1}
    assert stats["verification"]["accuracy_of_accepted_given"] == 1.0
    from synth.dataset.report import build_report, render_html

    report = build_report(out)
    assert report.verification["accepted_by_reference"] == {"given": 1, "program": 1}
    assert "Verification" in render_html(report) and "accuracy of accepted answers" in render_html(report)
