"""`synth generate` with the real default embedded model (Qwen2.5-Coder-1.5B; the 0.5B cannot find its way around a
12-table database) on the real Chinook database.

Episodes are added one at a time (`--resume` with a larger limit) until one is accepted, at most four: the run must
yield an accepted record whose every <Execute> block equals what re-running its code in a fresh sandbox prints.
Whatever else the small model does, the pipeline's promises must hold: every planned episode ends in exactly one of
records.jsonl / rejected.jsonl, stats agree with the files, every verdict explains every item, every <Execute> block
of a rejected trajectory is real too, and the source is untouched.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from synth.config import GenerateConfig
from synth.generate import generate
from synth.protocol import extract_code, parse, validate
from synth.sandbox import get_sandbox
from synth.trajectory import Trajectory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _replay(source: Path, mode: str, cells: list[tuple[str, str]]) -> None:
    session = get_sandbox("local").open([source], mode=mode)
    try:
        for code, shown in cells:
            assert session.run(code).output() == shown, f"replayed output differs for:\n{code}"
    finally:
        session.close()


def test_generate_on_chinook_accepts_a_record_and_keeps_its_promises(shared_data: Path, tmp_path: Path) -> None:
    source_dir = shared_data / "sources" / "chinook"
    database = source_dir / "Chinook_Sqlite.sqlite"
    before = {p.name: p.read_bytes() for p in source_dir.iterdir() if p.is_file()}
    run = tmp_path / "run"
    for limit in (1, 2, 3, 4):
        config = GenerateConfig(
            sources=source_dir, out=run, model="embedded?seed=0", limit=limit, resume=limit > 1, concurrency=1,
            categories=["data_analysis"], difficulties=["easy"], mode="session", max_rounds=6, max_revisions=1,
            seed=0,
        )
        summary = asyncio.run(generate(config, out=io.StringIO(), live=False))
        records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
        if records:
            break
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    stats = json.loads((run / "stats.json").read_text())

    assert records, f"no accepted record in {limit} episodes: {[r['reason'] for r in rejected]}"
    assert len(records) + len(rejected) == limit == summary.planned == stats["planned"]
    assert stats["accepted"] == len(records) and stats["rejected"] == len(rejected)
    assert len({r["id"] for r in records}) == len(records)
    assert len({r["episode_id"] for r in rejected}) == len(rejected)

    for record in records:
        assert record["verdict"]["decision"] == "accept"
        # every required item passed, except judged items the judge could not back with a real quote: those are
        # marked not judged (they neither pass nor block), and no rule is ever left unjudged
        assert all(item["passed"] or not item.get("required", True) or item.get("not_judged")
                   for item in record["verdict"]["items"])
        assert all(item["passed"] for item in record["verdict"]["items"]
                   if item["kind"] == "rule" and item.get("required", True))
        text = record["messages"][-1]["content"]
        assert not [i for i in validate(text) if i.code != "not_starting_with_analyze"], validate(text)
        actions = parse(text).actions
        codes = [extract_code(a.content) for a in actions if a.kind == "Code"]
        shown = [a.content for a in actions if a.kind == "Execute"]
        assert codes and len(codes) == len(shown)
        assert all(s.startswith("\n") and s.endswith("\n") for s in shown)
        _replay(database, record["mode"], [(c, s[1:-1]) for c, s in zip(codes, shown)])

    for row in [row for row in rejected if row.get("trajectory")]:
        verdict = row["verdict"]
        assert verdict["decision"] in {"revise", "reject"} and verdict["items"]
        assert all(item["reason"] for item in verdict["items"])
        trajectory = Trajectory.from_dict(row["trajectory"])
        _replay(database, trajectory.mode, [(t.code, t.result.output()) for t in trajectory.turns if t.code])

    assert {p.name: p.read_bytes() for p in source_dir.iterdir() if p.is_file()} == before
