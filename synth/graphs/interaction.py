"""The interaction-trajectory graph (DESIGN §8): propose → solve → inspect → accept/revise/reject.

    propose ──▶ solve ──▶ inspect ──accept──▶ emit ──▶ END
       │          ▲          │
       │          └─revise◀──┤ (feedback to the solver, at most `max_revisions` times)
       └──────────▶ reject ◀─┘ (questioner failed, or the inspector rejected / revisions ran out) ──▶ END

State is plain JSON-able data (so the SQLite checkpointer stores it); lists that grow use reducers. Every node
is idempotent: re-running it after a crash has the same effect as running it once — `propose` keeps an
already-proposed task, `solve` starts from a fresh workspace, `emit`/`reject` skip ids already written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import operator
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Protocol, Sequence, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synth.jsonl import append_jsonl, read_jsonl
from synth.llm.base import ChatModel, Message
from synth.llm.metering import MeteredModel, add_usage, usage_totals
from synth.roles import Role, load_role, load_role_plugin
from synth.sampler import NearDuplicateIndex
from synth.sandbox.base import ExecutionMode, Limits, Sandbox, SandboxState
from synth.trajectory import Trajectory

# --- the questioner --------------------------------------------------------------------------------------------

CATEGORY_HINTS = {
    "data_preparation": "load, join, reshape or derive columns and save the prepared table",
    "data_cleaning": "find and fix missing values, duplicates, bad types or outliers and save the clean table",
    "data_analysis": "compute specific statistics or aggregates that answer a precise question",
    "data_insight": "find a notable pattern, trend or relation and explain it with numbers",
    "modeling": "fit a simple predictive or statistical model and report its quality on held-out data",
    "report_generation": "write a short markdown report file with key figures from the data",
    "open_research": "pose and investigate an open question about the data, with evidence",
}
DIFFICULTY_HINTS = {
    "easy": "one or two steps, on the focus table alone",
    "medium": "a few steps, may join the focus table with one table it references",
    "hard": "several steps, joins and careful reasoning",
}


class QuestionerError(RuntimeError):
    """The questioner gave no valid task within its repair budget."""


class TaskProposal(BaseModel):
    """What the questioner outputs (roles/questioner.yaml). Kept small so 0.5B-1.5B models can manage it."""

    model_config = ConfigDict(extra="ignore")  # small models add chatter keys; ignore them, keep the rest strict

    instruction: str = Field(..., min_length=15, max_length=2000)
    files: list[str] = Field(default_factory=list)
    deliverables: list[str] = Field(default_factory=list, max_length=5)
    reference_answer: str | None = None
    checklist: list[dict[str, Any]] = Field(default_factory=list, max_length=6)

    @field_validator("reference_answer", mode="before")
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "n/a"):
            return None
        return value

    @field_validator("deliverables")
    @classmethod
    def _plain_file_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts or not re.search(r"\.\w+$", name):
                raise ValueError(f"deliverable {name!r} must be a relative file name with an extension")
        return value


@dataclass
class ProposalRequest:
    source: str
    data_card: str  # DataCard.to_prompt()
    file_names: list[str]  # what the task may use (the source's files as they appear in the workspace)
    category: str
    difficulty: str
    avoid: list[str] = field(default_factory=list)  # instructions the new task must not repeat
    focus_table: str | None = None  # the table the task should centre on (spreads tasks over a source's tables)
    # Tables an easy task reaches through the focus table's id columns only (named -> "Use only the focus table").
    other_tables: list[str] = field(default_factory=list)


@runtime_checkable
class Questioner(Protocol):
    """The questioner role's protocol. Plugins (entry point group `ds_synth.roles`, name "questioner") implement
    it; they are constructed as `cls(model=ChatModel, role=Role | None)`."""

    async def propose(self, request: ProposalRequest) -> TaskProposal: ...


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model reply: bare, fenced (```json), or followed by trailing text."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*\n?(.*?)```", text, re.S)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for start in (m.start() for m in re.finditer(r"\{", chunk)):
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object found in the reply")


class LLMQuestioner:
    """The built-in questioner: the role's prompt, one few-shot example, JSON output, bounded repair."""

    def __init__(
        self,
        model: ChatModel,
        role: Role | None = None,
        *,
        max_repairs: int = 2,
        validate_items: Callable[[list[dict[str, Any]]], list[Any]] | None = None,
        rule_names: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.role = role or load_role("questioner")
        self.max_repairs = max_repairs
        self.validate_items = validate_items
        self.rule_names = list(rule_names)

    async def propose(self, request: ProposalRequest) -> TaskProposal:
        context = {
            "category": request.category,
            "difficulty": request.difficulty,
            "category_hint": CATEGORY_HINTS.get(request.category, request.category),
            "difficulty_hint": DIFFICULTY_HINTS.get(request.difficulty, request.difficulty),
            "data_card": request.data_card,
            "avoid": request.avoid,
            "rule_names": ", ".join(self.rule_names) or "answer_present",
            "files": request.file_names,
            "focus_table": request.focus_table,
        }
        messages: list[Message] = [{"role": "system", "content": self.role.render_system(**context)}]
        messages += self.role.few_shot_messages(**context)  # type: ignore[arg-type]
        messages.append({"role": "user", "content": self.role.render_user(**context)})
        params = self.role.params
        last_error = ""
        for attempt in range(self.max_repairs + 1):
            completion = await self.model.chat(
                messages,
                max_tokens=params.get("max_tokens", 600),
                temperature=params.get("temperature", 0.7) if attempt == 0 else 0.2,
                response_format={"type": "json_object"},
            )
            try:
                return self._validated(completion.text, request, last_try=attempt == self.max_repairs)
            except ValueError as exc:
                last_error = _one_line(str(exc))
            messages = messages + [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": f"That reply is invalid: {last_error}\nReply again with ONE corrected "
                                            "JSON object only, same keys, nothing else."},
            ]
        raise QuestionerError(f"questioner gave no valid task after {self.max_repairs + 1} tries: {last_error}")

    def _validated(self, text: str, request: ProposalRequest, last_try: bool = False) -> TaskProposal:
        data = parse_json_object(text)
        try:
            task = TaskProposal.model_validate(data)
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        # Small models list tables or miscase names here; keep the real files they meant, never invent one.
        by_lower = {name.lower(): name for name in request.file_names}
        task.files = list(dict.fromkeys(by_lower[f.lower()] for f in task.files if f.lower() in by_lower))
        if not task.files:
            task.files = list(request.file_names)
        task.instruction = _with_full_file_names(task.instruction, task.files)
        unnamed = [name for name in task.deliverables if name not in task.instruction]
        if unnamed:  # a file the instruction never asks for would fail a check the solver cannot know about
            task.instruction = f"{task.instruction.rstrip()} Save the result to {' and '.join(unnamed)}."
        # Small models write a join into an easy task even when they saw one table only, and repeat it when asked
        # to fix it: when the focus table's id columns can answer it, the task gets the constraint spelled out.
        if _tables_named(task.instruction, request.other_tables) and request.focus_table:
            task.instruction = f"{task.instruction.rstrip()} Use only the `{request.focus_table}` table."
        if self.validate_items is not None and task.checklist:
            if last_try:
                # Last try: a sound task is worth more than its malformed optional checks; keep the valid ones.
                task.checklist = [item for item in task.checklist if self._item_is_valid(item)]
            else:
                self.validate_items(task.checklist)  # raises ValueError naming the bad item
        return task

    def _item_is_valid(self, item: dict[str, Any]) -> bool:
        try:
            self.validate_items([item])  # type: ignore[misc]
        except ValueError:
            return False
        return True


