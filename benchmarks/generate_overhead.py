"""Orchestration overhead of `synth generate` and how throughput scales with --concurrency.

1. Per-episode overhead (graph + SQLite checkpoints + sandbox cells + checklist rules + writes) with a
   FakeOpenAIServer answering instantly: wall time per episode in ms.
2. Throughput with a 200 ms-latency server at concurrency 1 and 8: episodes/s and the speed-up ratio (goal ≥ 6×).
   Throughput is a steady-state figure: with only two waves of 8 the last, uneven wave dominates, so the default
   workload is 48 distinct episodes (6 waves).

Run: python benchmarks/generate_overhead.py [--episodes N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

from synth.config import GenerateConfig
from synth.generate import generate
from synth.llm.testing_server import FakeOpenAIServer, RoleScript

CHECKLIST = """\
category: {category}
items:
  - rule: answer_present
  - rule: sources_unchanged
  - rule: execute_blocks_authentic
  - id: supported
    question: Is the answer supported by the printed output?
"""
CODE = ("<Analyze>Look.</Analyze>\n<Code>\n```python\nimport csv, glob\n"
        "rows = list(csv.reader(open(glob.glob('*.csv')[0])))\nprint(len(rows))\n```\n</Code>")
ANSWER = "<Understand>Counted.</Understand>\n<Answer>There are 5 rows.</Answer>"


# Unique words per source and episode kind keep the planner's near-duplicate check from merging the tasks.
reply = RoleScript(lambda category, difficulty, file: f"Count the rows of {file} ("
                   + " ".join(f"{file}{i} {category}{i} {difficulty}{i}" for i in range(8)) + ").", CODE, ANSWER)
CATEGORIES = ("data_analysis", "data_cleaning", "data_insight", "modeling")
SOURCES = 4  # sources × 4 categories × 3 difficulties = 48 distinct tasks before the plan repeats one


def write_workload(root: Path) -> None:
    """The sources and checklists of the scripted workload under `root` (also used by ray_scaling.py)."""
    root.chmod(0o755)  # sandbox cells run as another uid and must reach the sources
    (root / "src").mkdir()
    for i in range(1, SOURCES + 1):
        (root / "src" / f"sales{i}.csv").write_text("region,amount\nnorth,10\nsouth,5\nnorth,20\neast,7\n")
    (root / "checklists").mkdir()
    for category in CATEGORIES:
        (root / "checklists" / f"{category}.yaml").write_text(CHECKLIST.format(category=category))


async def _run(root: Path, name: str, base_url: str, episodes: int, concurrency: int) -> float:
    config = GenerateConfig(
        sources=root / "src", out=root / name, model="openai:bench", base_url=base_url, limit=episodes,
        categories=list(CATEGORIES), checklists=root / "checklists",
        concurrency=concurrency, max_rounds=4, seed=1,
    )
    started = time.perf_counter()
    summary = await generate(config, out=io.StringIO(), live=False)
    elapsed = time.perf_counter() - started
    if summary.accepted + summary.rejected != episodes:
        raise SystemExit(f"{name}: only {summary.accepted + summary.rejected} of {episodes} episodes finished")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_workload(root)
        with FakeOpenAIServer(reply=reply) as server:
            instant = asyncio.run(_run(root, "instant", server.base_url, args.episodes, 1))
        print(f"per-episode orchestration overhead (instant model, 4 LLM calls, 1 cell, concurrency 1): "
              f"{instant / args.episodes * 1000:.0f} ms")
        with FakeOpenAIServer(reply=reply, latency_s=0.2) as server:
            c1 = asyncio.run(_run(root, "c1", server.base_url, args.episodes, 1))
            c8 = asyncio.run(_run(root, "c8", server.base_url, args.episodes, 8))
            peak = server.max_in_flight
        print(f"200 ms model: concurrency 1 {args.episodes / c1:.2f} episodes/s, concurrency 8 "
              f"{args.episodes / c8:.2f} episodes/s (peak {peak} requests in flight)")
        print(f"throughput ratio concurrency 8 / 1: {c1 / c8:.2f}x (goal >= 6x)")


if __name__ == "__main__":
    sys.exit(main())
