"""`synth eval`: run the agent (synth.agent.run_agent, the loop serve uses) on benchmark items, score each answer
with the benchmark's official rules, and summarise per category.

OUT holds eval.json (what is evaluated: bench, data, model), results.jsonl (one line per finished item, appended
as items finish, so an interrupted run loses nothing) and summary.json. Besides the benchmark's score, every item
records how many replies the model gave (= agent rounds) and how many followed the five-action format before the
loop repaired anything (train.eval.compliance); the summary reports compliance, mean rounds and turns. Running again with the same --out resumes:
items with a result are skipped; items that failed (sandbox or model error) run again.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from train.eval.benchmarks import BENCHMARK_NAMES, Benchmark, EvalDataError, EvalItem, get_benchmark


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bench: str = Field(..., description=f"One of {', '.join(BENCHMARK_NAMES)}.")
    data: Path = Field(..., description="The benchmark's file or folder; only read.")
    model: str | None = Field(None, description="Model spec (default: $DS_SYNTH_MODEL, else embedded).")
    base_url: str | None = Field(None, description="Base URL for openai:… specs.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N items.")
    concurrency: int = Field(2, ge=1, le=256, description="Items run at once.")
    out: Path | None = Field(None, description="Results folder (default runs/eval-<bench>-<time>).")
    mode: Literal["script", "session"] = "script"
    max_rounds: int = Field(20, ge=1, description="Agent rounds per item.")
    max_tokens_per_turn: int = Field(1024, ge=16, description="Tokens the model may write per round.")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per code cell.")
    backend: str = Field("local", description="Sandbox backend: local | docker.")


async def run_eval(config: EvalConfig, *, model: Any = None, sandbox: Any = None, console: Any = None
                   ) -> dict[str, Any]:
    """Evaluate; return the summary (also written to OUT/summary.json). `model`/`sandbox` replace loading them."""
    from rich.console import Console

    console = console or Console(highlight=False, soft_wrap=True)
    benchmark = get_benchmark(config.bench)
    items = benchmark.load(config.data, config.limit)
    out = config.out or Path("runs") / f"eval-{config.bench}-{datetime.now():%Y%m%d-%H%M%S}"
    if model is None:
        model = _load_model(config)
    model_name = getattr(model, "name", "") or (config.model or "")
    _claim_out(out, config, model_name)
    if sandbox is None:
        from synth.sandbox import get_sandbox

        sandbox = get_sandbox(config.backend)

    results_path = out / "results.jsonl"
    done = {r["id"] for r in read_results(results_path).values() if r.get("status") == "done"}
    todo = [item for item in items if item.id not in done]
    if done:
        console.print(f"resuming {out}: {len(items) - len(todo)} of {len(items)} item(s) already scored")
    semaphore = asyncio.Semaphore(config.concurrency)
    finished = 0

    async def one(item: EvalItem) -> None:
        nonlocal finished
        async with semaphore:
            record = await _evaluate(item, benchmark, model, sandbox, config)
        with open(results_path, "a", encoding="utf-8") as fh:  # one write per line: lines never interleave
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        finished += 1
        status = f"score {record['score']:.2f}" if record["status"] == "done" else f"[red]error[/red] {record['error']}"
        console.print(f"[{finished}/{len(todo)}] {item.id} ({item.category}): {status}", markup=True)

    try:
        await asyncio.gather(*(one(item) for item in todo))
    finally:
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()

    records = read_results(results_path)
    summary = summarize(benchmark, [records[i.id] for i in items if i.id in records], model=model_name,
                        data=str(config.data))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_summary(summary, console)
    console.print(f"wrote {results_path} and {out / 'summary.json'}")
    return summary


async def _evaluate(item: EvalItem, benchmark: Benchmark, model: Any, sandbox: Any, config: EvalConfig
                    ) -> dict[str, Any]:
    from synth.agent import AgentConfig, run_agent
    from synth.sandbox.base import Limits

    from train.eval.compliance import RecordingModel

    started = time.monotonic()
    record: dict[str, Any] = {"id": item.id, "category": item.category, "status": "error", "score": 0.0,
                              "correct": False, "reference": item.reference}
    recorder = RecordingModel(model)  # the raw replies, before the loop's repairs: protocol compliance
    try:
        with tempfile.TemporaryDirectory(prefix="ds-synth-eval-") as tmp:
            paths = item.stage(Path(tmp) / "files")
            session = await asyncio.to_thread(sandbox.open, paths, mode=config.mode,
                                              limits=Limits(timeout_s=config.cell_timeout_s))
            try:
                agent_config = AgentConfig(max_rounds=config.max_rounds, cell_timeout_s=config.cell_timeout_s,
                                           max_tokens_per_turn=config.max_tokens_per_turn)
                trajectory = await run_agent(recorder, session, item.instruction, config=agent_config)
            finally:
                await asyncio.to_thread(session.close)
        record.update(answer=trajectory.answer, stop_reason=trajectory.stop_reason, turns=len(trajectory.turns),
                      usage=trajectory.usage.to_dict(), trajectory=trajectory.to_dict())
        if trajectory.stop_reason == "model_error":  # the model never got to answer: retried on resume
            record["error"] = f"model error: {trajectory.error}"
        else:
            score = await asyncio.to_thread(benchmark.score, item, trajectory.answer, sandbox)
            record.update(status="done", score=score.score, correct=score.correct,
                          prediction=score.details.get("prediction"), details=score.details)
    except Exception as exc:  # one broken item must not end the run; resume retries it
        record["error"] = f"{type(exc).__name__}: {exc}"
    record.update(recorder.figures())
    record["duration_s"] = round(time.monotonic() - started, 3)
    return record


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl as id → the item's latest record (a torn last line from a crash is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "id" in record:
            records[str(record["id"])] = record
    return records


def summarize(benchmark: Benchmark, records: list[dict[str, Any]], *, model: str = "", data: str = ""
              ) -> dict[str, Any]:
    """Per-category and overall figures: items, mean score, share correct, errors (+ the benchmark's extras), and
    how the model worked: protocol compliance of its replies, mean rounds and turns, share answered."""
    from train.eval.compliance import summarize_compliance

    def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rows)
        out: dict[str, Any] = {
            "n": n,
            "score": sum(float(r.get("score") or 0.0) for r in rows) / n if n else 0.0,
            "accuracy": sum(1 for r in rows if r.get("correct")) / n if n else 0.0,
            "errors": sum(1 for r in rows if r.get("status") != "done"),
        }
        if benchmark.extra_metrics is not None:
            out.update(benchmark.extra_metrics(rows))
        if any(isinstance(r.get("replies"), int) for r in rows):
            out.update(summarize_compliance(rows))
        return out

    by_category: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_category.setdefault(str(record.get("category") or "all"), []).append(record)
    return {
        "bench": benchmark.name, "metric": benchmark.metric, "model": model, "data": data,
        "overall": figures(records),
        "categories": {name: figures(rows) for name, rows in sorted(by_category.items())},
    }


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['bench']} — {summary['model']} ({summary['metric']})")
    extra = [k for k in summary["overall"] if k not in ("n", "score", "accuracy", "errors")]
    for name in ("category", "n", "score", "accuracy", "errors", *extra):
        table.add_column(name, justify="left" if name == "category" else "right")

    def row(name: str, figures: dict[str, Any], **style: Any) -> None:
        cells = [name, str(figures["n"]), f"{figures['score']:.3f}", f"{figures['accuracy']:.3f}",
                 str(figures["errors"])]
        cells += [f"{figures[k]:.3f}" if isinstance(figures.get(k), float) else str(figures.get(k, "")) for k in extra]
        table.add_row(*cells, **style)

    for name, figures in summary["categories"].items():
        row(name, figures)
    row("overall", summary["overall"], style="bold")
    console.print(table)


def _load_model(config: EvalConfig) -> Any:
    from synth.llm import load_model

    spec = config.model
    options = {"base_url": config.base_url} if config.base_url and (spec or "").startswith("openai:") else {}
    return load_model(spec, **options)


def _claim_out(out: Path, config: EvalConfig, model_name: str) -> None:
    """Create OUT, or check that the results already in it are of this same evaluation (then it resumes)."""
    if out.exists() and not out.is_dir():
        raise EvalDataError(f"--out {out}: exists and is not a directory")
    identity = {"bench": config.bench, "data": str(Path(config.data).resolve()), "model": model_name}
    stored = out / "eval.json"
    if stored.is_file():
        previous = json.loads(stored.read_text(encoding="utf-8"))
        for key, value in identity.items():
            if previous.get(key) != value:
                raise EvalDataError(f"--out {out}: holds results for {key} {previous.get(key)!r}, not {value!r}; "
                                    "choose another --out")
        return
    if out.is_dir() and any(out.iterdir()):
        raise EvalDataError(f"--out {out}: not empty and not an eval results folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


__all__ = ["EvalConfig", "run_eval", "summarize", "read_results", "print_summary"]