def _with_full_file_names(text: str, files: Sequence[str]) -> str:
    """`Chinook_Sqlite` -> `Chinook_Sqlite.sqlite`: a file named without its extension sends the agent to a path
    that does not exist (and sqlite3.connect would silently create it). Only when the full name appears nowhere;
    a stem that is an ordinary word is replaced only where it names the file ("In music," but not "music sales")."""
    for name in files:
        stem = Path(name).stem
        if not stem or stem == name or name in text:
            continue
        bare = rf"(?<![\w.]){re.escape(stem)}(?![\w.])"
        if re.fullmatch(r"[a-z]+", stem):
            text = re.sub(rf"(?i)(\b(?:in|from|of|file|database|open)\s+`?){bare}", rf"\g<1>{name}", text)
        else:
            text = re.sub(bare, name, text)
    return text


def _tables_named(text: str, tables: Sequence[str]) -> list[str]:
    """The tables `text` names as words (any case, optional plural), not as parts of column names like AlbumId."""
    return [t for t in tables if re.search(rf"(?<![\w.]){re.escape(t)}(?:s|es)?(?!\w)", text, re.IGNORECASE)]


def make_questioner(model: ChatModel, roles_dir: Path | None = None, **options: Any) -> Questioner:
    """A plugin questioner if one is registered, else the built-in LLM questioner."""
    role = load_role("questioner", roles_dir)
    plugin = load_role_plugin("questioner")
    if plugin is not None:
        instance = plugin(model=model, role=role)
        if not isinstance(instance, Questioner):
            raise TypeError(f"role plugin {plugin.__name__} does not implement the Questioner protocol (propose)")
        return instance
    return LLMQuestioner(model, role, **options)


