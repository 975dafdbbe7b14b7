"""Run reports: numbers computed from records/rejected, terminal summary, HTML rendered in headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from test_filters import record

from synth.checklist import ItemVerdict, Verdict
from synth.dataset.record import write_records
from synth.dataset.report import ReportError, build_report, render_trajectory, write_html
from synth.sandbox.base import ExecResult
from synth.trajectory import Trajectory, Turn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _verdict(decision: str, failed: list[str]) -> dict:
    items = [ItemVerdict(id=i, kind="rule", passed=i not in failed, reason="r") for i in
             ("has_answer", "file_created", "sources_unchanged")]
    return Verdict(items=items, decision=decision, score=0.5).model_dump(mode="json")


def make_report_run(folder: Path) -> Path:
    records = []
    for i, (category, difficulty, cells) in enumerate([("data_analysis", "easy", 1), ("data_analysis", "hard", 3),
                                                       ("data_cleaning", "medium", 2)]):
        r = record(f"Task number {i} about the sales table", category=category, cells=cells, rid=f"acc{i}")
        r.difficulty = difficulty
        r.revisions = i % 2
        r.usage = {"prompt_tokens": 1000, "completion_tokens": 250, "cost_usd": 0.01, "llm_calls": 3}
        r.verdict = Verdict.model_validate(_verdict("accept", []))
        records.append(r)
    write_records(folder / "records.jsonl", records)
    traj = Trajectory(prompt="# Instruction\nClean the table.", turns=[
        Turn(text="<Analyze>\nLoad it.\n</Analyze>\n<Code>\n```python\nprint(1/0)\n```\n</Code>", code="print(1/0)",
             result=ExecResult(error="Traceback ...\nZeroDivisionError: division by zero")),
        Turn(text="<Answer>\nDone <b>bold</b>\n</Answer>")])
    rows = [{"episode_id": "ep-1", "category": "data_cleaning", "difficulty": "hard", "reason": "required item failed",
             "verdict": _verdict("reject", ["file_created"]),
             "verdicts": [_verdict("revise", ["file_created", "has_answer"]), _verdict("reject", ["file_created"])],
             "revisions": 1, "trajectory": traj.to_dict(),
             "usage": {"prompt_tokens": 500, "completion_tokens": 100, "cost_usd": 0.005, "llm_calls": 2}}]
    (folder / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "stats.json").write_text(json.dumps({"wall_time_s": 42.0}))
    return folder


def test_numbers(tmp_path):
    report = build_report(make_report_run(tmp_path))
    assert (report.accepted, report.rejected) == (3, 1)
    assert report.by_category == {"data_analysis": {"accepted": 2, "rejected": 0},
                                  "data_cleaning": {"accepted": 1, "rejected": 1}}
    assert report.by_difficulty["hard"] == {"accepted": 1, "rejected": 1}
    assert report.failed_items[0] == ("file_created", 2, 5) and report.failed_items[1] == ("has_answer", 1, 5)
    assert report.revisions == {0: 2, 1: 2}
    assert report.tokens == {"prompt": 3500, "completion": 850}
    assert report.cost_usd == pytest.approx(0.035) and report.llm_calls == 11
    assert sorted(report.turns) == [2, 3, 4] and report.wall_time_s == 42.0
    assert report.accepted_example["title"].endswith("acc1")  # the longest one
    assert "ZeroDivisionError" in report.rejected_example["assistant"]


def test_terminal_summary(tmp_path):
    from rich.console import Console

    from synth.dataset.report import print_summary

    buffer = io.StringIO()
    print_summary(build_report(make_report_run(tmp_path)), Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "3 accepted, 1 rejected (acceptance 75%)" in text and "file_created" in text and "$0.0350" in text


def test_trajectory_rendering_escapes_and_collapses_execute():
    text = ("<Analyze>\nplan <script>\n</Analyze>\n<Code>\nprint(1)\n</Code>\n<Execute>\n1\n2\n</Execute>\n"
            "<Answer>\nok\n</Answer>")
    out = render_trajectory(text)
    assert "&lt;script&gt;" in out and "<script>" not in out
    assert '<details class="act act-execute"' in out and "Execute output (2 lines)" in out
    assert out.count('class="act ') == 4


def test_bad_run_dir(tmp_path):
    with pytest.raises(ReportError, match="not a run directory"):
        build_report(tmp_path)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    run = make_report_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", str(run), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "Acceptance by category" in result.output and (tmp_path / "r.html").is_file()
    assert CliRunner().invoke(app, ["report", str(tmp_path / "none")]).exit_code == 1


def test_html_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the headless browser")
    from PIL import Image, ImageStat

    page_path = write_html(build_report(make_report_run(tmp_path)), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(page_path.as_uri())
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
            details_open = page.eval_on_selector_all("details", "els => els.map(e => e.open)")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) == 4 and all(w > 100 and h > 50 for w, h in images)  # every plot decoded
    assert details_open == [False] * 4  # 3 + 1 Execute outputs, all collapsed
    image = Image.open(shot).convert("L")
    assert image.size[1] > 900 and ImageStat.Stat(image).stddev[0] > 10  # a tall page, not blank
