"""The reasoning-trajectory graph (DESIGN §8), run by `synth refine` (synth/refine.py).

    distill ──▶ verify ──match──▶ reformulate ──▶ refine ──▶ verify_refined ──ok──▶ emit ──▶ END
       ▲          │                                 ▲            │
       └──retry───┤ (at most max_distill_attempts)  └───retry────┤ (at most max_refine_attempts)
                  └──attempts spent──▶ drop ──▶ END               └──attempts spent──▶ emit (distilled only)

The teacher (synth.refiner.Teacher) distills step-by-step reasoning for a question whose reference answer is
known; only a trace whose answer matches the reference (synth.matchers) goes on. It is reformulated into
<Analyze>/<Understand>/<Answer> (the `distilled` record), then refined around K sampled keywords. The refined
trace is kept (the `refined` record) only when it still parses, still matches the reference and really contains
every keyword.

State is plain JSON-able data for the SQLite checkpointer (thread id = refine:<item id>); every node is a
module-level function of (state, deps), idempotent, and emit/drop dedupe by record id / item id, so `--resume`
after a crash loses and duplicates nothing.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, TypedDict

from synth.graphs import bind, run_thread
from synth.llm.base import ChatModel
from synth.llm.metering import MeteredModel, add_usage, usage_totals
from synth.matchers import DEFAULT_CHAIN, MatchResult, match_answer
from synth.refiner import (
    MIN_REASONING_WORDS,
    Teacher,
    answer_of,
    copies_skeleton,
    fallback_trace,
    final_answer_of,
    missing_keywords,
    protocol_issues,
    reasoning_words,
    trace_from_reply,
)


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
    """The runtime context of the graph: shared, non-serialisable things the nodes use; one per run."""

    model: ChatModel
    sink: Any  # synth.dataset.sink.RecordSink, or a worker's collecting sink
    judge_model: ChatModel | None = None
    matchers: Sequence[str] = DEFAULT_CHAIN
    max_distill_attempts: int = 2
    max_refine_attempts: int = 2
    roles_dir: Path | None = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    teacher: Teacher | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.teacher is None:
            self.teacher = Teacher(self.roles_dir)

    def emit_event(self, kind: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)

    async def verify_answer(self, answer: str | None, item: dict[str, Any], meters: list[MeteredModel]) -> MatchResult:
        judge = None
        if self.judge_model is not None and "judge" in self.matchers:
            judge = MeteredModel(self.judge_model)
            meters.append(judge)
        return await match_answer(answer, item["answer"], self.matchers, judge_model=judge,
                                  question=item["question"], roles_dir=self.roles_dir)


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


# --- nodes -----------------------------------------------------------------------------------------------------

async def distill(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
    started = time.monotonic()
    item, attempt = state["item"], int(state.get("distill_attempts") or 0)
    meter = MeteredModel(deps.model)
    reasoning = await deps.teacher.ask(meter, "distill", attempt, prompt=item["prompt"], question=item["question"])
    return {"distilled": {"reasoning": reasoning, "answer": final_answer_of(reasoning), "match": None},
            "distill_attempts": attempt + 1, "usage": usage_totals(meter),
            "elapsed_s": time.monotonic() - started}

async def verify(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
    started = time.monotonic()
    item, distilled = state["item"], dict(state["distilled"] or {})
    meters: list[MeteredModel] = []
    if reasoning_words(distilled.get("reasoning") or "") < MIN_REASONING_WORDS:
        # A bare answer has no reasoning to distill: it is no trace, whatever its answer.
        result = MatchResult(False, "none", "no reasoning before the final answer")
    else:
        result = await deps.verify_answer(distilled.get("answer"), item, meters)
    distilled["match"] = result.to_dict()
    update: dict[str, Any] = {"distilled": distilled, "usage": usage_totals(*meters),
                              "elapsed_s": time.monotonic() - started}
    if not result.matched:
        update["distill_failures"] = [{"attempt": state.get("distill_attempts", 1),
                                       "answer": distilled.get("answer"), "detail": result.detail}]
    deps.emit_event("distilled", item=item["id"], matched=result.matched)
    return update

def after_verify(state: ReasoningState, deps: ReasoningDeps) -> str:
    if (state.get("distilled") or {}).get("match", {}).get("matched"):
        return "reformulate"
    return "distill" if state.get("distill_attempts", 0) < deps.max_distill_attempts else "drop"

async def reformulate(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
    started = time.monotonic()
    item, distilled = state["item"], state["distilled"]
    answer = str(distilled["answer"])
    meter = MeteredModel(deps.model)
    reply = await deps.teacher.ask(meter, "reformulate", 0, prompt=item["prompt"], question=item["question"],
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
        result = await deps.verify_answer(answer_of(trace), item, meters)
        if not result.matched:
            problem = f"the reformulated answer no longer matches ({result.detail})"
    by_model = problem is None
    if not by_model:
        trace = fallback_trace(distilled["reasoning"], answer)
    check = {"by_model": by_model, "problem": problem, "issues": protocol_issues(trace),
             "match": distilled["match"]}
    return {"trace": trace, "trace_check": check, "usage": usage_totals(*meters),
            "elapsed_s": time.monotonic() - started}

async def refine(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
    started = time.monotonic()
    item, attempt = state["item"], int(state.get("refine_attempts") or 0)
    failures = state.get("refine_failures") or []
    meter = MeteredModel(deps.model)
    reply = await deps.teacher.ask(meter, "refine", attempt, prompt=item["prompt"], question=item["question"],
                      trace=state["trace"], keywords=state.get("keywords") or [],
                      answer=answer_of(state["trace"]) or "", feedback=failures[-1]["reason"] if failures else "")
    return {"refine_candidate": reply, "refine_attempts": attempt + 1, "usage": usage_totals(meter),
            "elapsed_s": time.monotonic() - started}

async def verify_refined(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
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
        result = await deps.verify_answer(answer_of(candidate), item, meters)
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

def after_refine(state: ReasoningState, deps: ReasoningDeps) -> str:
    if state.get("refined"):
        return "emit"
    return "refine" if state.get("refine_attempts", 0) < deps.max_refine_attempts else "emit"

async def emit(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
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

async def drop(state: ReasoningState, deps: ReasoningDeps) -> dict[str, Any]:
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


def _usage_of(state: ReasoningState) -> dict[str, Any]:
    return {**(state.get("usage") or {}), "elapsed_s": round(float(state.get("elapsed_s") or 0.0), 3)}


def _reasoning_record(state: ReasoningState, variant: Literal["distilled", "refined"],
                      models: dict[str, str]) -> dict[str, Any]:
    from synth.checklist import ItemVerdict, Verdict
    from synth.dataset.record import Record, Reference, RewardSpec, record_id
    from synth.sources.ref import SourceRef

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
        reference=Reference(value=item["answer"], verified_by="given"),
        reward_spec=RewardSpec(method="qa", ground_truth=item["answer"]),
        sources=[source], models=models, usage=usage, revisions=max(0, int(state.get("refine_attempts", 0)) - 1)
        if variant == "refined" else max(0, int(state.get("distill_attempts", 0)) - 1),
        variant=variant, keywords=list(state.get("keywords") or []) if variant == "refined" else [],
    )
    return record.model_dump(mode="json")



def build_reasoning_graph():
    """The uncompiled StateGraph; compile it with a checkpointer and run it with `run_item`."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(ReasoningState, context_schema=ReasoningDeps)
    for node in (distill, verify, reformulate, refine, verify_refined, emit, drop):
        graph.add_node(node.__name__, bind(node))
    graph.add_edge(START, "distill")
    graph.add_edge("distill", "verify")
    graph.add_conditional_edges("verify", bind(after_verify), ["reformulate", "distill", "drop"])
    graph.add_edge("reformulate", "refine")
    graph.add_edge("refine", "verify_refined")
    graph.add_conditional_edges("verify_refined", bind(after_refine), ["emit", "refine"])
    graph.add_edge("emit", END)
    graph.add_edge("drop", END)
    return graph


async def run_item(compiled: Any, initial: ReasoningState, deps: ReasoningDeps) -> ReasoningState:
    """Run (or continue, after a crash) one item on a compiled graph; thread id = refine:<item id>."""
    return await run_thread(compiled, thread_id(initial["item"]["id"]), initial, deps)  # type: ignore[return-value]


__all__ = ["ReasoningState", "ReasoningDeps", "item_state", "thread_id", "distill", "verify", "reformulate",
           "refine", "verify_refined", "emit", "drop", "build_reasoning_graph", "run_item"]