# --- state -----------------------------------------------------------------------------------------------------


class EpisodeState(TypedDict, total=False):
    episode: dict[str, Any]  # synth.sampler.Episode.to_dict()
    task: dict[str, Any] | None  # TaskProposal.model_dump()
    attempts: Annotated[list[dict[str, Any]], operator.add]  # one per solve: trajectory + sandbox states
    verdicts: Annotated[list[dict[str, Any]], operator.add]  # one per inspect
    revisions: int
    feedback: str | None
    outcome: str | None  # "accepted" | "duplicate" | "rejected"
    reason: str | None
    record_id: str | None
    usage: Annotated[dict[str, float], add_usage]
    elapsed_s: Annotated[float, operator.add]


# --- what the graph needs from the run -----------------------------------------------------------------------


@dataclass
class SourceInfo:
    """One source as the graph sees it (built from a DataCard)."""

    name: str
    path: Path  # the source file in the user's folder (copied, never written)
    sha256: str
    prompt: str  # DataCard.to_prompt()
    kind: str = ""
    questioner_chars: int = 2500  # the card is cut to this for the questioner (small models, slow prefill)
    card: Any = None  # the DataCard, when the run profiled one

    @property
    def prompt_short(self) -> str:
        return self.prompt if len(self.prompt) <= self.questioner_chars else self.prompt[: self.questioner_chars] + "\n…"

    def focus_table(self, visit: int) -> str | None:
        """The table the source's `visit`-th episode centres on: every table once (in an order fixed by the source's
        hash) before any repeats, so a resumed run asks the same and no two early episodes share a prompt."""
        tables = sorted(t.name for t in (self.card.tables if self.card is not None else []) if not t.is_view)
        if not tables:
            return None
        tables.sort(key=lambda name: hashlib.sha256(f"{self.sha256}:{name}".encode()).hexdigest())
        return tables[visit % len(tables)]

    def referenced_tables(self, focus: str | None) -> list[str]:
        """Tables the focus table points at (a foreign key, or a column named like `AlbumId`): a task on the focus
        table alone can still speak of them through those id columns."""
        if focus is None or self.card is None:
            return []
        table = self.card.table(focus)
        columns = {c.name.lower() for c in table.columns}
        named = {fk.ref_table for fk in table.foreign_keys}
        return [t.name for t in self.card.tables
                if t.name != focus and (t.name in named or f"{t.name.lower()}id" in columns)]

    def questioner_card(self, focus: str | None, *, alone: bool = False) -> str:
        if focus is None or self.card is None:
            return self.prompt_short
        return self.card.focus_prompt(focus, self.questioner_chars, alone=alone)


EventHook = Callable[[str, dict[str, Any]], None]


