"""The questioner role: a task (instruction, files, deliverables, reference, checklist items) for one source.

`make_questioner` returns a plugin questioner (entry point `ds_synth.roles`, name "questioner") when one is
installed, else `LLMQuestioner`: the role's prompt (roles/questioner.yaml), one few-shot example, JSON output
validated as `TaskProposal`, and a bounded repair loop. `task_checklist(task)` turns a proposal into the task's
own checklist items (its questioner items plus one `file_created` per deliverable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.errors import SynthError
from synth.llm.base import ChatModel, Message
from synth.llm.replies import first_json_object
from synth.roles import Role, load_role, load_role_plugin

DIFFICULTY_HINTS = {
    "easy": "one or two steps, on the focus table alone",
    "medium": "a few steps, may join the focus table with one table it references",
    "hard": "several steps, joins and careful reasoning",
}


class QuestionerError(SynthError, RuntimeError):
    """The questioner gave no valid task within its repair budget."""


class TaskProposal(BaseModel):
    """What the questioner outputs (roles/questioner.yaml). Kept small so 0.5B-1.5B models can manage it."""

    model_config = ConfigDict(extra="ignore")  # small models add chatter keys; ignore them, keep the rest strict

    instruction: str = Field(..., min_length=15, max_length=2000)
    files: list[str] = Field(default_factory=list)
    deliverables: list[str] = Field(default_factory=list, max_length=5)
    reference_answer: str | None = None
    checklist: list[dict[str, Any]] = Field(default_factory=list, max_length=6)

    @model_validator(mode="before")
    @classmethod
    def _unwrapped(cls, data: Any) -> Any:
        """Small models wrap the object in one key ({"task": {...}}) or name the instruction "task"/"question";
        the meaning is unambiguous, so read it rather than spend a repair round on it."""
        if not isinstance(data, dict) or "instruction" in data:
            return data
        nested = [v for v in data.values() if isinstance(v, dict) and "instruction" in v]
        if len(data) == 1 and len(nested) == 1:
            return nested[0]
        named = [key for key in ("task", "question", "prompt") if isinstance(data.get(key), str)]
        if len(named) == 1:
            return {**{k: v for k, v in data.items() if k != named[0]}, "instruction": data[named[0]]}
        return data

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
    category_hint: str = ""  # what a task of this category does (the category checklist's `hint`)
    seed: str | None = None  # synth.seeds.TaskSeed.describe(): the kind of task and its columns
    focus_table: str | None = None  # the table the task should centre on (spreads tasks over a source's tables)
    # Tables an easy task reaches through the focus table's id columns only (named -> "Use only the focus table").
    other_tables: list[str] = field(default_factory=list)
    # table -> column names of the source (the DataCard): a task that names a file or a `table.column` the data
    # does not have (a copied example, an invented schema) is sent back. Empty: not checked.
    columns: dict[str, list[str]] = field(default_factory=dict)
    # The seed's columns (synth.seeds.TaskSeed.column_names): a seeded task that names none of them is not about
    # its seed (a small model writes its checklist question as the instruction) and is sent back. Empty: not checked.
    seed_columns: list[str] = field(default_factory=list)
    # The sheets of a workbook with several: a task naming `sheet.column` says which sheet it reads (code reading
    # the file gets the first sheet unless told). Empty: the source is no workbook, or has one sheet.
    sheets: list[str] = field(default_factory=list)


@runtime_checkable
class Questioner(Protocol):
    """The questioner role's protocol. Plugins (entry point group `ds_synth.roles`, name "questioner") implement
    it; they are constructed as `cls(model=ChatModel, role=Role | None)`."""

    async def propose(self, request: ProposalRequest) -> TaskProposal: ...


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
            "category_hint": request.category_hint or request.category,
            "difficulty_hint": DIFFICULTY_HINTS.get(request.difficulty, request.difficulty),
            "data_card": request.data_card,
            "avoid": request.avoid,
            "rule_names": ", ".join(self.rule_names) or "answer_present",
            "files": request.file_names,
            "focus_table": request.focus_table,
            "seed": request.seed,
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
        data = first_json_object(text)
        cap = TaskProposal.model_fields["checklist"].metadata[0].max_length
        if last_try and isinstance(data, dict) and isinstance(data.get("checklist"), list) and len(data["checklist"]) > cap:
            data = {**data, "checklist": data["checklist"][:cap]}  # optional checks: a sound task is worth more
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
        task.instruction = _bare_columns_of_one_table(task.instruction, request.columns)
        ungrounded = _ungrounded_names(task.instruction, request, task.deliverables)
        if ungrounded:  # never kept, not even on the last try: a task about data that is not there is worthless
            raise ValueError(f"instruction names {', '.join(ungrounded)}, which the data does not have; use only "
                             f"the files ({', '.join(request.file_names)}) and the tables and columns of the data "
                             "description, spelled exactly")
        if request.seed_columns and not any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", task.instruction,
                                                      re.IGNORECASE) for name in request.seed_columns):
            raise ValueError(f"the instruction names none of the seed's columns ({', '.join(request.seed_columns)}); "
                             "write the task the seed describes, over those columns")
        task.instruction = _with_sheets_named(task.instruction, request.sheets, task.files)
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


def _bare_columns_of_one_table(text: str, columns: dict[str, list[str]]) -> str:
    """`diabetes.s4` -> `s4` in a one-table source: code reading a CSV finds no column named `diabetes.s4`."""
    if len(columns) != 1:
        return text
    [(table, names)] = columns.items()
    known = {n.lower(): n for n in names}

    def bare(match: re.Match[str]) -> str:
        column = known.get(match.group(2).lower())
        return f"`{column}`" if match.group(1).lower() == table.lower() and column else match.group(0)

    return _QUALIFIED.sub(bare, text)


def _with_sheets_named(text: str, sheets: Sequence[str], files: Sequence[str]) -> str:
    """`features.statistic` in a workbook task -> the task also says that `features` is a sheet of the file."""
    named = list(dict.fromkeys(table for table, _ in _QUALIFIED.findall(text) if table in sheets))
    named = [sheet for sheet in named if not re.search(rf"sheet\W+`?{re.escape(sheet)}\b|`?{re.escape(sheet)}`?\s+"
                                                        r"sheet", text, re.IGNORECASE)]
    if not named or not files:
        return text
    which = " and ".join(f"`{sheet}`" for sheet in named)
    return f"{text.rstrip()} {which} {'is a sheet' if len(named) == 1 else 'are sheets'} of {files[0]}."


_FILE_NAME = re.compile(r"(?<![\w./-])[\w-]+\.(?:csv|tsv|sqlite3?|db|duckdb|xlsx?|parquet|jsonl?|txt|md)(?![\w.])",
                        re.IGNORECASE)
_QUALIFIED = re.compile(r"`([A-Za-z_][\w ]*)\.([A-Za-z_][\w ]*)`")


def _ungrounded_names(text: str, request: ProposalRequest, deliverables: Sequence[str]) -> list[str]:
    """Data files and backticked `table.column` names in `text` that the source does not have (deliverables and
    the files of the request are fine). Only checked when the request carries the source's columns."""
    if not request.columns:
        return []
    known_files = {n.lower() for n in [*request.file_names, *deliverables]}
    tables = {t.lower(): {c.lower() for c in cols} for t, cols in request.columns.items()}
    stems = {Path(n).stem.lower() for n in request.file_names}
    bad = [  # a file the task reads that is not there; other file names are outputs the task asks for
        f"file {name}" for name in dict.fromkeys(_FILE_NAME.findall(text))
        if name.lower() not in known_files and re.search(
            rf"\b(?:in|from|of|open|read|reads|load|loads|using|uses)\s+(?:the\s+)?['\"`]?{re.escape(name)}",
            text, re.IGNORECASE)]
    for table, column in dict.fromkeys(_QUALIFIED.findall(text)):
        if table.lower() in stems and f"{table}.{column}".lower() in known_files:
            continue  # a backticked file name such as `sales.csv`
        if column.lower() not in tables.get(table.lower(), set()):
            bad.append(f"`{table}.{column}`")
    return bad


def _tables_named(text: str, tables: Sequence[str]) -> list[str]:
    """The tables `text` names as words (any case, optional plural), not as parts of column names like AlbumId."""
    return [t for t in tables if re.search(rf"(?<![\w.]){re.escape(t)}(?:s|es)?(?!\w)", text, re.IGNORECASE)]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


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


def rule_signatures() -> list[str]:
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


def task_checklist(task: dict[str, Any]) -> list[Any]:
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


def new_questioner(model: ChatModel, roles_dir: Path | None = None) -> Questioner:
    """The run's questioner, validating task items against the rule registry."""
    return make_questioner(model, roles_dir, validate_items=_validate_task_items, rule_names=rule_signatures())


__all__ = ["TaskProposal", "ProposalRequest", "Questioner", "QuestionerError", "LLMQuestioner", "make_questioner",
           "new_questioner", "task_checklist", "rule_signatures", "DIFFICULTY_HINTS"]
