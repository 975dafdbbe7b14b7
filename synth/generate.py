"""`synth generate`: fan episodes of the interaction graph out over the sources, concurrently and resumably.

A run directory holds config.yaml (the resolved config), records.jsonl (accepted), rejected.jsonl (with verdicts),
stats.json, checkpoints.sqlite (LangGraph checkpoints, thread id = episode id) and cache.sqlite (model replies).
The episode plan is a pure function of the config, so `--resume` replays the same plan: finished episodes are
skipped, interrupted ones continue from their last checkpoint, and emit dedupes by record id. One process at a
time works in a run dir (synth/rundir.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

from synth.config import GenerateConfig
from synth.dataset.sink import RecordSink
from synth.graphs.interaction import EpisodeDeps, build_interaction_graph, run_episode
from synth.jsonl import read_jsonl
from synth.llm.base import ChatModel
from synth.progress import RunLog, RunProgress
from synth.rundir import RunDirError, RunDirLock, grown_limit, has_run_files, inside, open_outputs
from synth.sampler import NearDuplicateIndex, plan_episodes
from synth.sandbox.base import Limits
from synth.scheduler import WorkerRecipe
from synth.sources.card import DataCard
from synth.sources.ref import SourceRef
from synth.verifier import verification_stats

if TYPE_CHECKING:
    from synth.scheduler import Scheduler

RUN_FILES = ("config.yaml", "records.jsonl", "rejected.jsonl", "stats.json", "checkpoints.sqlite", "cache.sqlite")
ROLES = ("questioner", "solver", "inspector")


class RunError(RunDirError):
    """The run cannot start (bad run dir, no usable sources …); the message says what and where."""


@dataclass
class RunSummary:
    run_dir: Path
    planned: int
    accepted: int
    rejected: int
    duplicates: int
    errors: int
    interrupted: bool
    records_path: Path
    stats: dict[str, Any] = field(default_factory=dict)


def prepare_run_dir(config: GenerateConfig, lock: RunDirLock | None = None) -> tuple[Path, GenerateConfig]:
    """Check and create the run dir (taking `lock` on it); on --resume, return the stored config with the
    caller's runtime options."""
    config = config.resolved()
    run_dir = config.out or Path("runs").resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    sources = config.sources
    if not sources.exists():
        raise RunError(f"--sources {sources}: no such file or directory")
    if sources.is_dir() and inside(run_dir, sources):
        raise RunError(f"--out {run_dir} is inside the source folder {sources}; sources are never written to")
    if has_run_files(run_dir) and not config.resume:
        raise RunError(f"run dir {run_dir} is not empty; pass --resume to continue that run or choose another --out")
    saved = run_dir / "config.yaml"
    if config.resume and not saved.is_file():
        raise RunError(f"--resume: {saved} not found; nothing to resume there")
    with lock.taking(run_dir) if lock is not None else nullcontext():
        if config.resume:
            stored = GenerateConfig.load(saved)
            try:
                limit = grown_limit(config.limit, stored.limit, run_dir, "episode(s)")
            except RunDirError as exc:
                raise RunError(str(exc)) from None
            config = stored.model_copy(update={"resume": True, "out": run_dir, "concurrency": config.concurrency,
                                               "executor": config.executor, "ray_address": config.ray_address,
                                               "limit": limit})
            if limit != stored.limit:
                config.save(saved)
        else:
            config = config.model_copy(update={"out": run_dir})
            run_dir.mkdir(parents=True, exist_ok=True)
            config.save(saved)
    return run_dir, config