@dataclass
class EpisodeDeps:
    """Shared, non-serialisable things the nodes use. One per run; the state carries only data."""

    questioner_model: ChatModel
    solver_model: ChatModel
    inspector_model: ChatModel
    sandbox: Sandbox
    sources: dict[str, SourceInfo]
    sink: "EpisodeSink"
    work_dir: Path  # per-episode sandbox workspaces live here (inside the run dir)
    mode: ExecutionMode = "script"
    limits: Limits = field(default_factory=Limits)
    max_rounds: int = 8
    max_revisions: int = 1
    roles_dir: Path | None = None
    checklists_dir: Path | None = None
    duplicates: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)
    questioner_factory: Callable[[ChatModel], Questioner] | None = None
    on_event: EventHook | None = None

    def emit_event(self, kind: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, payload)


class EpisodeSink:
    """Append-only JSONL outputs with id-based dedupe; safe to call again for something already written."""

    def __init__(self, records_path: Path, rejected_path: Path) -> None:
        self.records_path = records_path
        self.rejected_path = rejected_path
        self._lock = asyncio.Lock()
        self.record_ids: set[str] = set()
        self.rejected_episodes: set[str] = set()
        self.accepted_instructions: list[str] = []
        self.done_episodes: set[str] = set()
        for row in read_jsonl(records_path):
            self.record_ids.add(row.get("id", ""))
            self.accepted_instructions.append(_instruction_of(row))
        for row in read_jsonl(rejected_path):
            self.rejected_episodes.add(row.get("episode_id", ""))
            self.done_episodes.add(row.get("episode_id", ""))

    async def write_record(self, record: dict[str, Any], episode_id: str) -> bool:
        """Append `record` unless its id is already written; True if it was appended."""
        async with self._lock:
            if record["id"] in self.record_ids:
                self.done_episodes.add(episode_id)
                return False
            append_jsonl(self.records_path, record)
            self.record_ids.add(record["id"])
            self.done_episodes.add(episode_id)
            self.accepted_instructions.append(_instruction_of(record))
            return True

    async def write_rejected(self, row: dict[str, Any]) -> bool:
        async with self._lock:
            if row["episode_id"] in self.rejected_episodes:
                return False
            append_jsonl(self.rejected_path, row)
            self.rejected_episodes.add(row["episode_id"])
            self.done_episodes.add(row["episode_id"])
            return True


def _instruction_of(row: dict[str, Any]) -> str:
    messages = row.get("messages") or []
    prompt = messages[-2]["content"] if len(messages) >= 2 else ""
    return prompt.split("# Instruction", 1)[-1].split("\n# Data", 1)[0].strip()


# --- the parts the nodes call (agent loop, checklist engine, record schema) -------------------------------------


def _validate_task_items(raw: list[dict[str, Any]]) -> list[Any]:
    from synth.checklist import ChecklistError, validate_task_items

    try:
        return validate_task_items(raw)
    except ChecklistError as exc:
        raise ValueError(str(exc)) from exc


# Rules a task may add to its checklist (the standing ones already sit in every category checklist).
_TASK_RULES = ("file_created", "file_nonempty", "table_has_no_nulls", "uses_library", "answer_min_length",
               "answer_matches", "turns_between")


def _type_name(annotation: Any) -> str:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return getattr(args[0] if args else annotation, "__name__", "value").replace("Any", "value")


def _rule_names() -> list[str]:
    """Each task rule with its parameters, as the questioner must write them, e.g. `file_created {"glob": str}`."""
    from synth.checklist import registered_rules

    rules = registered_rules()
    shown = []
    for name in _TASK_RULES:
        if name not in rules:
            continue
        fields = rules[name].params_model.model_fields
        params = ", ".join(
            f'"{key}": {_type_name(field.annotation)}{"" if field.is_required() else "?"}' for key, field in fields.items()
        )
        shown.append(f"{name} {{{params}}}")
    return shown


async def _run_solver(model: ChatModel, session: Any, instruction: str, files: list[str], *, mode: str,
                      max_rounds: int, feedback: str | None, roles_dir: Path | None,
                      cell_timeout_s: float) -> Trajectory:
    from synth.agent import AgentConfig, run_agent

    config = AgentConfig(max_rounds=max_rounds, feedback=feedback, roles_dir=roles_dir, cell_timeout_s=cell_timeout_s)
    return await run_agent(model, session, instruction, files=files, config=config)


