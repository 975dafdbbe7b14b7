"""Verified data with the real default embedded model: `synth generate --tasks` on a small table the test makes, no
references given. An accepted record must carry a reference its verifier PROGRAM computed in a fresh sandbox, and
that reference must equal the truth computed here with pandas; every accepted answer must agree with the truth.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from synth.config import GenerateConfig
from synth.generate import generate
from synth.matchers import answers_match

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_an_accepted_record_carries_a_program_verified_reference_equal_to_the_truth(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    frame = pd.DataFrame({"city": ["Lyon", "Oslo", "Lima", "Oslo", "Lyon", "Lima", "Oslo", "Lyon"],
                          "price": [12.5, 30.0, 7.25, 18.0, 9.5, 11.0, 22.5, 14.0]})
    frame.to_csv(src / "shop.csv", index=False)
    truth = {
        "mean": round(float(frame["price"].mean()), 2),
        "max_city": str(frame.loc[frame["price"].idxmax(), "city"]),
        "rows": int((frame["price"] > 12).sum()),
    }
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(row) for row in [
        {"id": "max_city", "instruction": "In shop.csv, which `city` has the row with the highest `price`?",
         "files": ["shop.csv"]},
        {"id": "rows", "instruction": "How many rows of shop.csv have a `price` greater than 12?",
         "files": ["shop.csv"]},
        {"id": "mean", "instruction": "What is the mean of the `price` column in shop.csv, rounded to 2 decimals?",
         "files": ["shop.csv"]},
    ]) + "\n")
    run = tmp_path / "run"
    for limit in (1, 2, 3):
        config = GenerateConfig(sources=src, tasks=tasks, out=run, model="embedded?seed=0", concurrency=1,
                                mode="session", max_rounds=5, max_revisions=1, limit=limit, resume=limit > 1)
        summary = asyncio.run(generate(config, out=io.StringIO(), live=False))
        records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
        if records:
            break
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    assert len(records) + len(rejected) == summary.planned == limit

    verified = [r for r in records if r["reference"] and r["reference"]["verified_by"] in ("program", "consensus")]
    assert verified, f"no program-verified record: {[(r['task_id'], r['reason']) for r in rejected]}"
    for record in verified:
        expected = truth[record["task_id"]]
        assert answers_match(str(record["reference"]["value"]), expected, rel_tolerance=0.01), record["reference"]
        assert "ANSWER:" in record["reference"]["output"] and "shop.csv" in record["reference"]["program"]
        assert record["reward_spec"]["method"] == "qa"
    for record in records:  # what the gate accepted is right
        answer = record["messages"][-1]["content"].rsplit("<Answer>", 1)[-1]
        assert answers_match(answer, truth[record["task_id"]], rel_tolerance=0.01), (record["task_id"], answer)
