"""`synth generate`: fan episodes of the interaction graph out over the sources, concurrently and resumably.

A run directory holds config.yaml (the resolved config), records.jsonl (accepted), rejected.jsonl (with verdicts),
stats.json, checkpoints.sqlite (LangGraph checkpoints, thread id = episode id) and cache.sqlite (model replies).
The episode plan is a pure function of the config, so `--resume` replays the same plan: finished episodes are
skipped, interrupted ones continue from their last checkpoint, and emit dedupes by record id.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

from synth.config import ConfigError, GenerateConfig
from synth.graphs.interaction import (
    EpisodeDeps,
    EpisodeSink,
    SourceInfo,
    build_interaction_graph,
    run_episode,
)
from synth.jsonl import read_jsonl, repair_jsonl
from synth.llm.base import ChatModel
from synth.progress import RunLog, RunProgress
from synth.sampler import NearDuplicateIndex, SourceRef, plan_episodes
from synth.sandbox.base import Limits

if TYPE_CHECKING:
    from synth.executors import Executor

RUN_FILES = ("config.yaml", "records.jsonl", "rejected.jsonl", "stats.json", "checkpoints.sqlite", "cache.sqlite")


class RunError(RuntimeError):
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


def prepare_run_dir(config: GenerateConfig) -> tuple[Path, GenerateConfig]:
    """Check and create the run dir; on --resume, return the stored config (runtime options from the caller)."""
    config = config.resolved()
    run_dir = config.out or Path("runs").resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    sources = config.sources
    if not sources.exists():
        raise RunError(f"--sources {sources}: no such file or directory")
    if _inside(run_dir, sources if sources.is_dir() else sources.parent) and sources.is_dir():
        raise RunError(f"--out {run_dir} is inside the source folder {sources}; sources are never written to")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if occupied and not config.resume:
        raise RunError(f"run dir {run_dir} is not empty; pass --resume to continue that run or choose another --out")
    if config.resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise RunError(f"--resume: {saved} not found; nothing to resume there")
        stored = GenerateConfig.load(saved)
        limit = stored.limit
        if config.limit is not None and config.limit != stored.limit:
            # The plan is a prefix-stable function of the config, so a run can grow: the new episodes are appended.
            if stored.limit is None or config.limit < stored.limit:
                raise RunError(f"--resume --limit {config.limit}: the run in {run_dir} plans "
                               f"{stored.limit if stored.limit is not None else 'every'} episode(s); a resumed run "
                               "can only grow (give a larger --limit, or none)")
            limit = config.limit
        config = stored.model_copy(update={"resume": True, "out": run_dir, "concurrency": config.concurrency,
                                           "executor": config.executor, "ray_address": config.ray_address,
                                           "limit": limit})
        if limit != stored.limit:
            config.save(saved)
    else:
        config = config.model_copy(update={"out": run_dir})
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
    return run_dir, config


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def load_sources(config: GenerateConfig, warn: Callable[[str], None]) -> dict[str, SourceInfo]:
    from synth.sources import profile_all

    root = config.sources
    results = profile_all(root)
    sources: dict[str, SourceInfo] = {}
    for item in results:
        if not hasattr(item, "sha256"):  # a SourceError: the run goes on without it
            warn(f"skipping source {item}")
            continue
        path = Path(item.path)
        if not path.is_absolute():
            path = (root if root.is_dir() else root.parent) / path
        sources[item.name] = SourceInfo(name=item.name, path=path, sha256=item.sha256, prompt=item.to_prompt(max_chars=2500),
                                        kind=str(item.kind), card=item)
    if not sources:
        raise RunError(f"--sources {root}: no usable data sources found")
    documents = [name for name, info in sources.items() if not (info.card and info.card.tables)]
    if len(documents) < len(sources):
        # Tasks are computed over tables; a LICENSE or README next to a database is context, not a task source.
        for name in documents:
            warn(f"not planning tasks on {name}: a document without tables")
            del sources[name]
    return sources


def load_models(config: GenerateConfig, run_dir: Path) -> dict[str, ChatModel]:
    """One cached model per role; roles naming the same spec share one instance."""
    from synth.llm import load_model
    from synth.llm.cache import CachedChatModel

    by_spec: dict[str, ChatModel] = {}
    models = {}
    for role in ("questioner", "solver", "inspector"):
        spec = config.model_for(role)  # type: ignore[arg-type]
        if spec not in by_spec:
            options: dict[str, Any] = {}
            if config.base_url and spec.startswith("openai:"):
                options["base_url"] = config.base_url
            by_spec[spec] = CachedChatModel(load_model(spec, **options), run_dir / "cache.sqlite")
        models[role] = by_spec[spec]
    return models


async def generate(
    config: GenerateConfig,
    *,
    models: dict[str, ChatModel] | None = None,
    out: TextIO | None = None,
    live: bool | None = None,
    executor: "Executor | None" = None,
) -> RunSummary:
    """Run (or resume) a generation run. `models` (role → ChatModel) replaces loading them from the config;
    `executor` replaces the one the config names (synth.executors)."""
    out = out or sys.stderr
    executor = executor or _executor_for(config)
    if models is not None and executor.name != "local":
        raise RunError(f"--executor {executor.name} loads the configured model specs on every worker; "
                       "in-process models= only work with the local executor")
    run_dir, config = prepare_run_dir(config)
    records_path, rejected_path = run_dir / "records.jsonl", run_dir / "rejected.jsonl"
    for path in (records_path, rejected_path):
        repair_jsonl(path)
        path.touch()
    log = RunLog(out)
    sources = load_sources(config, log.line)
    plan = plan_episodes([SourceRef(s.name, s.sha256) for s in sources.values()], config.categories,
                         config.difficulties, limit=config.limit, seed=config.seed)
    sink = EpisodeSink(records_path, rejected_path)
    owned_models = models is None
    models = models or load_models(config, run_dir)
    from synth.sandbox import get_sandbox

    progress = RunProgress(len(plan), out, live=live)
    deps = EpisodeDeps(
        questioner_model=models["questioner"], solver_model=models["solver"], inspector_model=models["inspector"],
        sandbox=get_sandbox(config.backend), sources=sources, sink=sink, work_dir=run_dir / "work",
        mode=config.mode, limits=Limits(timeout_s=config.cell_timeout_s), max_rounds=config.max_rounds,
        max_revisions=config.max_revisions, roles_dir=config.roles, checklists_dir=config.checklists,
        duplicates=NearDuplicateIndex(instructions=sink.accepted_instructions), on_event=progress.event,
    )
    started = time.monotonic()
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
        compiled = build_interaction_graph(deps).compile(checkpointer=saver)
        from synth.executors import GenerateRecipe, GraphWork, Job, run_to_end

        initial_instructions = list(sink.accepted_instructions)
        work = GraphWork([Job(ep.episode_id, ep.to_dict()) for ep in plan], compiled=compiled, sink=sink,
                         progress=progress, invoke=run_episode, share_instructions=True,
                         recipe=lambda: GenerateRecipe(config, sources, run_dir, initial_instructions))
        errors, interrupted = await run_to_end(executor, work, concurrency=config.concurrency, progress=progress,
                                               close=list(models.values()) if owned_models else [])
    shutil.rmtree(run_dir / "work", ignore_errors=True)
    stats = compute_stats(run_dir, planned=len(plan), wall_s=time.monotonic() - started)
    (run_dir / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    summary = RunSummary(run_dir=run_dir, planned=len(plan), accepted=stats["accepted"], rejected=stats["rejected"],
                         duplicates=progress.counts["duplicate"], errors=errors, interrupted=interrupted,
                         records_path=records_path, stats=stats)
    if interrupted:
        log.line(f"interrupted: {stats['accepted']} records kept in {records_path}; "
                 f"continue with: synth generate --out {run_dir} --resume")
    return summary


def _executor_for(config: GenerateConfig) -> "Executor":
    from synth.executors import ExecutorError, make_executor

    try:
        return make_executor(config.executor, address=config.ray_address)
    except ExecutorError as exc:
        raise RunError(str(exc)) from None


# --- stats -----------------------------------------------------------------------------------------------------


def compute_stats(run_dir: Path, *, planned: int, wall_s: float) -> dict[str, Any]:
    """stats.json, recomputed from records.jsonl and rejected.jsonl (so it is right after any resume)."""

    records = read_jsonl(run_dir / "records.jsonl")
    rejected = read_jsonl(run_dir / "rejected.jsonl")
    by_category: dict[str, Counter] = defaultdict(Counter)
    by_difficulty: dict[str, Counter] = defaultdict(Counter)
    items: dict[str, Counter] = defaultdict(Counter)
    revisions: Counter = Counter()
    usage: Counter = Counter()
    reasons: Counter = Counter()
    rows = [(r, "accepted", _episode_info(r)) for r in records] + [(r, "rejected", r) for r in rejected]
    for row, outcome, info in rows:
        by_category[info.get("category", "?")][outcome] += 1
        by_difficulty[info.get("difficulty", "?")][outcome] += 1
        revisions[int(info.get("revisions") or 0)] += 1
        for key, value in (info.get("usage") or {}).items():
            if isinstance(value, (int, float)):
                usage[key] += value
        if outcome == "rejected":
            reasons[_short_reason(row.get("reason"))] += 1
        for verdict in info.get("verdicts") or []:
            for item in verdict.get("items", []):
                items[item.get("name") or item.get("id") or "?"]["passed" if item.get("passed") else "failed"] += 1
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
        "tokens": {"prompt": int(usage["prompt_tokens"]), "completion": int(usage["completion_tokens"])},
        "llm_calls": int(usage["llm_calls"]),
        "cost_usd": round(usage["cost_usd"], 6),
        "episode_time_s": round(usage["elapsed_s"], 2),
        "wall_time_s": round(wall_s, 2),
    }


def _episode_info(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "verdicts": [record["verdict"]] if record.get("verdict") else []}


def _short_reason(reason: Any) -> str:
    text = str(reason or "unknown")
    return text.split(":")[0][:80]


def run_generate(config: GenerateConfig, *, out: TextIO | None = None) -> RunSummary:
    """Synchronous entry for the CLI; Ctrl-C stops cleanly (writes finished, checkpoints kept)."""
    try:
        return asyncio.run(generate(config, out=out))
    except ConfigError as exc:
        raise RunError(str(exc)) from exc


def generate_command(options: dict[str, Any], *, config_path: Path | None = None, out: TextIO | None = None) -> int:
    """`synth generate`: build the config (file, then explicit options), run, print where the records are."""
    out = out or sys.stderr
    given = {k: v for k, v in options.items() if v is not None}
    try:
        if config_path is not None:
            config = GenerateConfig.load(config_path, **given)
        elif given.get("resume") and "sources" not in given and given.get("out") is not None:
            stored = Path(given["out"]) / "config.yaml"
            if not stored.is_file():
                raise RunError(f"--resume: {stored} not found; nothing to resume there")
            config = GenerateConfig.load(stored, **given)
        else:
            if "sources" not in given:
                raise RunError("--sources DIR is required (or --config FILE, or --out RUN_DIR --resume)")
            config = GenerateConfig.validate_dict(given, "options")
        summary = run_generate(config, out=out)
    except (RunError, ConfigError) as exc:
        print(f"error: {exc}", file=out)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"{summary.accepted} accepted, {summary.rejected} rejected of {summary.planned} planned"
          f"{f', {summary.errors} failed (rerun with --resume)' if summary.errors else ''}", file=out)
    print(f"records: {summary.records_path}", file=out)
    print(f"rejected: {summary.run_dir / 'rejected.jsonl'}  stats: {summary.run_dir / 'stats.json'}", file=out)
    return 130 if summary.interrupted else (1 if summary.errors else 0)