def task_items(task: dict[str, Any]) -> list[Any]:
    """The task's own checklist: the questioner's items, a `file_created` per deliverable, and — advisory, since
    a questioner cannot always compute it right — `answer_matches` against its reference answer."""
    from synth.checklist import validate_items, validate_task_items

    items = list(validate_task_items(task.get("checklist") or []))
    extra: list[dict[str, Any]] = [
        {"id": f"deliverable_{i + 1}", "rule": "file_created", "params": {"glob": name},
         "description": f"deliverable {name} written"}
        for i, name in enumerate(task.get("deliverables") or [])
    ]
    if task.get("reference_answer"):
        extra.append({"id": "reference_answer", "rule": "answer_matches", "required": False,
                      "params": {"rel_tolerance": 0.01}})
    taken = {item.id for item in items}
    extra = [e for e in extra if e["id"] not in taken]
    return items + list(validate_items(extra, where="task deliverables"))


def _state_from_dict(data: dict[str, Any] | None) -> SandboxState | None:
    from synth.sandbox.base import FileInfo

    if data is None:
        return None
    return SandboxState(files={k: FileInfo(**v) for k, v in data.get("files", {}).items()},
                        db_rows=dict(data.get("db_rows", {})))


async def _inspect_attempt(model: ChatModel, *, category: str, task: dict[str, Any], attempt: dict[str, Any],
                           source: SourceInfo, sandbox: Sandbox, limits: Limits, checklists_dir: Path | None,
                           roles_dir: Path | None) -> dict[str, Any]:
    from synth import checklist as cl

    standing = cl.load_checklist(category, checklists_dir)
    items = standing.with_task_items(task_items(task))
    ctx = cl.RuleContext(
        trajectory=Trajectory.from_dict(attempt["trajectory"]),
        workspace=Path(attempt["workspace"]),
        state=_state_from_dict(attempt.get("after")),
        initial_state=_state_from_dict(attempt.get("before")),
        sources=[cl.SourceFile(source.path.name, source.path, attempt["source_hash"])],
        reference=task.get("reference_answer"),
        sandbox=sandbox,
        limits=limits,
    )
    verdict = await cl.evaluate(items, ctx, model, roles_dir=roles_dir)
    return verdict.model_dump(mode="json")


def _build_record(state: "EpisodeState", source: SourceInfo, models: dict[str, str],
                  checklists_dir: Path | None) -> dict[str, Any]:
    """The accepted episode as a Record (synth/dataset/record.py), as its JSON dict."""
    from synth.checklist import Verdict, load_checklist
    from synth.dataset.record import Record

    ep, task = state["episode"], state["task"]
    attempt, verdict = state["attempts"][-1], state["verdicts"][-1]
    trajectory = Trajectory.from_dict(attempt["trajectory"])
    usage = dict(state.get("usage") or {})
    usage["elapsed_s"] = round(float(state.get("elapsed_s") or 0.0), 3)
    record = Record.from_trajectory(
        trajectory,
        category=ep["category"],
        difficulty=ep["difficulty"],
        sources=[{"name": source.name, "sha256": source.sha256}],
        instruction=task["instruction"],
        checklist=load_checklist(ep["category"], checklists_dir).with_task_items(task_items(task)),
        verdict=Verdict.model_validate(verdict),
        reference=task.get("reference_answer"),
        models=models,
        usage=usage,
        revisions=int(state.get("revisions") or 0),
    )
    return record.model_dump(mode="json")


# --- nodes -----------------------------------------------------------------------------------------------------


