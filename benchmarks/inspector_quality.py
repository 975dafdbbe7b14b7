"""How good is the inspector? Recall per planted defect and clean acceptance, rules only vs with a judge model.

The fixture is a small real run kept in the repo (tests/fixtures/inspect/run: accepted records of `synth generate`
with the embedded model on demo sources this project builds, and those sources). Every defect of
synth/dataset/defects.py is planted into every accepted record it applies to; the clean and planted variants are
inspected exactly as `synth inspect --calibrate` does — once with the rule items only, once with the judged items
answered by `--model` (default: the embedded 1.5B). Prints, per defect, the share caught with each, the clean
acceptance with each, how many judged verdicts were empty, and the goals: recall >= 0.99 on every defect the rules
can detect, clean acceptance >= 0.95.

    python benchmarks/inspector_quality.py [--model embedded] [--rules-only] [--limit N] [--judge-limit N] [--out DIR]

The judge run is slow on CPU (the 1.5B answers one review in about a minute on 2 free cores, several when they are
shared): `--judge-limit` plants into fewer records for it, and `--out` keeps the model's response cache, so a rerun
costs nothing for what was already judged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "inspect" / "run"

RECALL_GOAL = 0.99
CLEAN_GOAL = 0.95


async def calibrate_once(run: Path, sources: Path, out: Path, *, model: str | None, limit: int | None) -> dict:
    from synth.dataset.calibrate import calibrate
    from synth.dataset.inspect import InspectConfig

    config = InspectConfig(data=run, sources=sources, out=out, inspector_model=model, limit=limit, concurrency=2)
    started = time.monotonic()
    result = await calibrate(config)
    result.summary["seconds"] = round(time.monotonic() - started, 1)
    return result.summary


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=FIXTURE, help="run directory whose accepted records are planted")
    parser.add_argument("--sources", type=Path, default=None, help="its sources (default: RUN/../sources)")
    parser.add_argument("--model", default="embedded", help="the judge model spec (add ?votes=k to vote)")
    parser.add_argument("--rules-only", action="store_true", help="skip the run with the judge")
    parser.add_argument("--limit", type=int, default=None, help="plant into the first N records only")
    parser.add_argument("--judge-limit", type=int, default=None, help="records planted for the judge run "
                        "(default: --limit)")
    parser.add_argument("--out", type=Path, default=None, help="keep the calibrations (and the judge's cache) here")
    parser.add_argument("--json", type=Path, default=None, help="also write both summaries here")
    args = parser.parse_args()
    sources = args.sources or args.run.parent / "sources"
    judge_limit = args.judge_limit or args.limit
    with tempfile.TemporaryDirectory(prefix="inspector-quality-") as tmp:
        out = args.out or Path(tmp)
        rules = asyncio.run(calibrate_once(args.run, sources, out / "rules", model=None, limit=args.limit))
        judged = None if args.rules_only else asyncio.run(
            calibrate_once(args.run, sources, out / "judged", model=args.model, limit=judge_limit))
    print(f"fixture: {args.run} — {rules['records']} accepted records, sources {sources}")
    if judged:
        print(f"judge run: {args.model} on {judged['records']} record(s)")
    head = f"{'defect':<22} {'planted':>7} {'rules':>6}" + (f" {'+judge':>7} {'judge':>6}" if judged else "") \
        + "  caught by (rules)"
    print(head)
    detectable = []
    for defect, row in rules["defects"].items():
        with_judge = judged["defects"][defect] if judged else None
        by = ", ".join(f"{k} ×{v}" for k, v in list(row["caught_by"].items())[:3]) or "-"
        print(f"{defect:<22} {row['counted']:>7} {_pct(row['recall']):>6}"
              + (f" {_pct(with_judge['recall']):>7} {_pct(with_judge['judge_recall']):>6}" if judged else "")
              + f"  {by}")
        if row["recall"]:
            detectable.append((defect, row["recall"]))
    print(f"{'clean acceptance':<22} {rules['records']:>7} {_pct(rules['clean_acceptance']):>6}"
          + (f" {_pct(judged['clean_acceptance']):>7}" if judged else ""))
    if judged:
        print("(+judge: caught by rules or judged items; judge: caught by a judged item alone)")
    if judged:
        j = judged["judged"]
        print(f"judged verdicts with {j['inspector']}: {j['verdicts']}, empty (no usable quote) {j['empty']} "
              f"({j['empty'] / j['verdicts']:.0%})" if j["verdicts"] else "no judged verdicts")
        only_judge = [d for d, r in judged["defects"].items() if r["counted"] and not rules["defects"][d]["recall"]]
        for defect in only_judge:
            print(f"judged-only defect {defect}: recall {_pct(judged['defects'][defect]['recall']).strip()} (measured)")
    worst = min((r for _, r in detectable), default=None)
    if worst is not None:
        print(f"ratio: worst recall on a rule-detectable defect / goal = {worst:.3f} / {RECALL_GOAL} = "
              f"{worst / RECALL_GOAL:.3f}")
    if rules["clean_acceptance"] is not None:
        print(f"ratio: clean acceptance (rules) / goal = {rules['clean_acceptance']:.3f} / {CLEAN_GOAL} = "
              f"{rules['clean_acceptance'] / CLEAN_GOAL:.3f}")
    print(f"seconds: rules {rules['seconds']}" + (f", with judge {judged['seconds']}" if judged else ""))
    if args.json:
        args.json.write_text(json.dumps({"rules": rules, "judged": judged}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
