"""The interaction-trajectory graph (DESIGN §8): propose → verify → solve → inspect → accept/revise/reject.

    propose ──▶ verify ──▶ solve ──▶ inspect ──accept──────────────────▶ emit ──▶ END
       │          │          ▲          │                                 ▲
       │          │          └─revise◀──┤ (feedback, at most max_revisions)│
       │          │                     ├─still disagrees─▶ tiebreak ─────┘ (a second program agrees with the solver)
       └──────────┴───────────▶ reject ◀┘ (no task, answerable without the data, rejected, tie-break lost) ──▶ END

`propose` takes the user's task (`--tasks`) or has the questioner write one over a task seed (synth/seeds.py).
`verify` has the verifier compute a closed-form answer independently (synth/verifier.py); the solver must agree
with it (`verified_answer`), its feedback never shows the value, and when revisions cannot reconcile the two a
second independent program decides.

State is plain JSON-able data (so the SQLite checkpointer stores it); lists that grow use reducers. Every node
is idempotent: re-running it after a crash has the same effect as running it once — `propose` keeps an
already-proposed task, `solve` starts from a fresh workspace, `emit`/`reject` skip ids already written.
"""

from __future__ import annotations

import asyncio
import operator
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, TypedDict

from synth.graphs import bind, run_thread, thread_finished
from synth.llm.base import ChatModel
from synth.llm.metering import MeteredModel, add_usage, usage_totals
from synth.questioner import ProposalRequest, Questioner, QuestionerError, new_questioner, task_checklist
from synth.sampler import NearDuplicateIndex
from synth.sandbox.base import ExecutionMode, Limits, Sandbox, SandboxState
from synth.sources.card import DataCard
from synth.sources.ref import SourceRef
from synth.trajectory import Trajectory

QUESTIONER_CARD_CHARS = 2500  # the card is cut to this for the questioner (small models, slow prefill)


class EpisodeState(TypedDict, total=False):
    episode: dict[str, Any]  # synth.sampler.Episode.to_dict()
    task: dict[str, Any] | None  # TaskProposal.model_dump()
    attempts: Annotated[list[dict[str, Any]], operator.add]  # one per solve: trajectory + sandbox states
    verdicts: Annotated[list[dict[str, Any]], operator.add]  # one per inspect
    checklist: list[dict[str, Any]]  # the items the last verdict was made with (what the record stores)
    reference: dict[str, Any] | None  # synth.dataset.record.Reference: the verified (or given) reference
    closed_form: bool | None  # None: not decided (verification off); False: open-ended, nothing to verify
    tiebreak: dict[str, Any] | None  # the second independent program, when one was needed
    solves: list[dict[str, Any]]  # with --solves k: the answers of the k-1 extra independent solves
    revisions: int
    feedback: str | None
    outcome: str | None  # "accepted" | "duplicate" | "rejected"
    reason: str | None
    record_id: str | None
    usage: Annotated[dict[str, float], add_usage]
    elapsed_s: Annotated[float, operator.add]


EventHook = Callable[[str, dict[str, Any]], None]


@dataclass
class EpisodeDeps:
    """The runtime context of the graph: shared, non-serialisable things the nodes use. One per run."""

    questioner_model: ChatModel
    solver_model: ChatModel
    inspector_model: ChatModel
    sandbox: Sandbox
    sources: dict[str, DataCard]  # by name; `path` is the absolute path of the original (copied, never written)
    sink: Any  # synth.dataset.sink.RecordSink, or a worker's collecting sink
    work_dir: Path  # per-episode sandbox workspaces live here (inside the run dir)
    verifier_model: ChatModel | None = None  # None: no verification (--no-verify)
    mode: ExecutionMode = "script"
    limits: Limits = field(default_factory=Limits)
    max_rounds: int = 8
    max_revisions: int = 1
    solves: int = 1
    roles_dir: Path | None = None
    checklists_dir: Path | None = None
    duplicates: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)
    questioner_factory: Callable[[ChatModel], Questioner] | None = None
    on_event: EventHook | None = None

    def emit_event(self, kind: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)

    def questioner(self, model: ChatModel) -> Questioner:
        if self.questioner_factory is not None:
            return self.questioner_factory(model)
        return new_questioner(model, self.roles_dir)


