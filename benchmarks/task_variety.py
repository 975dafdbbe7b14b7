"""Are the tasks grounded in the data? One `synth generate` run over the demo sources and Chinook, then a count.

    python benchmarks/task_variety.py [--model embedded] [--limit 12] [--out DIR]

Prints, over every planned episode (accepted or rejected): the task kinds the seeds chose and their number, every
group-by key the solver's code used with the role the DataCard gives that column (a column that is a `measure`
wherever it occurs is a group-by on a continuous column; a `key` — a group per customer or album — is shown, not
counted against), and for each "hard" episode the number of different code cells its final trajectory ran (a cell
re-run unchanged is no new step), with the share of hard ACCEPTED records that have at least 3.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.checklist.execution_rules import groupby_keys  # noqa: E402
from synth.config import GenerateConfig  # noqa: E402
from synth.generate import generate  # noqa: E402
from synth.protocol import extract_code, parse  # noqa: E402
from synth.seeds import continuous_columns, roles_by_name  # noqa: E402
from synth.sources import profile_all  # noqa: E402
from synth.sources.demo import write_demo_sources  # noqa: E402
from synth.trajectory import code_key  # noqa: E402


def _codes(row: dict) -> list[str]:
    if "messages" in row:
        return [extract_code(a.content) for a in parse(row["messages"][-1]["content"]).of_kind("Code")]
    return [t["code"] for t in (row.get("trajectory") or {}).get("turns", []) if t.get("code")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--chinook", type=Path, default=REPO.parent / "shared" / "data" / "sources" / "chinook" /
                        "Chinook_Sqlite.sqlite")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="ds-synth-variety-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    sources = root / "sources"
    if not sources.exists():
        write_demo_sources(sources)
        shutil.copyfile(args.chinook, sources / args.chinook.name)
    run = root / "run"
    config = GenerateConfig(sources=sources, out=run, model=args.model, limit=args.limit,
                            concurrency=args.concurrency, mode="session", resume=run.exists())
    asyncio.run(generate(config, out=io.StringIO(), live=False))
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines() if line.strip()]
    cards = profile_all(sources)
    continuous = {name.lower() for name in continuous_columns(cards)}
    roles: dict[str, set[str]] = {}
    for name, seen in roles_by_name(cards).items():
        roles.setdefault(name.lower(), set()).update(seen)
    kinds: Counter = Counter()
    bad_groups, groups, hard = [], [], []
    for row, accepted in [(r, True) for r in records] + [(r, False) for r in rejected]:
        seed = row.get("seed") if accepted else (row.get("task") or {}).get("seed")
        kinds[(seed or {}).get("kind", "none")] += 1
        for code in _codes(row):
            for column in groupby_keys(code):
                groups.append((column, "/".join(sorted(roles.get(column.lower(), {"unknown"})))))
                if column.lower() in continuous:
                    bad_groups.append(column)
        if row.get("difficulty") == "hard":
            hard.append((accepted, len({code_key(c) for c in _codes(row)}), bool(row.get("task") or accepted)))
    print(f"{len(records)} accepted, {len(rejected)} rejected of {args.limit} planned episodes (run: {run})")
    print(f"task kinds ({len(kinds)} distinct): " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    print(f"group-by keys in the solver's code: {len(groups)}; on a continuous column: {len(bad_groups)} "
          f"{bad_groups or ''}")
    if groups:
        print("  " + ", ".join(f"{c} ({r})" for c, r in groups))
    accepted_hard = [cells for ok, cells, _ in hard if ok]
    print(f"hard episodes: {len(hard)} ({sum(not t for *_, t in hard)} without a task), different cells per final "
          f"trajectory: {[c for _, c, _ in hard]}; accepted hard records with >= 3: "
          f"{sum(c >= 3 for c in accepted_hard)}/{len(accepted_hard)}")


if __name__ == "__main__":
    main()
