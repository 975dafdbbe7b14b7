"""Answer quality of the five-action loop vs the same model answering in one shot without execution.

A dozen simple pandas questions over the seaborn CSVs in shared/data; reference answers are computed here with
pandas. Each question is asked twice: through `run_agent` (real local sandbox, script mode) and as one plain chat
call that sees the file's header and first rows but runs nothing. Prints the accuracy of each and their ratio.

    python benchmarks/agent_quality.py --model embedded:0.5b [--limit 12] [--max-rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SEABORN = Path(os.environ.get("DS_SYNTH_SHARED_DATA", REPO.parent / "shared" / "data")) / "sources" / "seaborn"


def _questions() -> list[tuple[str, str, object]]:
    """(csv file, question, reference answer) — references computed from the data, never typed in."""
    tips = pd.read_csv(SEABORN / "tips.csv")
    penguins = pd.read_csv(SEABORN / "penguins.csv")
    diamonds = pd.read_csv(SEABORN / "diamonds.csv")
    flights = pd.read_csv(SEABORN / "flights.csv")
    planets = pd.read_csv(SEABORN / "planets.csv")
    crashes = pd.read_csv(SEABORN / "car_crashes.csv")
    return [
        ("tips.csv", "What is the average tip?", tips["tip"].mean()),
        ("tips.csv", "How many rows have day equal to Sun?", int((tips["day"] == "Sun").sum())),
        ("tips.csv", "What is the largest total_bill?", tips["total_bill"].max()),
        ("tips.csv", "On which day is the sum of tips the highest?", tips.groupby("day")["tip"].sum().idxmax()),
        ("tips.csv", "What is the average tip of smokers (smoker == 'Yes')?", tips[tips.smoker == "Yes"]["tip"].mean()),
        ("penguins.csv", "How many different species are there?", int(penguins["species"].nunique())),
        ("penguins.csv", "What is the mean body_mass_g?", penguins["body_mass_g"].mean()),
        ("penguins.csv", "Which island has the most penguins?", penguins["island"].value_counts().idxmax()),
        ("diamonds.csv", "How many rows does the table have?", len(diamonds)),
        ("diamonds.csv", "What is the average price?", diamonds["price"].mean()),
        ("flights.csv", "What is the total number of passengers in 1960?", int(flights[flights.year == 1960]["passengers"].sum())),
        ("planets.csv", "How many planets were found with the method 'Radial Velocity'?",
         int((planets["method"] == "Radial Velocity").sum())),
        ("car_crashes.csv", "Which abbrev has the highest total?", crashes.loc[crashes["total"].idxmax(), "abbrev"]),
    ][:12]


def correct(answer: str | None, expected: object) -> bool:
    if not answer:
        return False
    if isinstance(expected, str):
        return re.search(rf"\b{re.escape(expected)}\b", answer, re.IGNORECASE) is not None
    target = float(expected)  # type: ignore[arg-type]
    for token in re.findall(r"-?\d[\d,]*(?:\.\d+)?", answer):
        value = float(token.replace(",", ""))
        if abs(value - target) <= max(0.01, 0.005 * abs(target)):
            return True
    return False


async def _one_shot(model, csv: Path, question: str) -> str:
    head = "".join(csv.open().readlines()[:6])
    messages = [
        {"role": "system", "content": "You are a data scientist. Answer the question about the table briefly, "
                                      "with the value itself. You cannot run code."},
        {"role": "user", "content": f"Table {csv.name} (first rows):\n{head}\nQuestion: {question}"},
    ]
    completion = await model.chat(messages, max_tokens=256, temperature=0.0)
    return completion.text


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:0.5b", help="embedded:0.5b | embedded (1.5B) | any model spec")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--max-rounds", type=int, default=6)
    args = parser.parse_args(argv)

    from synth.agent import AgentConfig, run_agent
    from synth.llm import load_model
    from synth.sandbox import get_sandbox
    from synth.sandbox.base import Limits

    model = load_model(args.model)
    sandbox = get_sandbox("local")
    cfg = AgentConfig(max_rounds=args.max_rounds, cell_timeout_s=60, temperature=0.0)
    loop_ok = shot_ok = 0
    questions = _questions()[: args.limit]
    started = time.monotonic()
    for i, (name, question, expected) in enumerate(questions, 1):
        csv = SEABORN / name
        with sandbox.open([csv], mode="script", limits=Limits(timeout_s=60)) as session:
            traj = await run_agent(model, session, question, config=cfg)
        shot = await _one_shot(model, csv, question)
        a, b = correct(traj.answer, expected), correct(shot, expected)
        loop_ok += a
        shot_ok += b
        print(f"[{i:2}/{len(questions)}] {name:16} {question[:48]:48} expected={expected!s:.10} "
              f"loop={'OK ' if a else 'BAD'} ({traj.stop_reason}, {len(traj.turns)} turns) one-shot={'OK' if b else 'BAD'}",
              flush=True)
    n = len(questions)
    print(f"\nmodel {args.model}: {n} questions in {time.monotonic() - started:.0f}s")
    print(f"accuracy through the agent loop : {loop_ok}/{n} = {loop_ok / n:.2f}")
    print(f"accuracy one shot, no execution : {shot_ok}/{n} = {shot_ok / n:.2f}")
    ratio = (loop_ok / shot_ok) if shot_ok else float("inf") if loop_ok else 1.0
    print(f"ratio loop / one-shot           : {ratio:.2f}")
    await model.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