# --- nodes -----------------------------------------------------------------------------------------------------


async def propose(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """The user's task, or the questioner writes one over a seed for the episode's source, category and difficulty
    (kept if already there)."""
    from synth.seeds import task_seed

    if state.get("task"):
        return {}
    ep = state["episode"]
    if ep.get("task"):
        return _user_task(ep, deps)
    started = time.monotonic()
    card = deps.sources[ep["source"]]
    meter = MeteredModel(deps.questioner_model)
    questioner = deps.questioner(meter)
    focus_table = card.focus_table(ep["index"] // max(1, len(deps.sources)))
    seed = task_seed(card, focus_table, ep["category"], ep["difficulty"], ep["episode_id"])
    try:
        try:
            task, twin = await _proposal(questioner, card, seed, ep, deps)
        except QuestionerError as exc:
            # A seed the questioner cannot phrase (a small model loses the JSON keys on a hard one) gets one more
            # chance as another kind of the same category and difficulty, not an episode without a task.
            if seed is None:
                raise
            other = task_seed(card, focus_table, ep["category"], ep["difficulty"], ep["episode_id"],
                              exclude={seed.kind})
            if other is None or other.kind == seed.kind:
                raise
            deps.emit_event("reseeded", episode=ep["episode_id"], seed_kind=other.kind, reason=str(exc))
            seed = other
            task, twin = await _proposal(questioner, card, seed, ep, deps)
    except QuestionerError as exc:
        return {"task": None, "outcome": "rejected", "reason": str(exc), "usage": usage_totals(meter),
                "elapsed_s": time.monotonic() - started}
    if task is None:
        deps.emit_event("proposed", episode=ep["episode_id"], near_duplicate=True)
        return {"task": None, "outcome": "rejected", "reason": f"near-duplicate of an accepted task: {twin}",
                "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}
    deps.emit_event("proposed", episode=ep["episode_id"], instruction=task.instruction)
    proposal = {**task.model_dump(), "sources": [card.name], "seed": seed.to_dict() if seed else None}
    return {"task": proposal, "revisions": 0, "feedback": None, "usage": usage_totals(meter),
            "elapsed_s": time.monotonic() - started}


async def _proposal(questioner: Questioner, card: DataCard, seed: Any, ep: dict[str, Any],
                    deps: EpisodeDeps) -> tuple[Any, str | None]:
    """The questioner's task over `seed` (a TaskProposal) and None, or None and the accepted task it still only
    rewords after one retry."""
    from synth.checklist import load_checklist

    focus = seed.table if seed is not None else None
    easy = ep["difficulty"] == "easy" and not (seed and seed.join)
    # An easy task is about one table: the questioner sees no other, so it cannot ask for a join.
    request = ProposalRequest(
        card.name, card.questioner_prompt(focus, QUESTIONER_CARD_CHARS, alone=easy), [Path(card.path).name],
        ep["category"], ep["difficulty"], category_hint=load_checklist(ep["category"], deps.checklists_dir).hint,
        seed=seed.describe() if seed else None, focus_table=focus,
        other_tables=card.referenced_tables(focus) if easy else [],
        columns={t.name: [c.name for c in t.columns] for t in card.tables},
        seed_columns=seed.column_names() if seed is not None else [],
        sheets=[t.name for t in card.tables] if card.kind == "excel" and len(card.tables) > 1 else [])
    for _ in range(2):  # one retry when the task only rewords an accepted one
        task = await questioner.propose(request)
        twin = deps.duplicates.duplicate_of(task.instruction)
        if twin is None:
            return task, None
        request.avoid = [twin]
    return None, twin


def _user_task(ep: dict[str, Any], deps: EpisodeDeps) -> dict[str, Any]:
    task = ep["task"]
    given = task.get("reference")
    proposal = {"instruction": task["instruction"], "files": [Path(deps.sources[n].path).name for n in task["files"]],
                "sources": list(task["files"]), "deliverables": [], "reference_answer": None, "checklist": [],
                "id": task["id"], "seed": None}
    reference = {"value": given, "verified_by": "given", "program": None, "output": None} if given is not None \
        else None
    deps.emit_event("proposed", episode=ep["episode_id"], instruction=task["instruction"])
    return {"task": proposal, "reference": reference, "closed_form": True if reference else None, "revisions": 0,
            "feedback": None}


def _cards(task: dict[str, Any], ep: dict[str, Any], deps: EpisodeDeps) -> list[DataCard]:
    return [deps.sources[name] for name in task.get("sources") or [ep["source"]]]


async def verify(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """The verifier computes the answer of a closed-form task on its own, over fresh copies of the sources."""
    from synth.checklist import load_checklist
    from synth.verifier import compute_reference

    ep, task = state["episode"], state["task"]
    if deps.verifier_model is None or state.get("reference") is not None or state.get("closed_form") is not None:
        return {}  # no verifier, a given reference, or already decided (a re-run after a crash)
    if load_checklist(ep["category"], deps.checklists_dir).open_ended:
        return {"closed_form": False}
    started = time.monotonic()
    cards = _cards(task, ep, deps)
    meter = MeteredModel(deps.verifier_model)
    data = "\n".join(c.to_prompt(max_chars=QUESTIONER_CARD_CHARS) for c in cards)
    computed = await compute_reference(meter, task["instruction"], data, [Path(c.path) for c in cards],
                                       deps.sandbox, limits=deps.limits, roles_dir=deps.roles_dir)
    update: dict[str, Any] = {"usage": usage_totals(meter), "elapsed_s": time.monotonic() - started,
                              "closed_form": computed.closed_form}
    if computed.closed_form:
        update["reference"] = {"value": computed.answer, "verified_by": "program" if computed.answer else "none",
                               "program": computed.program, "output": computed.output}
        if computed.answer is not None and not computed.reads_data:
            update.update(outcome="rejected", reason="answerable without the data: the verifier's program printed "
                                                     "the answer without reading any file of the task")
    deps.emit_event("verified", episode=ep["episode_id"], closed_form=computed.closed_form,
                    reference=bool(computed.answer))
    return update


async def solve(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """The agent loop works the task in a fresh sandbox over copies of its sources (feedback from a revision).
    With --solves k the first attempt is accompanied by k-1 independent solves whose answers measure difficulty."""
    started = time.monotonic()
    ep, task = state["episode"], state["task"]
    attempt = len(state.get("attempts") or [])
    meter = MeteredModel(deps.solver_model)
    main, *extra = await asyncio.gather(*[
        _one_solve(deps, ep, task, meter, f"attempt-{attempt}" if i == 0 else f"solve-{i}", state.get("feedback"),
                   temperature=None if i == 0 else 0.7 + 0.01 * i)
        for i in range(deps.solves if attempt == 0 else 1)])
    deps.emit_event("solved", episode=ep["episode_id"], attempt=attempt, stop=main["trajectory"]["stop_reason"])
    update: dict[str, Any] = {"attempts": [main], "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}
    if extra:
        update["solves"] = [{"answer": e["trajectory"].get("answer"), "stop": e["trajectory"]["stop_reason"]}
                            for e in extra]
    return update


async def _one_solve(deps: EpisodeDeps, ep: dict[str, Any], task: dict[str, Any], meter: MeteredModel, name: str,
                     feedback: str | None, *, temperature: float | None) -> dict[str, Any]:
    from synth.agent import AgentConfig, run_agent
    from synth.hashing import path_sha256

    paths = [Path(c.path) for c in _cards(task, ep, deps)]
    workspace = deps.work_dir / ep["episode_id"] / name
    shutil.rmtree(workspace, ignore_errors=True)  # a re-run after a crash starts from a fresh copy
    workspace.parent.mkdir(parents=True, exist_ok=True)
    # Hash before the episode touches anything: `sources_unchanged` proves the originals were not written.
    hashes = {p.name: await asyncio.to_thread(path_sha256, p) for p in paths}
    session = await asyncio.to_thread(deps.sandbox.open, paths, mode=deps.mode, limits=deps.limits,
                                      workspace=workspace)
    try:
        before = await asyncio.to_thread(session.snapshot)
        config = AgentConfig(max_rounds=deps.max_rounds, feedback=feedback, roles_dir=deps.roles_dir,
                             cell_timeout_s=deps.limits.timeout_s, temperature=temperature,
                             min_cells=required_cells(task))
        trajectory = await run_agent(meter, session, task["instruction"], files=[p.name for p in paths],
                                     config=config)
        after = await asyncio.to_thread(session.snapshot)
        workspace_path = str(session.workspace)
    finally:
        await asyncio.to_thread(session.close)
    return {"trajectory": trajectory.to_dict(), "before": before.to_dict(), "after": after.to_dict(),
            "workspace": workspace_path, "source_hashes": hashes}


async def inspect(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """The category checklist, the task's own items and the verified answer, over the last attempt's trajectory
    and sandbox state."""
    from synth.checklist import RuleContext, evaluate

    started = time.monotonic()
    ep, task = state["episode"], state["task"]
    attempt = state["attempts"][-1]
    meter = MeteredModel(deps.inspector_model)
    items = episode_checklist(state, deps.checklists_dir, _cards(task, ep, deps))
    hashes = attempt.get("source_hashes") or {Path(c.path).name: attempt.get("source_hash")
                                              for c in _cards(task, ep, deps)}
    reference = state.get("reference") or {}
    ctx = RuleContext(
        trajectory=Trajectory.from_dict(attempt["trajectory"]),
        workspace=Path(attempt["workspace"]),
        state=SandboxState.from_dict(attempt["after"]) if attempt.get("after") else None,
        initial_state=SandboxState.from_dict(attempt["before"]) if attempt.get("before") else None,
        sources=[SourceRef(name=Path(c.path).name, sha256=hashes[Path(c.path).name], path=Path(c.path))
                 for c in _cards(task, ep, deps)],
        reference=reference.get("value") if reference.get("verified_by") not in (None, "none") else
        task.get("reference_answer"),
        sandbox=deps.sandbox,
        limits=deps.limits,
    )
    verdict = await evaluate(items, ctx, meter, roles_dir=deps.roles_dir)
    deps.emit_event("inspected", episode=ep["episode_id"], decision=verdict.decision)
    return {"verdicts": [verdict.model_dump(mode="json")], "checklist": [i.model_dump(mode="json") for i in items],
            "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}


def episode_checklist(state: EpisodeState, checklists_dir: Path | None = None,
                      cards: list[DataCard] | None = None) -> list[Any]:
    """Standing items of the category, the task's own items, and — when the reference is verified — the required
    agreement with it (replacing the questioner's advisory guess), the data actually read, and for a seeded task
    the steps a hard seed needs and group-by keys that are categories (`cards`: the task's sources)."""
    from synth.checklist import load_checklist, validate_items
    from synth.seeds import continuous_columns

    task = state["task"]
    own = task_checklist(task)
    reference = state.get("reference") or {}
    extra: list[dict[str, Any]] = []
    if reference.get("verified_by") not in (None, "none") and reference.get("value") is not None:
        own = [i for i in own if i.id != "reference_answer"]
        extra += [{"id": "verified_answer", "rule": "answer_matches", "params": {"rel_tolerance": 0.01},
                   "description": "the answer agrees with an independent computation"},
                  {"id": "reads_the_data", "rule": "answer_uses_data"}]
    seed = task.get("seed") or {}
    if steps := required_cells(task):
        extra.append({"id": "steps", "rule": "min_cells", "params": {"n": steps},
                      "description": f"a {seed.get('difficulty')} task takes several steps"})
    measures = continuous_columns(cards) if seed and cards else []
    if measures:  # a user's own task may group as it says; a seeded one never keys a group-by on a measure
        extra.append({"id": "groupby_on_categories", "rule": "groupby_keys_categorical",
                      "params": {"continuous": measures},
                      "description": "no group-by takes a continuous measure as its key"})
    standing = load_checklist(state["episode"]["category"], checklists_dir)
    return standing.with_task_items([*own, *validate_items(extra, where="episode items")])


def required_cells(task: dict[str, Any]) -> int:
    """The code cells a seeded task needs (a hard seed's steps), 0 when it asks for no more than one."""
    cells = int((task.get("seed") or {}).get("min_cells") or 1)
    return cells if cells > 1 else 0


def after_inspect(state: EpisodeState, deps: EpisodeDeps) -> str:
    verdict = state["verdicts"][-1]
    if verdict["decision"] == "accept":
        return "emit"
    if verdict["decision"] == "revise" and state.get("revisions", 0) < deps.max_revisions:
        return "revise"
    # a judged item the judge could not back with a quote is no verdict: it blocks nothing (synth/checklist/judge.py)
    blocking = [i for i in verdict.get("items", []) if i["required"] and not i["passed"] and not i.get("not_judged")]
    if (verdict["decision"] == "revise" and blocking and all(i["id"] == "verified_answer" for i in blocking)
            and (state.get("reference") or {}).get("verified_by") == "program" and not state.get("tiebreak")
            and deps.verifier_model is not None):
        return "tiebreak"  # only the disagreement with the reference program is left: a second program decides
    return "reject"


async def revise(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """Feedback for the next solve; the verified reference never reaches the solver."""
    from synth.verifier import redact

    verdict = state["verdicts"][-1]
    feedback = verdict.get("feedback") or "Fix the failed checks and answer again."
    return {"revisions": state.get("revisions", 0) + 1,
            "feedback": redact(feedback, (state.get("reference") or {}).get("value"))}


async def tiebreak(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """A second, independent verifier program: when it agrees with the solver, the solver was right."""
    from synth.verifier import compute_reference, settle

    started = time.monotonic()
    ep, task = state["episode"], state["task"]
    cards = _cards(task, ep, deps)
    meter = MeteredModel(deps.verifier_model)  # type: ignore[arg-type]
    data = "\n".join(c.to_prompt(max_chars=QUESTIONER_CARD_CHARS) for c in cards)
    second = await compute_reference(meter, task["instruction"], data, [Path(c.path) for c in cards], deps.sandbox,
                                     limits=deps.limits, second=True, roles_dir=deps.roles_dir)
    answer = state["attempts"][-1]["trajectory"].get("answer")
    verdict, reference, record = settle(state["verdicts"][-1], state.get("reference") or {}, second, answer)
    deps.emit_event("tiebreak", episode=ep["episode_id"], sided_with=record["sided_with"])
    update: dict[str, Any] = {"tiebreak": record, "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}
    if verdict is not None:
        update.update(verdicts=[verdict], reference=reference)
    return update


async def emit(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """Write the accepted episode as a Record (deduplicated by id)."""
    ep = state["episode"]
    models = {"solver": deps.solver_model.name, "inspector": deps.inspector_model.name}
    if not ep.get("task"):
        models["questioner"] = deps.questioner_model.name
    if deps.verifier_model is not None and (state.get("reference") or {}).get("verified_by") in ("program",
                                                                                                 "consensus"):
        models["verifier"] = deps.verifier_model.name
    record = build_record(state, _cards(state["task"], ep, deps), models, deps.checklists_dir)
    written = await deps.sink.write_record(record, ep["episode_id"])
    if written:
        deps.duplicates.add(state["task"]["instruction"])
    shutil.rmtree(deps.work_dir / ep["episode_id"], ignore_errors=True)
    outcome = "accepted" if written else "duplicate"
    deps.emit_event("done", episode=ep["episode_id"], outcome=outcome, usage=state.get("usage"))
    return {"outcome": outcome, "record_id": record["id"]}


async def reject(state: EpisodeState, deps: EpisodeDeps) -> dict[str, Any]:
    """Write the rejected episode with its verdicts and last trajectory (deduplicated by episode id)."""
    ep = state["episode"]
    reason = state.get("reason")
    verdicts = state.get("verdicts") or []
    if reason is None and verdicts:
        reason = f"inspector decided {verdicts[-1]['decision']} after {state.get('revisions', 0)} revision(s)"
    attempts = state.get("attempts") or []
    await deps.sink.write_rejected({
        "episode_id": ep["episode_id"], "source": ep["source"], "category": ep["category"],
        "difficulty": ep["difficulty"], "reason": reason, "task": state.get("task"),
        "verdict": verdicts[-1] if verdicts else None, "verdicts": verdicts,
        "revisions": state.get("revisions", 0),
        "trajectory": attempts[-1]["trajectory"] if attempts else None,
        "reference": state.get("reference"), "closed_form": state.get("closed_form"),
        "tiebreak": state.get("tiebreak"), "task_id": (state.get("task") or {}).get("id"),
        "usage": _usage_with_time(state),
    })
    shutil.rmtree(deps.work_dir / ep["episode_id"], ignore_errors=True)
    deps.emit_event("done", episode=ep["episode_id"], outcome="rejected", usage=state.get("usage"))
    return {"outcome": "rejected", "reason": reason}


def build_record(state: EpisodeState, cards: list[DataCard], models: dict[str, str],
                 checklists_dir: Path | None = None) -> dict[str, Any]:
    """The accepted episode as a Record (synth/dataset/record.py), as its JSON dict: its checklist is the one the
    verdict was made with."""
    from synth.checklist import Verdict, load_checklist, validate_items
    from synth.dataset.record import Record
    from synth.verifier import solve_rate

    ep, task = state["episode"], state["task"]
    attempt, verdict = state["attempts"][-1], state["verdicts"][-1]
    standing = load_checklist(ep["category"], checklists_dir)
    if state.get("checklist") is not None:
        items = validate_items(state["checklist"], where="episode checklist")
    else:  # a checkpoint from before the checklist was kept in the state
        items = episode_checklist(state, checklists_dir, cards)
    reference = state.get("reference")
    if reference is None and task.get("reference_answer") is not None:
        reference = {"value": task["reference_answer"], "verified_by": "none"}  # the questioner's unverified guess
    trajectory = Trajectory.from_dict(attempt["trajectory"])
    record = Record.from_trajectory(
        trajectory,
        category=ep["category"],
        difficulty=ep["difficulty"],
        sources=[{"name": c.name, "sha256": c.sha256} for c in cards],
        instruction=task["instruction"],
        checklist=items,
        verdict=Verdict.model_validate(verdict),
        reference=reference,
        open_ended=standing.open_ended,
        models=models,
        usage=_usage_with_time(state),
        revisions=int(state.get("revisions") or 0),
        task_id=task.get("id"),
        seed=task.get("seed"),
        solves=solve_rate(trajectory.answer, [s.get("answer") for s in state.get("solves") or []], reference)
        if state.get("solves") else None,
    )
    return record.model_dump(mode="json")


def _usage_with_time(state: EpisodeState) -> dict[str, Any]:
    return {**(state.get("usage") or {}), "elapsed_s": round(float(state.get("elapsed_s") or 0.0), 3)}


# --- the graph -------------------------------------------------------------------------------------------------


def build_interaction_graph():
    """The uncompiled StateGraph; compile it with a checkpointer and run it with `run_episode`."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(EpisodeState, context_schema=EpisodeDeps)
    for node in (propose, verify, solve, inspect, revise, tiebreak, emit, reject):
        graph.add_node(node.__name__, bind(node))
    graph.add_edge(START, "propose")
    graph.add_conditional_edges("propose", lambda s: "verify" if s.get("task") else "reject", ["verify", "reject"])
    graph.add_conditional_edges("verify", lambda s: "reject" if s.get("outcome") == "rejected" else "solve",
                                ["solve", "reject"])
    graph.add_edge("solve", "inspect")
    graph.add_conditional_edges("inspect", bind(after_inspect), ["emit", "revise", "tiebreak", "reject"])
    graph.add_edge("revise", "solve")
    graph.add_conditional_edges("tiebreak", lambda s: "emit" if s["verdicts"][-1]["decision"] == "accept"
                                else "reject", ["emit", "reject"])
    graph.add_edge("emit", END)
    graph.add_edge("reject", END)
    return graph


def initial_state(episode: dict[str, Any]) -> EpisodeState:
    return {"episode": episode, "task": None, "revisions": 0, "feedback": None, "outcome": None, "reason": None,
            "record_id": None, "reference": None, "closed_form": None, "tiebreak": None}


async def run_episode(compiled: Any, episode: dict[str, Any], deps: EpisodeDeps) -> EpisodeState:
    """Run (or continue, after a crash) one episode on a compiled graph; thread id = the episode id."""
    return await run_thread(compiled, episode["episode_id"], initial_state(episode), deps)  # type: ignore[return-value]


async def episode_finished(compiled: Any, episode_id: str) -> bool:
    return await thread_finished(compiled, episode_id)


__all__ = ["EpisodeState", "EpisodeDeps", "propose", "verify", "solve", "inspect", "episode_checklist",
           "after_inspect", "revise", "tiebreak", "emit", "reject", "build_record", "build_interaction_graph", "initial_state", "run_episode", "episode_finished"]