def load_sources(config: GenerateConfig, warn: Callable[[str], None]) -> dict[str, DataCard]:
    """The DataCards tasks are planned on, by name, each with the absolute path of its original."""
    from synth.sources import profile_all

    root = config.sources
    sources: dict[str, DataCard] = {}
    for item in profile_all(root):
        if not isinstance(item, DataCard):  # a SourceError: the run goes on without it
            warn(f"skipping source {item}")
            continue
        path = Path(item.path)
        if not path.is_absolute():
            path = (root if root.is_dir() else root.parent) / path
        sources[item.name] = item.model_copy(update={"path": str(path)})
    if not sources:
        raise RunError(f"--sources {root}: no usable data sources found")
    documents = [name for name, card in sources.items() if not card.tables]
    if len(documents) < len(sources):
        # Tasks are computed over tables; a LICENSE or README next to a database is context, not a task source.
        for name in documents:
            warn(f"not planning tasks on {name}: a document without tables")
            del sources[name]
    return sources


def roles_of(config: GenerateConfig) -> tuple[str, ...]:
    return ROLES + (("verifier",) if config.verify else ())


def _deps(config: GenerateConfig, models: dict[str, ChatModel], sources: dict[str, DataCard], sink: Any,
          work_dir: Path, instructions: list[str], on_event: Any = None) -> EpisodeDeps:
    from synth.sandbox import get_sandbox

    return EpisodeDeps(
        questioner_model=models["questioner"], solver_model=models["solver"], inspector_model=models["inspector"],
        verifier_model=models.get("verifier") if config.verify else None,
        sandbox=get_sandbox(config.backend), sources=sources, sink=sink, work_dir=work_dir, mode=config.mode,
        limits=Limits(timeout_s=config.cell_timeout_s), max_rounds=config.max_rounds,
        max_revisions=config.max_revisions, solves=config.solves, roles_dir=config.roles,
        checklists_dir=config.checklists, duplicates=NearDuplicateIndex(instructions=instructions),
        on_event=on_event,
    )


def plan(config: GenerateConfig, run_dir: Path, warn: Callable[[str], None]
         ) -> tuple[dict[str, DataCard], list[Any], list[str]]:
    """(the sources by name, the episode plan, the bad task rows): the questioner's plan over every usable
    source, or one episode per row of --tasks over the files the rows name."""
    if config.tasks is None:
        sources = load_sources(config, warn)
        episodes = plan_episodes([SourceRef(name=c.name, sha256=c.sha256) for c in sources.values()],
                                 config.categories, config.difficulties, limit=config.limit, seed=config.seed)
        return sources, episodes, []
    from synth.checklist import list_categories
    from synth.sampler import plan_user_tasks
    from synth.tasks import read_tasks

    root = config.sources if config.sources.is_dir() else config.sources.parent
    inline_root = run_dir / "task_files"
    tasks = read_tasks(config.tasks, config.tasks_format, sources=None,
                       categories=tuple(list_categories(config.checklists)))
    for name, text in tasks.inline_files.items():  # tables a benchmark carries inline become the task's files
        inline_root.mkdir(exist_ok=True)
        (inline_root / name).write_text(text, encoding="utf-8")
    errors = [str(e) for e in tasks.errors]
    usable, sources = [], {}
    for task in tasks.tasks:
        cards = {}
        for name in task.files:
            path = (inline_root if name in tasks.inline_files else root) / name
            card = sources.get(name) or _profile_one(path, name)
            if isinstance(card, str):
                errors.append(f"task {task.id}: {card}")
                break
            cards[name] = card
        else:
            sources.update(cards)
            usable.append(task)
    for error in errors:
        warn(f"skipping task row: {error}")
    if not usable:
        raise RunError(f"--tasks {config.tasks}: no usable task ({len(errors)} bad row(s))")
    episodes = plan_user_tasks(usable[: config.limit] if config.limit else usable, sources)
    return sources, episodes, errors


def _profile_one(path: Path, name: str) -> DataCard | str:
    """A file's DataCard under the name the task uses, or why it cannot be used."""
    from synth.sources import profile
    from synth.sources.profile import SourceProfileError

    if not path.is_file():
        return f"file {name!r} not found in {path.parent}"
    try:
        card = profile(path)
    except (SourceProfileError, ValueError) as exc:
        return f"file {name!r} cannot be read: {exc}"
    return card.model_copy(update={"name": name, "path": str(path.resolve())})


