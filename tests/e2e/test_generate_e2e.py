"""`synth generate` with the real default embedded model (Qwen2.5-Coder-1.5B; the 0.5B cannot find its way around a
12-table database) on the real Chinook database: at least one ACCEPTED
record, and every <Execute> block in it equals what re-running its code in a fresh sandbox prints."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from synth.config import GenerateConfig
from synth.protocol import extract_code, parse
from synth.run import generate
from synth.sandbox import get_sandbox

pytestmark = pytest.mark.e2e


def test_embedded_model_yields_an_accepted_authentic_record(shared_data: Path, tmp_path: Path) -> None:
    source_dir = shared_data / "sources" / "chinook"
    before = {p.name: p.read_bytes() for p in source_dir.iterdir() if p.is_file()}
    tmp_path.chmod(0o755)
    config = GenerateConfig(
        sources=source_dir, out=tmp_path / "run", model="embedded", limit=2,
        categories=["data_analysis"], difficulties=["easy"], max_rounds=4, max_revisions=1, seed=0,
    )
    log = io.StringIO()
    summary = asyncio.run(generate(config, out=log, live=False))
    records = [json.loads(line) for line in summary.records_path.read_text().splitlines()]
    assert records, f"no accepted record; rejected: {(tmp_path / 'run' / 'rejected.jsonl').read_text()[:3000]}"
    record = records[0]
    assert record["verdict"]["decision"] == "accept"
    text = record["messages"][-1]["content"]
    actions = parse(text).actions
    codes = [extract_code(a.content) for a in actions if a.kind == "Code"]
    shown = [a.content for a in actions if a.kind == "Execute"]
    assert codes and len(codes) == len(shown)
    session = get_sandbox("local").open([source_dir / "Chinook_Sqlite.sqlite"], mode=record["mode"])
    try:
        for code, block in zip(codes, shown):
            assert f"\n{session.run(code).output()}\n" == block
    finally:
        session.close()
    assert {p.name: p.read_bytes() for p in source_dir.iterdir() if p.is_file()} == before