def build_interaction_graph(deps: EpisodeDeps):
    """The uncompiled StateGraph; compile it with a checkpointer (`graph.compile(checkpointer=...)`)."""
    from langgraph.graph import END, START, StateGraph

    async def propose(state: EpisodeState) -> dict[str, Any]:
        if state.get("task"):
            return {}
        started = time.monotonic()
        ep = state["episode"]
        source = deps.sources[ep["source"]]
        meter = MeteredModel(deps.questioner_model)
        factory = deps.questioner_factory or (lambda m: make_questioner(
            m, deps.roles_dir, validate_items=_validate_task_items, rule_names=_rule_names()))
        questioner = factory(meter)
        avoid: list[str] = []
        focus = source.focus_table(ep["index"] // max(1, len(deps.sources)))
        # An easy task is about one table: the questioner sees no other, so it cannot ask for a join.
        card = source.questioner_card(focus, alone=ep["difficulty"] == "easy")
        easy = ep["difficulty"] == "easy"
        request = ProposalRequest(source.name, card, [source.path.name], ep["category"], ep["difficulty"],
                                  focus_table=focus, other_tables=source.referenced_tables(focus) if easy else [])
        try:
            for _ in range(2):  # one retry when the task only rewords an accepted one
                request.avoid = avoid
                task = await questioner.propose(request)
                twin = deps.duplicates.duplicate_of(task.instruction)
                if twin is None:
                    break
                avoid = [twin]
            else:
                deps.emit_event("proposed", episode=ep["episode_id"], near_duplicate=True)
                return {"task": None, "outcome": "rejected", "reason": f"near-duplicate of an accepted task: {twin}",
                        "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}
        except QuestionerError as exc:
            return {"task": None, "outcome": "rejected", "reason": str(exc), "usage": usage_totals(meter),
                    "elapsed_s": time.monotonic() - started}
        deps.emit_event("proposed", episode=ep["episode_id"], instruction=task.instruction)
        return {"task": task.model_dump(), "revisions": 0, "feedback": None, "usage": usage_totals(meter),
                "elapsed_s": time.monotonic() - started}

    async def solve(state: EpisodeState) -> dict[str, Any]:
        started = time.monotonic()
        ep, task = state["episode"], state["task"]
        source = deps.sources[ep["source"]]
        attempt = len(state.get("attempts") or [])
        workspace = deps.work_dir / ep["episode_id"] / f"attempt-{attempt}"
        shutil.rmtree(workspace, ignore_errors=True)  # a re-run after a crash starts from a fresh copy
        workspace.parent.mkdir(parents=True, exist_ok=True)
        meter = MeteredModel(deps.solver_model)
        from synth.checklist import hash_path

        source_hash = await asyncio.to_thread(hash_path, source.path)  # before the episode touches anything
        session = await asyncio.to_thread(
            deps.sandbox.open, [source.path], mode=deps.mode, limits=deps.limits, workspace=workspace)
        try:
            before = await asyncio.to_thread(session.snapshot)
            trajectory = await _run_solver(
                meter, session, task["instruction"], [source.path.name], mode=deps.mode,
                max_rounds=deps.max_rounds, feedback=state.get("feedback"), roles_dir=deps.roles_dir,
                cell_timeout_s=deps.limits.timeout_s)
            after = await asyncio.to_thread(session.snapshot)
            workspace_path = str(session.workspace)
        finally:
            await asyncio.to_thread(session.close)
        deps.emit_event("solved", episode=ep["episode_id"], attempt=attempt, stop=trajectory.stop_reason)
        return {"attempts": [{"trajectory": trajectory.to_dict(), "before": before.to_dict(),
                              "after": after.to_dict(), "workspace": workspace_path, "source_hash": source_hash}],
                "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}

    async def inspect(state: EpisodeState) -> dict[str, Any]:
        started = time.monotonic()
        ep, task = state["episode"], state["task"]
        source = deps.sources[ep["source"]]
        attempt = state["attempts"][-1]
        meter = MeteredModel(deps.inspector_model)
        verdict = await _inspect_attempt(
            meter, category=ep["category"], task=task, attempt=attempt, source=source, sandbox=deps.sandbox,
            limits=deps.limits, checklists_dir=deps.checklists_dir, roles_dir=deps.roles_dir)
        deps.emit_event("inspected", episode=ep["episode_id"], decision=verdict["decision"])
        return {"verdicts": [verdict], "usage": usage_totals(meter), "elapsed_s": time.monotonic() - started}

    def after_inspect(state: EpisodeState) -> str:
        decision = state["verdicts"][-1]["decision"]
        if decision == "accept":
            return "emit"
        if decision == "revise" and state.get("revisions", 0) < deps.max_revisions:
            return "revise"
        return "reject"

    async def revise(state: EpisodeState) -> dict[str, Any]:
        verdict = state["verdicts"][-1]
        return {"revisions": state.get("revisions", 0) + 1,
                "feedback": verdict.get("feedback") or "Fix the failed checks and answer again."}

    async def emit(state: EpisodeState) -> dict[str, Any]:
        ep = state["episode"]
        models = {"questioner": deps.questioner_model.name, "solver": deps.solver_model.name,
                  "inspector": deps.inspector_model.name}
        record = _build_record(state, deps.sources[ep["source"]], models, deps.checklists_dir)
        written = await deps.sink.write_record(record, ep["episode_id"])
        if written:
            deps.duplicates.add(state["task"]["instruction"])
        _cleanup(deps.work_dir / ep["episode_id"])
        outcome = "accepted" if written else "duplicate"
        deps.emit_event("done", episode=ep["episode_id"], outcome=outcome, usage=state.get("usage"))
        return {"outcome": outcome, "record_id": record["id"]}

    async def reject(state: EpisodeState) -> dict[str, Any]:
        ep = state["episode"]
        reason = state.get("reason")
        verdicts = state.get("verdicts") or []
        if reason is None and verdicts:
            last = verdicts[-1]
            reason = f"inspector decided {last['decision']} after {state.get('revisions', 0)} revision(s)"
        attempts = state.get("attempts") or []
        await deps.sink.write_rejected({
            "episode_id": ep["episode_id"], "source": ep["source"], "category": ep["category"],
            "difficulty": ep["difficulty"], "reason": reason, "task": state.get("task"),
            "verdict": verdicts[-1] if verdicts else None, "verdicts": verdicts,
            "revisions": state.get("revisions", 0),
            "trajectory": attempts[-1]["trajectory"] if attempts else None,
            "usage": {**(state.get("usage") or {}), "elapsed_s": round(float(state.get("elapsed_s") or 0.0), 3)},
        })
        _cleanup(deps.work_dir / ep["episode_id"])
        deps.emit_event("done", episode=ep["episode_id"], outcome="rejected", usage=state.get("usage"))
        return {"outcome": "rejected", "reason": reason}

    graph = StateGraph(EpisodeState)
    for name, node in (("propose", propose), ("solve", solve), ("inspect", inspect), ("revise", revise),
                       ("emit", emit), ("reject", reject)):
        graph.add_node(name, node)
    graph.add_edge(START, "propose")
    graph.add_conditional_edges("propose", lambda s: "solve" if s.get("task") else "reject", ["solve", "reject"])
    graph.add_edge("solve", "inspect")
    graph.add_conditional_edges("inspect", after_inspect, ["emit", "revise", "reject"])
    graph.add_edge("revise", "solve")
    graph.add_edge("emit", END)
    graph.add_edge("reject", END)
    return graph


def _cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


async def episode_finished(compiled, episode_id: str) -> bool:
    """True when the checkpointer holds a finished run of this episode."""
    snapshot = await compiled.aget_state({"configurable": {"thread_id": episode_id}})
    return bool(snapshot.values) and not snapshot.next


async def run_episode(compiled, episode: dict[str, Any]) -> EpisodeState:
    """Run (or continue, after a crash) one episode on a compiled graph; thread id = the episode id."""
    config = {"configurable": {"thread_id": episode["episode_id"]}}
    snapshot = await compiled.aget_state(config)
    if snapshot.values and not snapshot.next:
        return snapshot.values  # finished before; its emit/reject already ran
    if snapshot.values and snapshot.next:
        return await compiled.ainvoke(None, config)  # resume mid-episode from the last checkpoint
    initial: EpisodeState = {"episode": episode, "task": None, "revisions": 0, "feedback": None, "outcome": None,
                             "reason": None, "record_id": None}
    return await compiled.ainvoke(initial, config)
