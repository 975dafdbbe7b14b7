"""The reasoning-trajectory graph (DESIGN §8) and the `synth refine` run around it.

    distill ──▶ verify ──match──▶ reformulate ──▶ refine ──▶ verify_refined ──ok──▶ emit ──▶ END
       ▲          │                                 ▲            │
       └──retry───┤ (at most max_distill_attempts)  └───retry────┤ (at most max_refine_attempts)
                  └──attempts spent──▶ drop ──▶ END               └──attempts spent──▶ emit (distilled only)

The teacher (roles/refiner.yaml) distills step-by-step reasoning for a question whose reference answer is known;
only a trace whose answer matches the reference (synth.matchers) goes on. It is reformulated into
<Analyze>/<Understand>/<Answer> (the `distilled` record), then refined around K keywords sampled from
checklists/keywords.yaml (seeded, deterministic per item id). The refined trace is kept (the `refined` record)
only when it still parses, still matches the reference and really contains every keyword.

State is plain JSON-able data for the SQLite checkpointer (thread id = item id); every node is idempotent and
emit/drop dedupe by record id / item id, so `--resume` after a crash loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import json
import operator
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, TextIO, TypedDict

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The episode sink of `synth generate` (JSONL with id dedupe) is shared.
from synth.graphs.interaction import EpisodeSink
from synth.jsonl import read_jsonl, repair_jsonl
from synth.llm.base import ChatModel
from synth.llm.metering import MeteredModel, add_usage, usage_totals
from synth.matchers import DEFAULT_CHAIN, MatchResult, match_answer, parse_chain

KEYWORDS_FILE = "keywords.yaml"
MIN_REASONING_WORDS = 8
_FINAL_RE = re.compile(r"final answer\s*[:：]\s*(.+)", re.IGNORECASE)


class RefineError(ValueError):
    """`synth refine` cannot start or continue; the message is one line saying what and where."""


# --- keywords --------------------------------------------------------------------------------------------------


def load_keywords(checklists_dir: Path | None = None) -> dict[str, list[str]]:
    """Keyword groups from `checklists_dir/keywords.yaml` if present, else the built-in vocabulary."""
    from synth.checklist import checklist_dirs

    for directory in checklist_dirs(checklists_dir):
        path = Path(directory) / KEYWORDS_FILE
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise RefineError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
            groups = data.get("groups") if isinstance(data, dict) else None
            if not isinstance(groups, dict) or not groups or not all(
                    isinstance(v, list) and v and all(isinstance(k, str) and k.strip() for k in v)
                    for v in groups.values()):
                raise RefineError(f"{path}: expected `groups:` mapping group names to non-empty lists of phrases")
            return {str(name): [k.strip() for k in phrases] for name, phrases in groups.items()}
    raise RefineError(f"no {KEYWORDS_FILE} in {', '.join(str(d) for d in checklist_dirs(checklists_dir))}")


def keyword_vocabulary(groups: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(k for phrases in groups.values() for k in phrases))


def sample_keywords(vocabulary: Sequence[str], k: int, *, seed: int, item_id: str) -> list[str]:
    """K distinct phrases; the same (seed, item id) always draws the same ones, whatever the run order."""
    if k <= 0:
        return []
    rng = random.Random(f"{seed}:{item_id}")  # str seeds hash with sha512: stable across processes
    return rng.sample(list(vocabulary), min(k, len(vocabulary)))


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[\"'“”‘’`*]", "", text).lower().split())


def missing_keywords(trace: str, keywords: Sequence[str]) -> list[str]:
    """Keywords not written in `trace` (case, quotes and spacing ignored; trailing ?/./! optional)."""
    body = _squash(trace)
    return [k for k in keywords if _squash(k).rstrip("?.!") not in body]


# --- traces ----------------------------------------------------------------------------------------------------


def final_answer_of(reasoning: str) -> str | None:
    """The distilled reasoning's answer: its last `Final answer:` line, else its last non-empty line."""
    hits = _FINAL_RE.findall(reasoning or "")
    if hits:
        return hits[-1].strip().strip("*").strip().rstrip(".").strip() or None
    lines = [line.strip() for line in (reasoning or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _reasoning_words(reasoning: str) -> int:
    return len(_FINAL_RE.sub("", reasoning).split())


def assemble_trace(analyze: str, understand: str, answer: str) -> str:
    return (f"<Analyze>\n{analyze.strip()}\n</Analyze>\n<Understand>\n{understand.strip()}\n</Understand>\n"
            f"<Answer>\n{answer.strip()}\n</Answer>")


def trace_from_reply(reply: str) -> str | None:
    """The Analyze/Understand/Answer trace in a model reply, re-assembled canonically; None when a part is missing.

    Chatter around the tags (an intro sentence, a code fence) is dropped; several Analyze/Understand blocks are
    kept in order."""
    from synth.protocol import parse

    parsed = parse(reply or "")
    blocks = [a for a in parsed.actions if a.closed and a.kind in ("Analyze", "Understand", "Answer")]
    kinds = [a.kind for a in blocks]
    if "Analyze" not in kinds or "Understand" not in kinds or "Answer" not in kinds or kinds[0] != "Analyze":
        return None
    end = kinds.index("Answer") + 1
    parts = []
    for action in blocks[:end]:
        content = action.content.strip()
        if not content:
            return None
        parts.append(f"<{action.kind}>\n{content}\n</{action.kind}>")
    return "\n".join(parts)


def fallback_trace(reasoning: str, answer: str) -> str:
    """A deterministic reformulation when the teacher's reply is unusable: the reasoning as Analyze, its closing
    sentences (what the table showed) as Understand."""
    body = _FINAL_RE.sub("", reasoning).strip()
    body = re.sub(r"<[^>]{1,20}>", "", body).strip() or "The question asks for a value that the table gives."
    # Fragments left where "Final answer: …" was cut out ("The result is") say nothing: drop them.
    sentences = [x for x in re.split(r"(?<=[.!?])\s+", body) if len(x.split()) >= 4] or [body]
    if len(sentences) >= 2:
        cut = max(1, len(sentences) - max(1, len(sentences) // 4))
        analyze, understand = " ".join(sentences[:cut]), " ".join(sentences[cut:])
    else:
        analyze, understand = body, f"From the table, the answer is {answer}."
    return assemble_trace(analyze, understand, answer)


# Lines of the format skeletons in roles/refiner.yaml: a small model sometimes copies them instead of writing.
_SKELETON_PHRASES = ("the plan, and the reasoning steps", "the improved reasoning, using every phrase",
                     "what the relevant part of the table shows, and why", "what the relevant part of the table shows.")


def copies_skeleton(trace: str) -> bool:
    low = " ".join(trace.lower().split())
    return any(p in low for p in _SKELETON_PHRASES)


def protocol_issues(trace: str) -> list[str]:
    from synth.protocol import validate

    return [str(i) for i in validate(trace, require_answer=True, model_written=True)]


def answer_of(trace: str) -> str | None:
    from synth.protocol import parse

    answer = parse(trace).answer
    return answer.strip() if answer is not None else None


# --- state and deps --------------------------------------------------------------------------------------------


class ReasoningState(TypedDict, total=False):
    item: dict[str, Any]  # id, question, prompt, answer, dataset, category, sha256
    keywords: list[str]
    distill_attempts: int
    distilled: dict[str, Any] | None  # reasoning, answer, match
    distill_failures: Annotated[list[dict[str, Any]], operator.add]
    trace: str | None
    trace_check: dict[str, Any] | None
    refine_attempts: int
    refine_candidate: str | None
    refined: str | None
    refine_check: dict[str, Any] | None
    refine_failures: Annotated[list[dict[str, Any]], operator.add]
    outcome: str | None  # "accepted" | "duplicate" | "rejected"
    reason: str | None
    record_ids: list[str]
    usage: Annotated[dict[str, float], add_usage]
    elapsed_s: Annotated[float, operator.add]


@dataclass
class ReasoningDeps:
    """Shared, non-serialisable things the nodes use; one per run."""

    model: ChatModel
    sink: EpisodeSink
    judge_model: ChatModel | None = None
    matchers: Sequence[str] = DEFAULT_CHAIN
    max_distill_attempts: int = 2
    max_refine_attempts: int = 2
    roles_dir: Path | None = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None

    def emit_event(self, kind: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)


def item_state(item: Any, *, keywords: list[str], table_limits: dict[str, int] | None = None) -> ReasoningState:
    """The initial graph state for an InstructItem (only JSON-able data)."""
    return {
        "item": {"id": item.id, "question": item.question, "prompt": item.prompt(**(table_limits or {})),
                 "answer": item.answer, "dataset": item.dataset, "category": item.category,
                 "sha256": item.content_hash()},
        "keywords": list(keywords), "distill_attempts": 0, "distilled": None, "trace": None, "trace_check": None,
        "refine_attempts": 0, "refine_candidate": None, "refined": None, "refine_check": None, "outcome": None,
        "reason": None, "record_ids": [],
    }


def thread_id(item_id: str) -> str:
    return "refine:" + item_id


# --- the graph -------------------------------------------------------------------------------------------------


def build_reasoning_graph(deps: ReasoningDeps):
    """The uncompiled StateGraph; compile it with a checkpointer (`graph.compile(checkpointer=...)`)."""
    from langgraph.graph import END, START, StateGraph

    from synth.roles import load_role

    role = load_role("refiner", deps.roles_dir)
    params = role.params
    step = float(params.get("retry_temperature_step", 0.3))

    async def ask(meter: MeteredModel, key: str, attempt: int, **context: Any) -> str:
        settings = params.get(key) or {}
        messages = []
        system = role.render_system()
        if system.strip():
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": role.render_template(key, **context)})
        # A retry must not be a cache hit of the failed call: it samples at a higher temperature.
        temperature = min(1.2, float(settings.get("temperature", 0.3)) + step * attempt)
        completion = await meter.chat(messages, max_tokens=int(settings.get("max_tokens", 800)),
                                      temperature=round(temperature, 3))
        return completion.text

    async def verify_answer(answer: str | None, item: dict[str, Any], meters: list[MeteredModel]) -> MatchResult:
        judge = None
        if deps.judge_model is not None and "judge" in deps.matchers:
            judge = MeteredModel(deps.judge_model)
            meters.append(judge)
        return await match_answer(answer, item["answer"], deps.matchers, judge_model=judge,
                                  question=item["question"], roles_dir=deps.roles_dir)

    async def distill(state: ReasoningState) -> dict[str, Any]:
        started = time.monotonic()
        item, attempt = state["item"], int(state.get("distill_attempts") or 0)
        meter = MeteredModel(deps.model)
        reasoning = await ask(meter, "distill", attempt, prompt=item["prompt"], question=item["question"])
        return {"distilled": {"reasoning": reasoning, "answer": final_answer_of(reasoning), "match": None},
                "distill_attempts": attempt + 1, "usage": usage_totals(meter),
                "elapsed_s": time.monotonic() - started}

    async def verify(state: ReasoningState) -> dict[str, Any]:
        started = time.monotonic()
        item, distilled = state["item"], dict(state["distilled"] or {})
        meters: list[MeteredModel] = []
        if _reasoning_words(distilled.get("reasoning") or "") < MIN_REASONING_WORDS:
            # A bare answer has no reasoning to distill: it is no trace, whatever its answer.
            result = MatchResult(False, "none", "no reasoning before the final answer")
        else:
            result = await verify_answer(distilled.get("answer"), item, meters)
        distilled["match"] = result.to_dict()
        update: dict[str, Any] = {"distilled": distilled, "usage": usage_totals(*meters),
                                  "elapsed_s": time.monotonic() - started}
        if not result.matched:
            update["distill_failures"] = [{"attempt": state.get("distill_attempts", 1),
                                           "answer": distilled.get("answer"), "detail": result.detail}]
        deps.emit_event("distilled", item=item["id"], matched=result.matched)
        return update

    def after_verify(state: ReasoningState) -> str:
        if (state.get("distilled") or {}).get("match", {}).get("matched"):
            return "reformulate"
        return "distill" if state.get("distill_attempts", 0) < deps.max_distill_attempts else "drop"

    async def reformulate(state: ReasoningState) -> dict[str, Any]:
        started = time.monotonic()
        item, distilled = state["item"], state["distilled"]
        answer = str(distilled["answer"])
        meter = MeteredModel(deps.model)
        reply = await ask(meter, "reformulate", 0, prompt=item["prompt"], question=item["question"],
                          reasoning=distilled["reasoning"], answer=answer)
        meters = [meter]
        trace = trace_from_reply(reply)
        problem = None
        if trace is None:
            problem = "reply lacks closed <Analyze>, <Understand> and <Answer> blocks"
        elif copies_skeleton(trace):
            problem = "reply copies the format instructions instead of the solution"
        elif protocol_issues(trace):
            problem = "; ".join(protocol_issues(trace))[:300]
        else:
            result = await verify_answer(answer_of(trace), item, meters)
            if not result.matched:
                problem = f"the reformulated answer no longer matches ({result.detail})"
        by_model = problem is None
        if not by_model:
            trace = fallback_trace(distilled["reasoning"], answer)
        check = {"by_model": by_model, "problem": problem, "issues": protocol_issues(trace),
                 "match": distilled["match"]}
        return {"trace": trace, "trace_check": check, "usage": usage_totals(*meters),
                "elapsed_s": time.monotonic() - started}

    async def refine(state: ReasoningState) -> dict[str, Any]:
        started = time.monotonic()
        item, attempt = state["item"], int(state.get("refine_attempts") or 0)
        failures = state.get("refine_failures") or []
        meter = MeteredModel(deps.model)
        reply = await ask(meter, "refine", attempt, prompt=item["prompt"], question=item["question"],
                          trace=state["trace"], keywords=state.get("keywords") or [],
                          answer=answer_of(state["trace"]) or "", feedback=failures[-1]["reason"] if failures else "")
        return {"refine_candidate": reply, "refine_attempts": attempt + 1, "usage": usage_totals(meter),
                "elapsed_s": time.monotonic() - started}

    async def verify_refined(state: ReasoningState) -> dict[str, Any]:
        started = time.monotonic()
        item, keywords = state["item"], state.get("keywords") or []
        candidate = trace_from_reply(state.get("refine_candidate") or "")
        meters: list[MeteredModel] = []
        check: dict[str, Any] = {"attempt": state.get("refine_attempts", 1)}
        if candidate is None:
            reason = "the reply lacks closed <Analyze>, <Understand> and <Answer> blocks"
        elif copies_skeleton(candidate):
            reason = "the reply copies the format instructions instead of writing the improved solution"
        elif issues := protocol_issues(candidate):
            reason = "protocol issues: " + "; ".join(issues)[:300]
        else:
            result = await verify_answer(answer_of(candidate), item, meters)
            check["match"] = result.to_dict()
            missing = missing_keywords(candidate, keywords)
            check["missing_keywords"] = missing
            if not result.matched:
                reason = f"answer changed: {answer_of(candidate)!r} no longer matches the reference"
            elif missing:
                reason = "missing keywords: " + "; ".join(f'"{k}"' for k in missing)
            else:
                reason = None
        update: dict[str, Any] = {"usage": usage_totals(*meters), "elapsed_s": time.monotonic() - started}
        if reason is None:
            update.update(refined=candidate, refine_check=check)
        else:
            update["refine_failures"] = [{**check, "reason": reason}]
        deps.emit_event("refined", item=item["id"], kept=reason is None)
        return update

    def after_refine(state: ReasoningState) -> str:
        if state.get("refined"):
            return "emit"
        return "refine" if state.get("refine_attempts", 0) < deps.max_refine_attempts else "emit"

    async def emit(state: ReasoningState) -> dict[str, Any]:
        item = state["item"]
        models = {"refiner": deps.model.name}
        if deps.judge_model is not None and "judge" in deps.matchers:
            models["judge"] = deps.judge_model.name
        records = [_reasoning_record(state, "distilled", models)]
        if state.get("refined"):
            records.append(_reasoning_record(state, "refined", models))
        written = [await deps.sink.write_record(r, thread_id(item["id"])) for r in records]
        failures = state.get("refine_failures") or []
        if not state.get("refined"):
            await deps.sink.write_rejected({
                "episode_id": thread_id(item["id"]), "item_id": item["id"], "stage": "refine",
                "dataset": item["dataset"], "reason": failures[-1]["reason"] if failures else "not refined",
                "keywords": state.get("keywords") or [], "reference": item["answer"], "failures": failures,
                "candidate": state.get("refine_candidate"), "usage": _usage_of(state)})
        outcome = "accepted" if any(written) else "duplicate"
        deps.emit_event("done", episode=item["id"], outcome=outcome, usage=state.get("usage"))
        return {"outcome": outcome, "record_ids": [r["id"] for r in records]}

    async def drop(state: ReasoningState) -> dict[str, Any]:
        item = state["item"]
        failures = state.get("distill_failures") or []
        reason = f"distilled answer did not match the reference after {state.get('distill_attempts', 0)} attempt(s)"
        await deps.sink.write_rejected({
            "episode_id": thread_id(item["id"]), "item_id": item["id"], "stage": "distill",
            "dataset": item["dataset"], "reason": reason, "keywords": state.get("keywords") or [],
            "reference": item["answer"], "failures": failures,
            "reasoning": (state.get("distilled") or {}).get("reasoning"), "usage": _usage_of(state)})
        deps.emit_event("done", episode=item["id"], outcome="rejected", usage=state.get("usage"))
        return {"outcome": "rejected", "reason": reason}

    graph = StateGraph(ReasoningState)
    for name, node in (("distill", distill), ("verify", verify), ("reformulate", reformulate), ("refine", refine),
                       ("verify_refined", verify_refined), ("emit", emit), ("drop", drop)):
        graph.add_node(name, node)
    graph.add_edge(START, "distill")
    graph.add_edge("distill", "verify")
    graph.add_conditional_edges("verify", after_verify, ["reformulate", "distill", "drop"])
    graph.add_edge("reformulate", "refine")
    graph.add_edge("refine", "verify_refined")
    graph.add_conditional_edges("verify_refined", after_refine, ["emit", "refine"])
    graph.add_edge("emit", END)
    graph.add_edge("drop", END)
    return graph


def _usage_of(state: ReasoningState) -> dict[str, Any]:
    return {**(state.get("usage") or {}), "elapsed_s": round(float(state.get("elapsed_s") or 0.0), 3)}


def _reasoning_record(state: ReasoningState, variant: Literal["distilled", "refined"],
                      models: dict[str, str]) -> dict[str, Any]:
    from synth.checklist import ItemVerdict, Verdict
    from synth.dataset.record import Record, RewardSpec, SourceRef, record_id

    item = state["item"]
    trace = state["refined"] if variant == "refined" else state["trace"]
    match = (state["refine_check"] or {}).get("match") if variant == "refined" else state["distilled"]["match"]
    source = SourceRef(name=f"{item['dataset']}:{item['id']}", sha256=item["sha256"])
    checks = [
        ItemVerdict(id="answer_matches", kind="rule", passed=True,
                    reason=f"{match['method']} match with the reference ({match['detail']})"),
        ItemVerdict(id="protocol_valid", kind="rule", passed=True, reason="parses with synth.protocol, no issues"),
    ]
    if variant == "refined":
        checks.append(ItemVerdict(id="keywords_present", kind="rule", passed=True,
                                  reason=f"all {len(state.get('keywords') or [])} keywords in the trace"))
    else:
        by_model = bool((state.get("trace_check") or {}).get("by_model"))
        checks.append(ItemVerdict(
            id="reformulated_by_model", kind="rule", passed=by_model, required=False,
            reason="the teacher's reformulation" if by_model else
            f"deterministic fallback: {(state.get('trace_check') or {}).get('problem')}"))
    usage = _usage_of(state)
    usage.update(distill_attempts=state.get("distill_attempts", 0), refine_attempts=state.get("refine_attempts", 0))
    record = Record(
        id=record_id([source], item["question"], variant=variant),
        kind="reasoning", category=item["category"],
        messages=[{"role": "user", "content": item["prompt"]}, {"role": "assistant", "content": trace}],
        verdict=Verdict(items=checks, decision="accept", score=1.0),
        reference=item["answer"], reward_spec=RewardSpec(method="qa", ground_truth=item["answer"]),
        sources=[source], models=models, usage=usage, revisions=max(0, int(state.get("refine_attempts", 0)) - 1)
        if variant == "refined" else max(0, int(state.get("distill_attempts", 0)) - 1),
        variant=variant, keywords=list(state.get("keywords") or []) if variant == "refined" else [],
    )
    return record.model_dump(mode="json")


async def run_item(compiled, initial: ReasoningState) -> ReasoningState:
    """Run (or continue, after a crash) one item on a compiled graph; thread id = refine:<item id>."""
    config = {"configurable": {"thread_id": thread_id(initial["item"]["id"])}}
    snapshot = await compiled.aget_state(config)
    if snapshot.values and not snapshot.next:
        return snapshot.values
    if snapshot.values and snapshot.next:
        return await compiled.ainvoke(None, config)
    return await compiled.ainvoke(initial, config)


# --- the run (`synth refine`) ----------------------------------------------------------------------------------


class RefineConfig(BaseModel):
    """Every `synth refine` option; a run dir stores the resolved one as config.yaml (reused by --resume)."""

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(..., description="Instruction data: a file or folder; only read.")
    format: Literal["auto", "wikitq", "tablebench", "jsonl", "json", "csv", "tsv", "parquet", "hf"] = "auto"
    question_field: str | None = None
    answer_field: str | None = None
    table_field: str | None = None
    context_field: str | None = None
    id_field: str | None = None
    out: Path | None = None
    limit: int | None = Field(None, ge=1)
    model: str = "embedded"
    judge_model: str | None = Field(None, description="Model spec of the LLM judge (enables the `judge` matcher).")
    base_url: str | None = None
    concurrency: int = Field(2, ge=1, le=256)
    keywords_per_trace: int = Field(3, ge=0, le=20)
    seed: int = 0
    matchers: str = Field("auto", description="Matcher chain, e.g. 'exact,wikitq,numeric,contains,judge'.")
    max_distill_attempts: int = Field(2, ge=1, le=10)
    max_refine_attempts: int = Field(2, ge=1, le=10)
    max_table_rows: int = Field(40, ge=1)
    max_table_chars: int = Field(6000, ge=200)
    roles: Path | None = None
    checklists: Path | None = None
    resume: bool = False
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    def resolved(self) -> "RefineConfig":
        updates = {name: Path(getattr(self, name)).expanduser().resolve()
                   for name in ("input", "out", "roles", "checklists") if getattr(self, name) is not None}
        return self.model_copy(update=updates)

    def chain(self) -> list[str]:
        names = parse_chain(self.matchers)
        if self.judge_model and "judge" not in names and self.matchers == "auto":
            names.append("judge")
        return names


@dataclass
class RefineSummary:
    run_dir: Path
    planned: int
    records: int
    rejected: int
    errors: int
    interrupted: bool
    stats: dict[str, Any] = field(default_factory=dict)


def _load_config(path: Path, **overrides: Any) -> RefineConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RefineError(f"{path}: cannot read the run config ({' '.join(str(exc).split())[:200]})") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(data, str(path))


def _validate(data: dict[str, Any], where: str) -> RefineConfig:
    try:
        return RefineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        raise RefineError(f"{where}: {loc}: {msg}") from None


def prepare_refine_dir(config: RefineConfig) -> tuple[Path, RefineConfig]:
    """Create the run dir and store the config; on --resume, reuse the stored one (concurrency from the caller)."""
    config = config.resolved()
    run_dir = config.out or Path("runs").resolve() / time.strftime("refine-%Y%m%d-%H%M%S")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if config.resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise RefineError(f"--resume: {saved} not found; nothing to resume there")
        config = _load_config(saved).model_copy(update={"resume": True, "out": run_dir,
                                                        "concurrency": config.concurrency,
                                                        "executor": config.executor,
                                                        "ray_address": config.ray_address})
    else:
        if occupied:
            raise RefineError(f"run dir {run_dir} is not empty; pass --resume to continue it or choose another --out")
        if not config.input.exists():
            raise RefineError(f"--input {config.input}: no such file or directory")
        if config.input.is_dir() and run_dir.resolve().is_relative_to(config.input):
            raise RefineError(f"--out {run_dir} is inside the input folder {config.input}; inputs are never written to")
        config = config.model_copy(update={"out": run_dir})
        run_dir.mkdir(parents=True, exist_ok=True)
        data = config.model_dump(mode="json", exclude={"resume"})
        (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return run_dir, config


def _load_models(config: RefineConfig, run_dir: Path) -> tuple[ChatModel, ChatModel | None]:
    from synth.llm import load_model
    from synth.llm.cache import CachedChatModel

    def one(spec: str) -> ChatModel:
        options = {"base_url": config.base_url} if config.base_url and spec.startswith("openai:") else {}
        return CachedChatModel(load_model(spec, **options), run_dir / "cache.sqlite")

    model = one(config.model)
    judge = None
    if "judge" in config.chain():
        judge = model if (config.judge_model or config.model) == config.model else one(config.judge_model)
    return model, judge


async def refine(config: RefineConfig, *, model: ChatModel | None = None, judge_model: ChatModel | None = None,
                 out: TextIO | None = None, live: bool | None = None, executor: Any = None) -> RefineSummary:
    """Run (or resume) a refine run. `model` (and `judge_model`) replace loading them from the config;
    `executor` (synth.executors) replaces the one the config names."""
    from synth.executors import ExecutorError, make_executor
    from synth.instruct_data import InstructDataError, read_items
    from synth.matchers import MatcherError
    from synth.progress import RunProgress

    out = out or sys.stderr
    try:
        executor = executor or make_executor(config.executor, address=config.ray_address)
    except ExecutorError as exc:
        raise RefineError(str(exc)) from None
    if model is not None and executor.name != "local":
        raise RefineError(f"--executor {executor.name} loads the configured model specs on every worker; "
                          "in-process model= only works with the local executor")
    config = config.resolved()
    if config.resume:  # the stored config says what to read
        run_dir, config = prepare_refine_dir(config)
    try:
        chain = config.chain()
        items = read_items(config.input, config.format, question_field=config.question_field,
                           answer_field=config.answer_field, table_field=config.table_field,
                           context_field=config.context_field, id_field=config.id_field, limit=config.limit)
        vocabulary = keyword_vocabulary(load_keywords(config.checklists))
    except (InstructDataError, MatcherError) as exc:
        raise RefineError(str(exc)) from None
    if not config.resume:  # only a run that can start gets a run dir
        run_dir, config = prepare_refine_dir(config)
    records_path, rejected_path = run_dir / "records.jsonl", run_dir / "rejected.jsonl"
    for path in (records_path, rejected_path):
        repair_jsonl(path)
        path.touch()
    sink = EpisodeSink(records_path, rejected_path)
    owned = model is None
    if model is None:
        model, judge_model = _load_models(config, run_dir)
    progress = RunProgress(len(items), out, live=live)
    deps = ReasoningDeps(model=model, sink=sink, judge_model=judge_model, matchers=chain,
                         max_distill_attempts=config.max_distill_attempts,
                         max_refine_attempts=config.max_refine_attempts, roles_dir=config.roles,
                         on_event=progress.event)
    limits = {"max_rows": config.max_table_rows, "max_chars": config.max_table_chars}
    started = time.monotonic()
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
        compiled = build_reasoning_graph(deps).compile(checkpointer=saver)
        from synth.executors import GraphWork, Job, RefineRecipe, run_to_end

        jobs = [Job(thread_id(item.id), item_state(item, table_limits=limits, keywords=sample_keywords(
            vocabulary, config.keywords_per_trace, seed=config.seed, item_id=item.id))) for item in items]
        work = GraphWork(jobs, compiled=compiled, sink=sink, progress=progress, invoke=run_item,
                         end_nodes=("emit", "drop"), recipe=lambda: RefineRecipe(config, run_dir))
        errors, interrupted = await run_to_end(executor, work, concurrency=config.concurrency, progress=progress,
                                               close=[m for m in (model, judge_model) if m is not None] if owned else [])
    stats = compute_refine_stats(run_dir, planned=len(items), vocabulary=vocabulary,
                                 wall_s=time.monotonic() - started)
    (run_dir / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    if interrupted:
        print(f"interrupted; continue with: synth refine --out {run_dir} --resume", file=out)
    return RefineSummary(run_dir=run_dir, planned=len(items), records=stats["records"], rejected=stats["rejected"],
                         errors=errors, interrupted=interrupted, stats=stats)


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
    return {
        "planned": planned,
        "records": len(records),
        "rejected": len(rejected),
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


def refine_command(options: dict[str, Any], *, out: TextIO | None = None) -> int:
    """`synth refine`: build the config from the options, run, print where the records are."""
    out = out or sys.stderr
    given = {k: v for k, v in options.items() if v is not None}
    try:
        if given.get("resume") and given.get("out") is not None and "input" not in given:
            given["input"] = "."  # replaced by the stored config in prepare_refine_dir
        if "input" not in given:
            raise RefineError("--input PATH is required (or --out RUN_DIR --resume)")
        config = _validate(given, "options")
        summary = asyncio.run(refine(config, out=out))
    except RefineError as exc:
        print(f"error: {exc}", file=out)
        return 2
    except KeyboardInterrupt:
        return 130
    s = summary.stats
    print(f"{summary.records} records ({s['distill']['verified']} distilled, {s['refine']['kept']} refined) from "
          f"{summary.planned} items; distill accuracy {s['distill']['accuracy']}, refine keep-rate "
          f"{s['refine']['keep_rate']}"
          f"{f'; {summary.errors} failed (rerun with --resume)' if summary.errors else ''}", file=out)
    print(f"records: {summary.run_dir / 'records.jsonl'}  stats: {summary.run_dir / 'stats.json'}", file=out)
    return 130 if summary.interrupted else (1 if summary.errors else 0)


__all__ = [
    "RefineConfig", "RefineError", "RefineSummary", "ReasoningDeps", "ReasoningState", "build_reasoning_graph",
    "compute_refine_stats", "load_keywords", "keyword_vocabulary", "sample_keywords", "missing_keywords",
    "final_answer_of", "trace_from_reply", "fallback_trace", "copies_skeleton", "item_state", "run_item", "refine",
    "refine_command",
]
