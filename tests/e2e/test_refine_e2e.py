"""`synth refine` with the real embedded model (0.5B) on 3 easy items of the real WikiTQ training sample: every
emitted record parses with the protocol parser, matches its reference, and stats count what was dropped."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from synth.config import RefineConfig
from synth.dataset.record import read_records
from synth.matchers import match_rules
from synth.protocol import parse, validate
from synth.refine import refine
from synth.refiner import missing_keywords
from synth.roles import BUILTIN_ROLES_DIR

pytestmark = pytest.mark.e2e

# Short lookups over small tables: the ones a 0.5B model can answer.
EASY_ITEMS = ("nt-1596", "nt-14147", "nt-2472")


def _wikitq_subset(source: Path, target: Path, ids: tuple[str, ...]) -> Path:
    """A WikiTQ layout holding only `ids` (copied; the shared sample is only read)."""
    lines = (source / "questions.tsv").read_text(encoding="utf-8").splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if line.split("\t")[0] in ids]
    assert len(keep) == len(ids) + 1
    for line in keep[1:]:
        table = line.split("\t")[2]
        (target / table).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / table, target / table)
    (target / "questions.tsv").write_text("\n".join(keep) + "\n", encoding="utf-8")
    return target


def _short_refiner(roles: Path) -> Path:
    """The built-in refiner role with small output caps (a 0.5B model that rambles must not eat the CI budget) and
    greedy decoding."""
    role = yaml.safe_load((BUILTIN_ROLES_DIR / "refiner.yaml").read_text(encoding="utf-8"))
    for step in ("distill", "reformulate", "refine"):
        role["params"][step]["max_tokens"] = 220
        role["params"][step]["temperature"] = 0.0  # greedy: the same answers on every run (sampling made CI flaky)
    roles.mkdir()
    (roles / "refiner.yaml").write_text(yaml.safe_dump(role, sort_keys=False), encoding="utf-8")
    return roles


def test_embedded_model_refines_easy_wikitq_items(shared_data: Path, tmp_path: Path) -> None:
    data = _wikitq_subset(shared_data / "instruct" / "wikitq_train_sample", tmp_path / "wtq", EASY_ITEMS)
    config = RefineConfig(input=data, format="wikitq", out=tmp_path / "run", model="embedded:0.5b",
                          concurrency=1, keywords_per_trace=1, max_distill_attempts=1, max_refine_attempts=1, seed=0,
                          roles=_short_refiner(tmp_path / "roles"))
    summary = asyncio.run(refine(config, out=io.StringIO(), live=False))
    run = tmp_path / "run"
    records = read_records(run / "records.jsonl")
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    assert records, f"no record emitted; rejected: {json.dumps(rejected)[:3000]}"
    assert summary.errors == 0
    for record in records:
        assert record.kind == "reasoning" and record.variant in ("distilled", "refined")
        assert validate(record.completion, require_answer=True, model_written=True) == []
        assert [a.kind for a in parse(record.completion).actions] == ["Analyze", "Understand", "Answer"]
        assert match_rules(parse(record.completion).answer, record.reference.value).matched
        assert record.sources[0].name.split(":", 1)[1] in EASY_ITEMS
        if record.variant == "refined":
            assert missing_keywords(record.completion, record.keywords) == []
    stats = json.loads((run / "stats.json").read_text())
    distilled = [r for r in records if r.variant == "distilled"]
    dropped = [r for r in rejected if r["stage"] == "distill"]
    assert stats["distill"]["verified"] == len(distilled) and stats["distill"]["failed"] == len(dropped)
    assert len(distilled) + len(dropped) == len(EASY_ITEMS)
    assert stats["refine"]["kept"] + stats["refine"]["rejected"] == len(distilled)
    assert sum(v["sampled"] for v in stats["keywords"].values()) == len(distilled)