async def generate(
    config: GenerateConfig,
    *,
    models: dict[str, ChatModel] | None = None,
    out: TextIO | None = None,
    live: bool | None = None,
    scheduler: "Scheduler | None" = None,
) -> RunSummary:
    """Run (or resume) a generation run. `models` (role → ChatModel) replaces loading them from the config;
    `scheduler` replaces the one the config's `executor` names (synth.scheduler)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from synth.llm import load_role_models
    from synth.scheduler import GraphWork, Job, run_to_end

    out = out or sys.stderr
    scheduler = scheduler or _scheduler_for(config)
    if models is not None and scheduler.name != "local":
        raise RunError(f"--executor {scheduler.name} loads the configured model specs on every worker; "
                       "in-process models= only work with the local executor")
    lock = RunDirLock()
    run_dir, config = prepare_run_dir(config, lock)
    try:
        records_path, rejected_path = open_outputs(run_dir)
        log = RunLog(out)
        sources, episodes, task_errors = plan(config, run_dir, log.line)
        sink = RecordSink(records_path, rejected_path)
        owned_models = models is None
        models = models or load_role_models({r: config.model_for(r) for r in roles_of(config)},
                                            base_url=config.base_url, cache_path=run_dir / "cache.sqlite")
        progress = RunProgress(len(episodes), out, live=live)
        initial_instructions = list(sink.accepted_instructions)
        deps = _deps(config, models, sources, sink, run_dir / "work", initial_instructions, progress.event)
        started = time.monotonic()
        async with AsyncSqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
            compiled = build_interaction_graph().compile(checkpointer=saver)
            work = GraphWork(
                [Job(ep.episode_id, ep.to_dict()) for ep in episodes], compiled=compiled, sink=sink,
                progress=progress, invoke=lambda graph, payload: run_episode(graph, payload, deps),
                share_instructions=True,
                recipe=lambda: GenerateRecipe(config, sources, run_dir, initial_instructions))
            errors, interrupted = await run_to_end(scheduler, work, concurrency=config.concurrency,
                                                   progress=progress,
                                                   close=list(models.values()) if owned_models else [])
        shutil.rmtree(run_dir / "work", ignore_errors=True)
        stats = compute_stats(run_dir, planned=len(episodes), wall_s=time.monotonic() - started,
                              task_errors=task_errors)
        (run_dir / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    finally:
        lock.release()
    if interrupted:
        log.line(f"interrupted: {stats['accepted']} records kept in {records_path}; "
                 f"continue with: synth generate --out {run_dir} --resume")
    return RunSummary(run_dir=run_dir, planned=len(episodes), accepted=stats["accepted"], rejected=stats["rejected"],
                      duplicates=progress.counts["duplicate"], errors=errors, interrupted=interrupted,
                      records_path=records_path, stats=stats)


def _scheduler_for(config: GenerateConfig) -> "Scheduler":
    from synth.scheduler import SchedulerError, make_scheduler

    try:
        return make_scheduler(config.executor, address=config.ray_address)
    except SchedulerError as exc:
        raise RunError(str(exc)) from None


@dataclass
class GenerateRecipe(WorkerRecipe):
    """`synth generate` on a Ray worker: the run's config, its profiled sources and the run dir (for the cache)."""

    config: GenerateConfig
    sources: dict[str, DataCard]
    run_dir: Path
    instructions: list[str] = field(default_factory=list)  # accepted before this run started

    async def open(self, sink: Any, limiter: Any) -> Any:
        from synth.scheduler import load_worker_models, worker_paths

        cache_path, work_dir = worker_paths(self.run_dir, "worker")
        self._models = load_worker_models({r: self.config.model_for(r) for r in roles_of(self.config)},
                                          base_url=self.config.base_url, cache_path=cache_path, limiter=limiter)
        self._deps = _deps(self.config, self._models, self.sources, sink, work_dir, list(self.instructions))
        return build_interaction_graph()

    async def invoke(self, compiled: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return await run_episode(compiled, payload, self._deps)

    def add_context(self, context: dict[str, Any]) -> None:
        for instruction in context.get("instructions") or []:
            self._deps.duplicates.add(instruction)

    async def close(self) -> None:
        from synth.scheduler import close_models

        await close_models(getattr(self, "_models", {}))


# --- stats -----------------------------------------------------------------------------------------------------


def compute_stats(run_dir: Path, *, planned: int, wall_s: float, task_errors: list[str] | None = None
                  ) -> dict[str, Any]:
    """stats.json, recomputed from records.jsonl and rejected.jsonl (so it is right after any resume)."""
    records = read_jsonl(run_dir / "records.jsonl")
    rejected = read_jsonl(run_dir / "rejected.jsonl")
    by_category: dict[str, Counter] = defaultdict(Counter)
    by_difficulty: dict[str, Counter] = defaultdict(Counter)
    items: dict[str, Counter] = defaultdict(Counter)
    revisions: Counter = Counter()
    usage: Counter = Counter()
    reasons: Counter = Counter()
    judged: Counter = Counter()  # judged verdicts, and the empty ones (the judge gave no usable quote: not judged)
    rows = [(r, "accepted", {**r, "verdicts": [r["verdict"]] if r.get("verdict") else []}) for r in records]
    rows += [(r, "rejected", r) for r in rejected]
    for row, outcome, info in rows:
        by_category[info.get("category", "?")][outcome] += 1
        by_difficulty[info.get("difficulty", "?")][outcome] += 1
        revisions[int(info.get("revisions") or 0)] += 1
        for key, value in (info.get("usage") or {}).items():
            if isinstance(value, (int, float)):
                usage[key] += value
        if outcome == "rejected":
            reasons[str(row.get("reason") or "unknown").split(":")[0][:80]] += 1
        for verdict in info.get("verdicts") or []:
            for item in verdict.get("items", []):
                items[item.get("id") or "?"]["not_judged" if item.get("not_judged") else
                                            "passed" if item.get("passed") else "failed"] += 1
                if item.get("kind") == "judged":
                    judged["total"] += 1
                    judged["empty"] += bool(item.get("not_judged"))
    return {
        "planned": planned,
        "accepted": len(records),
        "rejected": len(rejected),
        "by_category": {k: dict(v) for k, v in sorted(by_category.items())},
        "by_difficulty": {k: dict(v) for k, v in sorted(by_difficulty.items())},
        "checklist_items": {
            k: {"passed": v["passed"], "failed": v["failed"],
                "pass_rate": round(v["passed"] / max(1, v["passed"] + v["failed"]), 3)}
            for k, v in sorted(items.items())
        },
        "revisions": {str(k): v for k, v in sorted(revisions.items())},
        "reject_reasons": dict(reasons.most_common(10)),
        "judged_verdicts": {"total": judged["total"], "empty": judged["empty"]},
        "tokens": {"prompt": int(usage["prompt_tokens"]), "completion": int(usage["completion_tokens"])},
        "llm_calls": int(usage["llm_calls"]),
        "cost_usd": round(usage["cost_usd"], 6),
        "episode_time_s": round(usage["elapsed_s"], 2),
        "model_time_s": round(usage["model_s"], 2),
        "model_time_per_accepted_s": round(usage["model_s"] / len(records), 2) if records else None,
        "wall_time_s": round(wall_s, 2),
        "verification": verification_stats(records, rejected),
        "task_errors": list(task_errors or []),
    }


def run_generate(config: GenerateConfig, *, out: TextIO | None = None) -> RunSummary:
    """Synchronous entry for the CLI; Ctrl-C stops cleanly (writes finished, checkpoints kept)."""
    return asyncio.run(generate(config, out=out))


__all__ = ["RUN_FILES", "RunError", "RunSummary", "prepare_run_dir", "load_sources", "generate", "GenerateRecipe",
           "compute_stats", "run_generate"]
