"""`synth refine`: the reasoning graph over every item of an instruction dataset, concurrently and resumably.

A run directory holds config.yaml, records.jsonl (distilled and refined records), rejected.jsonl (one row per
item whose distillation never matched — stage `distill` — and one per item whose refinement was not kept while its
distilled record was — stage `refine`), stats.json, checkpoints.sqlite and cache.sqlite.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from synth.config import RefineConfig
from synth.dataset.sink import RecordSink
from synth.errors import SynthError
from synth.graphs.reasoning import (
    ReasoningDeps,
    build_reasoning_graph,
    item_state,
    run_item,
    thread_id,
)
from synth.jsonl import read_jsonl
from synth.llm.base import ChatModel
from synth.refiner import keyword_vocabulary, load_keywords, sample_keywords
from synth.rundir import RunDirError, RunDirLock, grown_limit, has_run_files, inside, open_outputs
from synth.scheduler import WorkerRecipe


class RefineError(RunDirError):
    """`synth refine` cannot start or continue; the message is one line saying what and where."""


@dataclass
class RefineSummary:
    run_dir: Path
    planned: int
    records: int
    rejected: int  # items rejected (no distillation matched)
    errors: int
    interrupted: bool
    stats: dict[str, Any] = field(default_factory=dict)


def prepare_refine_dir(config: RefineConfig, lock: RunDirLock | None = None) -> tuple[Path, RefineConfig]:
    """Create the run dir (taking `lock` on it) and store the config; on --resume, reuse the stored one
    (concurrency and scheduler from the caller)."""
    config = config.resolved()
    run_dir = config.out or Path("runs").resolve() / time.strftime("refine-%Y%m%d-%H%M%S")
    saved = run_dir / "config.yaml"
    if config.resume:
        if not saved.is_file():
            raise RefineError(f"--resume: {saved} not found; nothing to resume there")
    else:
        if has_run_files(run_dir):
            raise RefineError(f"run dir {run_dir} is not empty; pass --resume to continue it or choose another --out")
        if not config.input.exists():
            raise RefineError(f"--input {config.input}: no such file or directory")
        if config.input.is_dir() and inside(run_dir, config.input):
            raise RefineError(f"--out {run_dir} is inside the input folder {config.input}; inputs are never written to")
    with lock.taking(run_dir) if lock is not None else nullcontext():
        if config.resume:
            stored = RefineConfig.load(saved)
            try:
                limit = grown_limit(config.limit, stored.limit, run_dir, "item(s)")
            except RunDirError as exc:
                raise RefineError(str(exc)) from None
            config = stored.model_copy(update={
                "resume": True, "out": run_dir, "concurrency": config.concurrency, "executor": config.executor,
                "ray_address": config.ray_address, "limit": limit})
            if limit != stored.limit:
                config.save(saved)
        else:
            config = config.model_copy(update={"out": run_dir})
            config.save(saved)
    return run_dir, config


def load_refine_models(config: RefineConfig, cache_path: Path | None, limiter: Any = None
                       ) -> dict[str, ChatModel]:
    """{"model": teacher, "judge": judge (only when the chain has the judge)}; one instance per spec."""
    from synth.scheduler import load_worker_models

    specs = {"model": config.model}
    if "judge" in config.chain():
        specs["judge"] = config.judge_model or config.model
    return load_worker_models(specs, base_url=config.base_url, cache_path=cache_path, limiter=limiter)


def _deps(config: RefineConfig, models: dict[str, ChatModel], sink: Any, on_event: Any = None) -> ReasoningDeps:
    return ReasoningDeps(model=models["model"], sink=sink, judge_model=models.get("judge"), matchers=config.chain(),
                         max_distill_attempts=config.max_distill_attempts,
                         max_refine_attempts=config.max_refine_attempts, roles_dir=config.roles, on_event=on_event)


async def refine(config: RefineConfig, *, model: ChatModel | None = None, judge_model: ChatModel | None = None,
                 out: TextIO | None = None, live: bool | None = None, scheduler: Any = None) -> RefineSummary:
    """Run (or resume) a refine run. `model` (and `judge_model`) replace loading them from the config;
    `scheduler` (synth.scheduler) replaces the one the config's `executor` names."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from synth.instruct_data import read_items
    from synth.progress import RunProgress
    from synth.scheduler import (
        GraphWork,
        Job,
        SchedulerError,
        make_scheduler,
        run_to_end,
    )

    out = out or sys.stderr
    try:
        scheduler = scheduler or make_scheduler(config.executor, address=config.ray_address)
    except SchedulerError as exc:
        raise RefineError(str(exc)) from None
    if model is not None and scheduler.name != "local":
        raise RefineError(f"--executor {scheduler.name} loads the configured model specs on every worker; "
                          "in-process model= only works with the local executor")
    config = config.resolved()
    lock = RunDirLock()
    if config.resume:  # the stored config says what to read
        run_dir, config = prepare_refine_dir(config, lock)
    try:
        items = read_items(config.input, config.format, question_field=config.question_field,
                           answer_field=config.answer_field, table_field=config.table_field,
                           context_field=config.context_field, id_field=config.id_field, limit=config.limit)
        vocabulary = keyword_vocabulary(load_keywords(config.checklists))
        config.chain()
    except SynthError as exc:
        lock.release()
        raise RefineError(str(exc)) from None
    if not config.resume:  # only a run that can start gets a run dir
        run_dir, config = prepare_refine_dir(config, lock)
    try:
        records_path, rejected_path = open_outputs(run_dir)
        sink = RecordSink(records_path, rejected_path)
        owned = model is None
        models = load_refine_models(config, run_dir / "cache.sqlite") if model is None else \
            {"model": model, **({"judge": judge_model} if judge_model is not None else {})}
        progress = RunProgress(len(items), out, live=live, unit="item")
        deps = _deps(config, models, sink, progress.event)
        limits = {"max_rows": config.max_table_rows, "max_chars": config.max_table_chars}
        started = time.monotonic()
        async with AsyncSqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
            compiled = build_reasoning_graph().compile(checkpointer=saver)
            jobs = [Job(thread_id(item.id), item_state(item, table_limits=limits, keywords=sample_keywords(
                vocabulary, config.keywords_per_trace, seed=config.seed, item_id=item.id))) for item in items]
            work = GraphWork(jobs, compiled=compiled, sink=sink, progress=progress,
                             invoke=lambda graph, payload: run_item(graph, payload, deps),
                             end_nodes=("emit", "drop"), recipe=lambda: RefineRecipe(config, run_dir))
            errors, interrupted = await run_to_end(scheduler, work, concurrency=config.concurrency,
                                                   progress=progress, close=list(models.values()) if owned else [])
        stats = compute_refine_stats(run_dir, planned=len(items), vocabulary=vocabulary,
                                     wall_s=time.monotonic() - started)
        (run_dir / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    finally:
        lock.release()
    if interrupted:
        print(f"interrupted; continue with: synth refine --out {run_dir} --resume", file=out)
    return RefineSummary(run_dir=run_dir, planned=len(items), records=stats["records"], rejected=stats["rejected"],
                         errors=errors, interrupted=interrupted, stats=stats)


@dataclass
class RefineRecipe(WorkerRecipe):
    """`synth refine` on a Ray worker: the run's config and run dir (for the cache)."""

    config: RefineConfig
    run_dir: Path

    async def open(self, sink: Any, limiter: Any) -> Any:
        from synth.scheduler import worker_paths

        cache_path, _ = worker_paths(self.run_dir, "worker")
        self._models = load_refine_models(self.config, cache_path, limiter)
        self._deps = _deps(self.config, self._models, sink)
        return build_reasoning_graph()

    async def invoke(self, compiled: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return await run_item(compiled, payload, self._deps)

    async def close(self) -> None:
        from synth.scheduler import close_models

        await close_models(getattr(self, "_models", {}))


def compute_refine_stats(run_dir: Path, *, planned: int, vocabulary: Sequence[str] = (),
                         wall_s: float = 0.0) -> dict[str, Any]:
    """stats.json, recomputed from records.jsonl and rejected.jsonl (right after any resume)."""
    records = read_jsonl(run_dir / "records.jsonl")
    rejected = read_jsonl(run_dir / "rejected.jsonl")
    distilled = [r for r in records if r.get("variant") == "distilled"]
    refined = [r for r in records if r.get("variant") == "refined"]
    distill_failed = [r for r in rejected if r.get("stage") == "distill"]
    refine_failed = [r for r in rejected if r.get("stage") == "refine"]
    keywords: dict[str, Counter] = {k: Counter() for k in vocabulary}
    for row, kept in [(r, True) for r in refined] + [(r, False) for r in refine_failed]:
        for k in row.get("keywords") or []:
            keywords.setdefault(k, Counter())["sampled"] += 1
            keywords[k]["kept"] += int(kept)
    methods: Counter = Counter()
    fallbacks = 0
    usage: Counter = Counter()
    for row in distilled:
        for item in (row.get("verdict") or {}).get("items", []):
            if item["id"] == "answer_matches":
                methods[item["reason"].split(" ", 1)[0]] += 1
            if item["id"] == "reformulated_by_model" and not item["passed"]:
                fallbacks += 1
    # Both records of an item carry the item's whole usage: count it once per item.
    per_item = {r["sources"][0]["name"]: r.get("usage") or {} for r in distilled}
    per_item.update({r.get("episode_id"): r.get("usage") or {} for r in distill_failed})
    for u in per_item.values():
        for key, value in u.items():
            if isinstance(value, (int, float)) and key in ("prompt_tokens", "completion_tokens", "cost_usd",
                                                           "llm_calls"):
                usage[key] += value
    reasons = Counter(str(r.get("reason") or "?").split(":")[0][:80] for r in rejected)
    distill_total = len(distilled) + len(distill_failed)
    refine_total = len(refined) + len(refine_failed)
    # An item is accepted when it has a record (its refinement may still have failed: a `refine` row in
    # rejected.jsonl); it is rejected when its distillation never matched (a `distill` row).
    accepted_items = {r["sources"][0]["name"] for r in distilled}
    return {
        "planned": planned,
        "records": len(records),
        "items": {"accepted": len(accepted_items), "rejected": len(distill_failed)},
        "rejected": len(distill_failed),
        "distill": {"verified": len(distilled), "failed": len(distill_failed),
                    "accuracy": round(len(distilled) / distill_total, 4) if distill_total else None,
                    "matched_by": dict(methods.most_common()), "reformulation_fallbacks": fallbacks},
        "refine": {"kept": len(refined), "rejected": len(refine_failed),
                   "keep_rate": round(len(refined) / refine_total, 4) if refine_total else None},
        "keywords": {k: {"sampled": v["sampled"], "kept": v["kept"]}
                     for k, v in sorted(keywords.items(), key=lambda kv: (-kv[1]["sampled"], kv[0]))},
        "reject_reasons": dict(reasons.most_common(10)),
        "tokens": {"prompt": int(usage["prompt_tokens"]), "completion": int(usage["completion_tokens"])},
        "llm_calls": int(usage["llm_calls"]),
        "cost_usd": round(usage["cost_usd"], 6),
        "wall_time_s": round(wall_s, 2),
    }


__all__ = ["RefineError", "RefineSummary", "prepare_refine_dir", "load_refine_models", "refine", "RefineRecipe",
           "compute_refine_stats"]
