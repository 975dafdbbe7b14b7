"""Accuracy of ACCEPTED answers, with verification off and on, on InfiAgent-DABench questions the pipeline gets
without their labels.

    python benchmarks/acceptance_precision.py [--model embedded] [--limit 10] [--out DIR]

Runs `synth generate --tasks` twice on ../shared/data/bench_samples/infiagent_sample (questions only: the labels
are withheld from the pipeline), once with `--no-verify` and once with verification (the default). Afterwards it
scores every episode's final answer — accepted or rejected — with InfiAgent's own rule (every `@name[value]`
sub-answer equal, numbers within 1e-6) and prints, for each mode: the solver's accuracy over all episodes, the
acceptance rate, the accuracy of the accepted answers, and the model time per episode and per accepted record.
Each mode has its own run dir and response cache, so neither reuses the other's model calls; with `--out`, a
rerun continues (resumes) the run dirs already there. "accepted, reference verified" counts the accepted records
whose reference a verifier program (or a tie-break) computed; the others were accepted unverified.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.config import GenerateConfig  # noqa: E402
from synth.generate import generate  # noqa: E402
from synth.protocol import parse  # noqa: E402
from train.eval.infiagent import extract_answers, is_equal  # noqa: E402


def _labels(path: Path) -> dict[str, list[list[str]]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(r["id"]): r["common_answers"] for r in rows}


def _correct(answer: str | None, labels: list[list[str]]) -> bool:
    found = extract_answers(answer)
    return bool(labels) and all(name in found and is_equal(found[name], value) for name, value in labels)


def _answer(row: dict) -> str | None:
    if "messages" in row:
        return parse(row["messages"][-1]["content"]).answer
    return (row.get("trajectory") or {}).get("answer")


def run_mode(name: str, verify: bool, questions: Path, tables: Path, labels: dict, args, root: Path) -> dict:
    out = root / name
    config = GenerateConfig(sources=tables, tasks=questions, tasks_format="infiagent", out=out, model=args.model,
                            limit=args.limit, concurrency=args.concurrency, verify=verify, mode=args.mode,
                            max_rounds=args.max_rounds, max_revisions=1, resume=out.exists())
    started = time.monotonic()
    asyncio.run(generate(config, out=io.StringIO(), live=False))
    wall = time.monotonic() - started
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines() if line.strip()]
    ids = {r["task_id"] for r in records} | {r.get("task_id") for r in rejected}
    episodes = len(records) + len(rejected)
    right_all = sum(_correct(_answer(r), labels[str(r.get("task_id"))]) for r in records + rejected)
    right_accepted = sum(_correct(_answer(r), labels[str(r["task_id"])]) for r in records)
    verified = [r for r in records if (r.get("reference") or {}).get("verified_by") not in (None, "none")]
    right_verified = sum(_correct(_answer(r), labels[str(r["task_id"])]) for r in verified)
    model_s = sum(float((r.get("usage") or {}).get("model_s", 0.0)) for r in records + rejected)
    return {"mode": name, "episodes": episodes, "tasks": len(ids), "accepted": len(records),
            "solver_accuracy": right_all / episodes if episodes else 0.0,
            "acceptance": len(records) / episodes if episodes else 0.0,
            "accepted_accuracy": right_accepted / len(records) if records else None,
            "accepted_verified": len(verified),
            "verified_accuracy": right_verified / len(verified) if verified else None,
            "model_s_per_episode": model_s / episodes if episodes else 0.0,
            "model_s_per_accepted": model_s / len(records) if records else None, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bench_samples" /
                        "infiagent_sample")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--mode", default="session", choices=["script", "session"])
    parser.add_argument("--max-rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None, help="Keep the two run dirs here (default: a temp dir).")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="ds-synth-precision-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    questions = root / "questions" / "questions.jsonl"  # no labels.jsonl beside it: the pipeline never sees them
    questions.parent.mkdir(exist_ok=True)
    shutil.copyfile(args.data / "questions.jsonl", questions)
    labels = _labels(args.data / "labels.jsonl")
    rows = [run_mode(name, verify, questions, args.data / "tables", labels, args, root)
            for name, verify in (("no-verify", False), ("verify", True))]
    print(f"model {args.model}, {rows[0]['episodes']} InfiAgent questions (labels withheld), run dirs in {root}")
    print(f"{'':28}" + "".join(f"{r['mode']:>14}" for r in rows))
    for key, label, fmt in (("solver_accuracy", "solver accuracy (all)", "{:.2f}"),
                            ("acceptance", "acceptance rate", "{:.2f}"),
                            ("accepted", "accepted records", "{}"),
                            ("accepted_accuracy", "accuracy of accepted", "{:.2f}"),
                            ("accepted_verified", "accepted, reference verified", "{}"),
                            ("verified_accuracy", "accuracy of those", "{:.2f}"),
                            ("model_s_per_episode", "model s / episode", "{:.1f}"),
                            ("model_s_per_accepted", "model s / accepted record", "{:.1f}"),
                            ("wall_s", "wall s", "{:.0f}")):
        print(f"{label:28}" + "".join(f"{(fmt.format(r[key]) if r[key] is not None else '-'):>14}" for r in rows))
    off, on = rows
    if on["accepted_accuracy"] is not None:
        print(f"accepted accuracy minus solver accuracy (verify): {on['accepted_accuracy'] - on['solver_accuracy']:+.2f}")
    if off["model_s_per_episode"]:
        print(f"verification cost: {on['model_s_per_episode'] / off['model_s_per_episode']:.2f}x model time per episode")
    (root / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
