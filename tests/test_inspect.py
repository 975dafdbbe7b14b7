"""`synth inspect`: every input format, every Execute class, malformed rows — with the real sandbox and real files.

Trajectories are made here the way the agent loop makes them: each cell really runs in a sandbox session and its
output becomes the <Execute> block; tampering is then done on the text, as a user's data would be tampered with.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.dataset.inspect import InspectConfig, inspect_data
from synth.dataset.record import Record, write_records
from synth.dataset.trajectories import read_trajectories
from synth.protocol import build_user_prompt
from synth.sandbox import get_sandbox
from synth.sources.ref import source_refs
from synth.trajectory import Trajectory, Turn

INSTRUCTION = "What is the total of the units column in sales.csv?"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    with open(folder / "sales.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["region", "units", "price"])
        writer.writerows([["north", 3, 2.5], ["south", 4, 4.0], ["east", 5, 1.25], ["north", 2, 2.5]])
    return folder


def run_cells(files: list[Path], codes: list[str], answer: str, *, mode: str = "script",
              instruction: str = INSTRUCTION) -> Trajectory:
    """A trajectory whose Execute blocks are what a real sandbox printed for each cell."""
    session = get_sandbox("local").open(files, mode=mode)
    try:
        prompt = build_user_prompt(instruction, files)
        traj = Trajectory(prompt=prompt, mode=mode)
        for n, code in enumerate(codes, start=1):
            text = f"<Analyze>Step {n}: look at the data.</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>"
            traj.turns.append(Turn(text=text, code=code, result=session.run(code, timeout=30)))
    finally:
        session.close()
    traj.turns.append(Turn(text=f"<Understand>The output shows it.</Understand>\n<Answer>{answer}</Answer>"))
    traj.answer = answer
    return traj


TOTAL = ["import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.columns.tolist())",
         "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint('total units:', df['units'].sum())"]


def record(src: Path, codes=TOTAL, answer="The total of the units column is 14.", **kw) -> Record:
    files = [src / "sales.csv"]
    traj = run_cells(files, codes, answer, **kw)
    return Record.from_trajectory(traj, category="data_analysis", sources=source_refs(files))


def messages_row(rec: Record) -> dict:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in rec.messages]}


async def audit(tmp_path: Path, data: Path, **options) -> list[dict]:
    summary = await inspect_data(InspectConfig(data=data, out=tmp_path / "out", **options))
    assert (summary.out / "stats.json").is_file() and (summary.out / "report.html").is_file()
    rows = [json.loads(line) for line in summary.verdicts_path.read_text().splitlines()]
    assert rows == summary.rows
    return rows


def classes(row: dict) -> list[str]:
    return [b["class"] for b in row["blocks"]]


# --- formats -------------------------------------------------------------------------------------------------------


async def test_our_run_directory_reproduces_and_an_edited_block_is_found(tmp_path, src):
    run = tmp_path / "run"
    rec = record(src)
    tampered = rec.model_copy(update={"id": "tampered", "messages": [
        rec.messages[0], {"role": "assistant", "content": rec.completion.replace("total units: 14", "total units: 15")}]})
    write_records(run / "records.jsonl", [rec, tampered])
    (run / "config.yaml").write_text(f"sources: {src}\n")  # where the run found its sources
    honest, edited = await audit(tmp_path, run)
    assert honest["format"] == "record" and honest["mode_source"] == "recorded"
    assert classes(honest) == ["identical", "identical"] and honest["accepted"], honest["failed_items"]
    assert classes(edited) == ["identical", "different"]  # exactly the edited block
    assert "total units: 15" in edited["blocks"][1]["detail"] and "total units: 14" in edited["blocks"][1]["detail"]
    assert not edited["accepted"] and edited["decision"] == "reject"
    assert "execute_blocks_authentic" in edited["failed_items"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["blocks"] == {"identical": 3, "normalized": 0, "different": 1, "not_reproducible": 0}
    assert stats["authenticity_rate"] == 0.75 and stats["rows_with_different_blocks"] == 1


async def test_ms_swift_json_and_trl_messages_jsonl(tmp_path, src):
    rec = record(src)
    swift = tmp_path / "swift.json"
    swift.write_text(json.dumps([messages_row(rec)]))
    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({**messages_row(rec), "execute_spans": [[0, 1]], "category": "data_analysis"}) + "\n")
    for data in (swift, trl):
        (row,) = await audit(tmp_path, data, sources=src)
        assert row["format"] == "messages" and classes(row) == ["identical", "identical"]
        assert row["mode"] == "script" and row["mode_source"].startswith("detected")
        assert row["accepted"], row["failed_items"]


async def test_rl_parquet_with_a_workspace_archive(tmp_path, src):
    rec = record(src)
    folder = tmp_path / "rl"
    (folder / "workspaces").mkdir(parents=True)
    with tarfile.open(folder / "workspaces" / "ws1.tar.gz", "w:gz") as tar:
        tar.add(src / "sales.csv", arcname="sales.csv")
    prompt_only = {"id": "p1", "prompt": [rec.messages[0]], "workspace": "workspaces/ws1.tar.gz",
                   "reward_spec": {"method": "qa", "ground_truth": json.dumps("14"), "checklist": "[]"},
                   "completion": None}  # an rl export row: a prompt, no trajectory
    rollout = {**prompt_only, "id": "p2", "completion": rec.completion}
    broken = {**prompt_only, "id": "p3", "completion": rec.completion, "workspace": "workspaces/none.tar.gz"}
    pq.write_table(pa.Table.from_pylist([prompt_only, rollout, broken]), folder / "rl.parquet")
    only, replayed, missing = await audit(tmp_path, folder / "rl.parquet")
    assert only["status"] == "no_trajectory" and only["files"]["found"] == ["sales.csv"]
    assert replayed["format"] == "rl" and classes(replayed) == ["identical", "identical"]
    answer = next(v for v in replayed["verdict"]["items"] if v["id"] == "answer_present")
    assert answer["passed"]
    assert classes(missing) == ["not_reproducible", "not_reproducible"]  # the archive is not there
    assert "missing file(s): sales.csv" in missing["blocks"][0]["detail"]


async def test_upstream_workspace_id_under_workspaces(tmp_path, src):
    rec = record(src)
    workspaces = tmp_path / "workspaces"
    (workspaces / "task-7").mkdir(parents=True)
    (workspaces / "task-7" / "sales.csv").write_bytes((src / "sales.csv").read_bytes())
    data = tmp_path / "interaction.jsonl"
    data.write_text(json.dumps({**messages_row(rec), "workspace_id": "task-7"}) + "\n"
                    + json.dumps(messages_row(rec)) + "\n")  # no id: found by the files the prompt names
    by_id, by_files = await audit(tmp_path, data, workspaces=workspaces)
    assert classes(by_id) == classes(by_files) == ["identical", "identical"]


# --- Execute classes ----------------------------------------------------------------------------------------------


async def test_normalized_blocks_forgive_paths_and_float_noise(tmp_path, src):
    codes = ["import os\nprint(os.path.abspath('sales.csv'))", "print(0.1 + 0.2)\nprint('x  =', 1)"]
    rec = record(src, codes=codes, answer="The file is sales.csv and the sum is 0.3.")
    text = rec.completion
    shown = [line for line in text.splitlines() if line.endswith("/sales.csv")][0]
    text = text.replace(shown, "/home/someone/project/sales.csv").replace("0.30000000000000004", "0.3")
    text = text.replace("x  = 1", "x = 1   ")
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"messages": [rec.messages[0], {"role": "assistant", "content": text}]}) + "\n")
    (row,) = await audit(tmp_path, data, sources=src)
    assert classes(row) == ["normalized", "normalized"]
    authentic = next(v for v in row["verdict"]["items"] if v["id"] == "execute_blocks_authentic")
    assert authentic["passed"] and "2 normalized" in authentic["reason"]


async def test_not_reproducible_missing_file_and_randomness(tmp_path, src):
    rec = record(src, codes=["print(1 + 1)", "import pandas as pd\nprint(pd.read_csv('sales.csv').shape)"],
                 answer="The table has 4 rows.")
    empty = tmp_path / "empty"
    empty.mkdir()
    data = tmp_path / "missing.jsonl"
    data.write_text(json.dumps(messages_row(rec)) + "\n")
    (row,) = await audit(tmp_path, data, sources=empty)
    assert classes(row) == ["identical", "not_reproducible"]  # print(1 + 1) needs no file
    assert row["files"]["missing"] == ["sales.csv"] and "missing file(s): sales.csv" in row["blocks"][1]["detail"]
    authentic = next(v for v in row["verdict"]["items"] if v["id"] == "execute_blocks_authentic")
    assert authentic["not_judged"] and not authentic["passed"]  # unverifiable is not "tampered"
    # the rules read the recorded output where the replay could not stand in for it
    assert "no_unresolved_errors" not in row["failed_items"]

    rnd = record(src, codes=["import random\nprint(random.random())"], answer="A random number was drawn.")
    data = tmp_path / "random.jsonl"
    data.write_text(json.dumps(messages_row(rnd)) + "\n")
    (row,) = await audit(tmp_path, data, sources=src, category="data_analysis")
    assert classes(row) == ["not_reproducible"] and "non-deterministic" in row["blocks"][0]["detail"]
    assert "replay_reproduces" in row["failed_items"]


async def test_session_mode_is_detected_and_a_source_that_changed_is_reported(tmp_path, src):
    codes = ["import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(len(df))", "print(df['units'].sum())"]
    rec = record(src, codes=codes, answer="The total of the units column is 14.", mode="session")
    data = tmp_path / "session.jsonl"
    data.write_text(json.dumps(messages_row(rec)) + "\n")
    (row,) = await audit(tmp_path, data, sources=src)
    assert row["mode"] == "session" and "'df'" in row["mode_source"]
    assert classes(row) == ["identical", "identical"]
    # our record carries the source's hash: a file that changed since is named, and its blocks are unverifiable
    run = tmp_path / "run"
    write_records(run / "records.jsonl", [rec])
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "sales.csv").write_text((src / "sales.csv").read_text().replace("north,3", "north,30"))
    (row,) = await audit(tmp_path, run, sources=changed)
    assert "sources_unchanged" in row["failed_items"] and not row["accepted"]
    assert classes(row) == ["identical", "not_reproducible"]  # the row count did not change, the total did
    assert "not the file the record was made on" in row["blocks"][1]["detail"]


# --- malformed rows --------------------------------------------------------------------------------------------


async def test_malformed_rows_get_a_reason_and_the_rest_continue(tmp_path, src):
    rec = record(src)
    good = json.dumps(messages_row(rec))
    unclosed = rec.completion.replace("</Answer>", "")
    lines = [
        good.encode(),
        b'{"messages": [{"role": "user", "content": "# Instruction\\nq"}',  # cut JSON
        b'{"messages": "\xff\xfe"}',  # not UTF-8
        json.dumps({"messages": [rec.messages[0], {"role": "assistant", "content": "a"},
                                 {"role": "assistant", "content": "b"}]}).encode(),
        json.dumps({"messages": [rec.messages[0], {"role": "assistant", "content": unclosed}]}).encode(),
        json.dumps({"messages": [rec.messages[0], {"role": "assistant", "content": "Just prose, no tags."}]}).encode(),
        json.dumps({"text": "hello"}).encode(),
        json.dumps({"messages": [rec.messages[0], {"role": "assistant", "content": rec.completion + "x" * 5000}]}).encode(),
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    rows = await audit(tmp_path, data, sources=src, max_chars=4000)
    by_line = {r["where"].rsplit(":", 1)[1]: r for r in rows}
    assert by_line["1"]["status"] == "inspected" and by_line["1"]["accepted"]
    assert by_line["2"]["status"] == "error" and "not valid JSON" in by_line["2"]["reason"]
    assert "not UTF-8" in by_line["3"]["reason"]
    assert "ONE assistant message" in by_line["4"]["reason"] and "'assistant', 'assistant'" in by_line["4"]["reason"]
    assert by_line["5"]["status"] == "inspected" and "protocol_valid" in by_line["5"]["failed_items"]
    assert any("unclosed_tag" in issue for issue in by_line["5"]["protocol_issues"])
    assert "not a five-action trajectory" in by_line["6"]["reason"]
    assert "no trajectory here" in by_line["7"]["reason"]
    assert "row too large" in by_line["8"]["reason"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rows"] == 8 and stats["inspected"] == 2 and stats["errors"] == 6


def test_reading_without_replay_and_unknown_inputs(tmp_path):
    from synth.dataset.trajectories import AuditInputError

    with pytest.raises(AuditInputError, match="no such file"):
        list(read_trajectories(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(AuditInputError, match="unsupported input"):
        list(read_trajectories(tmp_path / "x.csv"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AuditInputError, match="not valid JSON"):
        list(read_trajectories(tmp_path / "bad.json"))


async def test_no_replay_checks_the_recorded_outputs(tmp_path, src):
    rec = record(src)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(messages_row(rec)) + "\n")
    (row,) = await audit(tmp_path, data, sources=src, replay=False)
    assert row["blocks"] == [] and row["accepted"]
    grounded = next(v for v in row["verdict"]["items"] if v["id"] == "answer_grounded")
    assert grounded["passed"]  # read from the recorded <Execute> blocks
    authentic = next(v for v in row["verdict"]["items"] if v["id"] == "execute_blocks_authentic")
    assert authentic["not_judged"] and "--no-replay" in authentic["reason"]


# --- judged items, the command ---------------------------------------------------------------------------------


async def test_judged_items_need_quotes_and_stats_count_the_empty_ones(tmp_path, src, scripted_model):
    from synth.dataset.inspect import inspect_data

    rec = record(src)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(messages_row(rec)) + "\n")

    def judge(messages):
        ids = [line.split(":")[0].removeprefix("- id ").strip() for line in messages[-1]["content"].splitlines()
               if line.startswith("- id ")]
        quoted = {"answers_the_question": "The total of the units column is 14."}
        return json.dumps({"answers": [{"id": i, "quote": quoted.get(i, "total units: 99"), "pass": True,
                                        "reason": "the printed total 14 matches the stated total"} for i in ids]})

    summary = await inspect_data(InspectConfig(data=data, out=tmp_path / "out", sources=src,
                                               inspector_model="embedded:0.5b"),
                                 model=scripted_model([judge]))
    (row,) = summary.rows
    items = {v["id"]: v for v in row["verdict"]["items"]}
    assert items["answers_the_question"]["passed"] and items["answers_the_question"]["evidence"]
    assert items["numbers_from_outputs"]["not_judged"]  # "total units: 99" is not in the trajectory
    assert summary.stats["judged"] == {"inspector": "embedded:0.5b", "votes": 1, "verdicts": 3, "empty": 2,
                                       "weak_evidence": True}


def test_command_prints_a_summary_and_one_line_errors(tmp_path, src):
    from synth.commands.inspect import inspect

    rec = record(src)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(messages_row(rec)) + "\n")
    out = io.StringIO()
    assert inspect({"sources": src, "out": tmp_path / "o"}, data=data, out=out) == 0
    text = out.getvalue()
    assert "1 rows: 1 inspected" in text and "2 identical" in text and "authenticity 100.0%" in text
    assert (tmp_path / "o" / "report.html").read_text().count("identical") >= 1
    out = io.StringIO()
    assert inspect({}, data=tmp_path / "missing.jsonl", out=out) == 2
    assert out.getvalue().startswith("error: ") and out.getvalue().count("\n") == 1
    out = io.StringIO()
    assert inspect({"category": "no_such_category", "out": tmp_path / "p"}, data=data, out=out) == 2
    assert "no checklist for category" in out.getvalue()


def test_one_archive_resolved_from_many_threads_is_unpacked_once(tmp_path, src):
    from concurrent.futures import ThreadPoolExecutor

    from synth.dataset.trajectories import AuditRow
    from synth.dataset.workspaces import FileResolver

    archive = tmp_path / "ws.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "sales.csv", arcname="sales.csv")
    resolver = FileResolver(sources=None, workspaces=None, cache_dir=tmp_path / "cache")
    prompt = build_user_prompt(INSTRUCTION, [src / "sales.csv"])
    rows = [AuditRow(id=f"r{n}", where=f"row {n}", format="rl", prompt=prompt, workspace=archive) for n in range(16)]
    with ThreadPoolExecutor(8) as pool:
        resolved = list(pool.map(resolver.resolve, rows))
    assert all(r.missing == [] and r.files["sales.csv"].read_bytes() == (src / "sales.csv").read_bytes()
               for r in resolved)
    assert len({r.files["sales.csv"] for r in resolved}) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".part")] == []
