"""The checklist engine (DESIGN §7): rule items checked by code, judged items answered by an LLM.

A checklist is a list of items. A **rule** item names a registered check and its parameters; it is evaluated
over the finished trajectory AND the real sandbox state (files, hashes, a fresh replay). A **judged** item is a
yes/no question the inspector's model answers with a reason; all judged items of a checklist go to the model in
one structured call. `evaluate` turns the item results into a `Verdict`: accept, revise (with feedback phrased as
instructions for the solver) or reject (a hard failure no revision can fix).

Rules are registered with `@rule("name")`; their parameters are the keyword-only arguments of the function and
are validated when a checklist is loaded, not when it runs. Plugins add rules through the `ds_synth.rules`
entry-point group (loaded lazily, once).
"""

from __future__ import annotations

import ast
import asyncio
import fnmatch
import hashlib
import inspect
import json
import logging
import math
import re
import sqlite3
import typing
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Sequence, Union

import jinja2
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
)

from synth.llm.base import ChatModel, Message, Usage
from synth.sandbox.base import ExecResult, FileInfo, Limits, Sandbox, SandboxState
from synth.trajectory import Trajectory

log = logging.getLogger(__name__)

BUILTIN_CHECKLISTS_DIR = Path(__file__).resolve().parent.parent / "checklists"
ENTRY_POINT_GROUP = "ds_synth.rules"


class ChecklistError(ValueError):
    """A checklist, item or rule parameter is invalid (raised at load time, with what and where)."""


class RuleSetupError(RuntimeError):
    """A rule cannot run because the caller did not give it what it needs (no sandbox, no workspace …).

    This is a wiring bug, not a property of the trajectory, so `evaluate` raises it instead of failing the item.
    """


# ---------------------------------------------------------------------------------------------------------------
# Items, results, verdicts


class RuleItem(BaseModel):
    """A check done by code: `rule` names a registered rule, `params` are its keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    rule: str
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    required: bool = True  # False = advisory: reported, never blocks acceptance
    hard: bool | None = None  # None = the rule's default; a hard failure rejects instead of asking for a revision

    @property
    def kind(self) -> Literal["rule"]:
        return "rule"


class JudgedItem(BaseModel):
    """A yes/no question the inspector's LLM answers from the trajectory, with a reason."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    question: str
    rubric: str = ""
    required: bool = True

    @property
    def kind(self) -> Literal["judged"]:
        return "judged"

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be empty")
        return value


def _item_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "rule" if "rule" in value else "judged"
    return "rule" if isinstance(value, RuleItem) else "judged"


ChecklistItem = Annotated[
    Union[Annotated[RuleItem, Tag("rule")], Annotated[JudgedItem, Tag("judged")]],
    Discriminator(_item_tag),
]


@dataclass(frozen=True)
class ItemResult:
    """What a rule function returns."""

    passed: bool
    reason: str


class ItemVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["rule", "judged"]
    passed: bool
    reason: str
    required: bool = True
    hard: bool = False


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemVerdict] = Field(default_factory=list)
    decision: Literal["accept", "revise", "reject"]
    score: float  # fraction of items passed (1.0 for an empty checklist)
    feedback: str = ""  # failed items as instructions for the solver's revision; "" when accepted cleanly
    usage: dict[str, Any] = Field(default_factory=dict)  # the judge call's tokens/cost

    def failed(self) -> list[ItemVerdict]:
        return [v for v in self.items if not v.passed]

    def item(self, item_id: str) -> ItemVerdict:
        for v in self.items:
            if v.id == item_id:
                return v
        raise KeyError(item_id)


# ---------------------------------------------------------------------------------------------------------------
# Context


@dataclass(frozen=True)
class SourceFile:
    """An original source (file or directory) given to the episode and its sha256 when the episode started."""

    name: str
    path: Path
    sha256: str


def hash_path(path: Path) -> str:
    """sha256 of a file's bytes; for a directory, of its sorted (relative path, file hash) pairs."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode() + b"\0" + _file_sha256(child).encode() + b"\n")
        return digest.hexdigest()
    return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_files(paths: Iterable[Path | str]) -> list[SourceFile]:
    """Hash the episode's sources BEFORE it starts, so `sources_unchanged` can prove they were not touched."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"source not found: {path}")
        out.append(SourceFile(path.name, path, hash_path(path)))
    return out


@dataclass
class RuleContext:
    """Everything a rule may look at after an episode."""

    trajectory: Trajectory
    workspace: Path | None = None  # the episode's workspace directory (still on disk)
    state: SandboxState | None = None  # session.snapshot() after the episode
    initial_state: SandboxState | None = None  # session.snapshot() right after open, before any cell ran
    sources: list[SourceFile] = field(default_factory=list)
    reference: Any = None  # the reference answer, if the task has one
    sandbox: Sandbox | None = None  # backend for opening fresh sessions (replay)
    limits: Limits | None = None
    assistant_text: str | None = None  # the assembled assistant message to check; default trajectory.assistant_text()

    def text(self) -> str:
        return self.assistant_text if self.assistant_text is not None else self.trajectory.assistant_text()

    def final_files(self) -> dict[str, FileInfo]:
        if self.state is not None:
            return dict(self.state.files)
        if self.workspace is not None:
            return _scan_workspace(self.workspace)
        raise RuleSetupError("this rule needs the sandbox state or workspace after the episode; neither was given")

    def initial_files(self) -> dict[str, FileInfo]:
        if self.initial_state is not None:
            return dict(self.initial_state.files)
        # Without a snapshot from before the episode, the copied sources are the only files known to predate it.
        names = {s.name for s in self.sources}
        return {p: info for p, info in self.final_files().items() if p in names or p.split("/", 1)[0] in names}


def _scan_workspace(root: Path) -> dict[str, FileInfo]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            files[rel] = FileInfo(rel, path.stat().st_size, _file_sha256(path))
    return files


# ---------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: Callable[..., ItemResult]
    params_model: type[BaseModel]
    hard: bool
    fix: str  # how to fix a failure, phrased as an instruction to the solver
    description: str

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.params_model.model_validate(params or {}).model_dump()
        except ValidationError as exc:
            raise ChecklistError(f"rule {self.name!r}: bad params ({_errors_text(exc)})") from None


def _errors_text(exc: ValidationError, skip: int = 0) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"][skip:]) or "value"
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


_RULES: dict[str, RuleSpec] = {}
_plugins_loaded = False


def rule(
    name: str,
    *,
    hard: bool = False,
    fix: str = "",
    description: str = "",
    params: type[BaseModel] | None = None,
    replace: bool = False,
) -> Callable[[Callable[..., ItemResult]], Callable[..., ItemResult]]:
    """Register `fn(ctx: RuleContext, *, param=default, ...) -> ItemResult` as rule `name`.

    The parameters model is built from the keyword-only arguments and their annotations (missing default =
    required), unless `params` gives one explicitly. `hard=True` marks a failure that revision cannot fix.
    """

    def decorate(fn: Callable[..., ItemResult]) -> Callable[..., ItemResult]:
        if name in _RULES and not replace:
            raise ChecklistError(f"rule {name!r} is already registered (pass replace=True to override it)")
        model = params or _params_model_from_signature(name, fn)
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        _RULES[name] = RuleSpec(name, fn, model, hard, fix, doc)
        return fn

    return decorate


def _params_model_from_signature(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ChecklistError(f"rule {name!r}: parameter {param.name!r} must be keyword-only (after `*`)")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    model_name = "".join(part.title() for part in name.split("_")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()  # importing the module runs its @rule decorators
        except Exception as exc:  # a broken plugin must not take the built-in rules down with it
            log.warning("could not load rule plugin %s (%s): %s", ep.name, ep.value, exc)


def get_rule(name: str) -> RuleSpec:
    _load_plugins()
    try:
        return _RULES[name]
    except KeyError:
        raise ChecklistError(f"unknown rule {name!r}; known rules: {', '.join(sorted(_RULES))}") from None


def registered_rules() -> dict[str, RuleSpec]:
    _load_plugins()
    return dict(sorted(_RULES.items()))


# ---------------------------------------------------------------------------------------------------------------
# Checklists: validation and loading


class Checklist(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    description: str = ""
    items: list[ChecklistItem] = Field(default_factory=list)

    def model_post_init(self, __context: Any) -> None:
        self.items = validate_items(self.items, where=f"checklist {self.category!r}")

    @property
    def rule_items(self) -> list[RuleItem]:
        return [i for i in self.items if isinstance(i, RuleItem)]

    @property
    def judged_items(self) -> list[JudgedItem]:
        return [i for i in self.items if isinstance(i, JudgedItem)]

    def with_task_items(self, task_items: Sequence[RuleItem | JudgedItem]) -> list[RuleItem | JudgedItem]:
        """Standing items followed by a task's own items; clashing task ids get a `task.` prefix."""
        return combine_items(self.items, task_items)


def validate_items(items: Sequence[Any], *, where: str = "checklist") -> list[RuleItem | JudgedItem]:
    """Parse items (dicts or models), check rule names and params against the registry, fill in missing ids.

    Raises ChecklistError naming every bad item (index, id, problem) in one message.
    """
    adapter = _item_adapter()
    out: list[RuleItem | JudgedItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(items):
        label = f"item {index + 1}"
        try:
            item = adapter.validate_python(raw)
        except ValidationError as exc:
            problems.append(f"{label}: {_errors_text(exc, skip=1)}")
            continue
        if isinstance(item, RuleItem):
            label = f"{label} (rule {item.rule})"
            try:
                spec = get_rule(item.rule)
                item = item.model_copy(update={"params": spec.validate_params(item.params)})
            except ChecklistError as exc:
                problems.append(f"{label}: {exc}")
                continue
        if not item.id:
            item = item.model_copy(update={"id": _fresh_id(_default_id(item, index), seen)})
        elif item.id in seen:
            problems.append(f"{label}: duplicate id {item.id!r}")
            continue
        seen.add(item.id)
        out.append(item)
    if problems:
        raise ChecklistError(f"{where}: " + "; ".join(problems))
    return out


@lru_cache(maxsize=1)
def _item_adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(ChecklistItem)


def _default_id(item: RuleItem | JudgedItem, index: int) -> str:
    return item.rule if isinstance(item, RuleItem) else f"judged_{index + 1}"


def _fresh_id(base: str, seen: set[str]) -> str:
    candidate, n = base, 2
    while candidate in seen:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def combine_items(
    standing: Sequence[RuleItem | JudgedItem], task_items: Sequence[RuleItem | JudgedItem]
) -> list[RuleItem | JudgedItem]:
    """Standing items then task items. A task rule item with the id AND rule of a standing item re-parameterises it
    (e.g. `sources_unchanged {allow_workspace_changes: true}` for a task that must edit a database); any other
    clashing task id gets a `task.` prefix."""
    out = list(standing)
    position = {item.id: n for n, item in enumerate(out)}
    seen = set(position)
    for item in task_items:
        twin = out[position[item.id]] if item.id in position else None
        if isinstance(item, RuleItem) and isinstance(twin, RuleItem) and twin.rule == item.rule:
            # Only the params change: a task must not make a standing item advisory or soft.
            out[position[item.id]] = twin.model_copy(update={"params": item.params})
            continue
        new_id = item.id if item.id not in seen else _fresh_id(f"task.{item.id}", seen)
        seen.add(new_id)
        out.append(item if new_id == item.id else item.model_copy(update={"id": new_id}))
    return out


def checklist_dirs(checklists_dir: Path | None = None) -> list[Path]:
    return [d for d in (checklists_dir, BUILTIN_CHECKLISTS_DIR) if d is not None]


def load_checklist(category: str, checklists_dir: Path | None = None) -> Checklist:
    """The checklist for `category`: the user's `checklists_dir/<category>.yaml` if present, else the built-in."""
    for directory in checklist_dirs(checklists_dir):
        path = Path(directory) / f"{category}.yaml"
        if path.is_file():
            return _load_checklist_file(path)
    raise ChecklistError(
        f"no checklist for category {category!r} in {', '.join(str(d) for d in checklist_dirs(checklists_dir))}; "
        f"known categories: {', '.join(list_categories(checklists_dir)) or 'none'}"
    )


def _load_checklist_file(path: Path) -> Checklist:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ChecklistError(f"cannot read checklist {path}: {exc}") from None
    if not isinstance(data, dict) or "items" not in data:
        raise ChecklistError(f"{path}: a checklist file is a mapping with `items` (and optional `category`, `description`)")
    data.setdefault("category", path.stem)
    if data["category"] != path.stem:
        raise ChecklistError(f"{path}: category {data['category']!r} does not match the file name {path.stem!r}")
    if not isinstance(data["items"], list):
        raise ChecklistError(f"{path}: `items` must be a list")
    data["items"] = validate_items(data["items"], where=str(path))
    try:
        return Checklist.model_validate(data)
    except ValidationError as exc:
        raise ChecklistError(f"{path}: {_errors_text(exc)}") from None


def list_categories(checklists_dir: Path | None = None) -> list[str]:
    """Categories with a checklist file (user dir and built-ins); other YAML files in those dirs are ignored."""
    names: set[str] = set()
    for directory in checklist_dirs(checklists_dir):
        for path in Path(directory).glob("*.yaml"):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and "items" in data:
                names.add(path.stem)
    return sorted(names)


# ---------------------------------------------------------------------------------------------------------------
# What the questioner writes


class TaskChecklistItem(BaseModel):
    """One task-specific item as the questioner writes it: either a rule (`rule` + `params`) or a `question`."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    rule: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    question: str | None = None
    rubric: str = ""
    required: bool = True


def task_item_schema() -> dict[str, Any]:
    """JSON schema of one questioner item, with `rule` restricted to the registered rule names."""
    schema = TaskChecklistItem.model_json_schema()
    schema["properties"]["rule"] = {"anyOf": [{"enum": list(registered_rules())}, {"type": "null"}], "default": None}
    return schema


def validate_task_items(raw: Any) -> list[RuleItem | JudgedItem]:
    """Turn the questioner's `checklist` value into items, or raise ChecklistError saying precisely what is wrong
    (the message is meant to be shown to the questioner in its repair prompt)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ChecklistError(f"task checklist must be a list of items, got {type(raw).__name__}")
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, entry in enumerate(raw):
        try:
            task_item = TaskChecklistItem.model_validate(entry)
        except ValidationError as exc:
            problems.append(f"item {index + 1}: {_errors_text(exc)}")
            continue
        if (task_item.rule is None) == (task_item.question is None):
            problems.append(f"item {index + 1}: give exactly one of `rule` or `question`")
            continue
        data: dict[str, Any] = {"id": task_item.id or "", "required": task_item.required}
        if task_item.rule is not None:
            data.update(rule=task_item.rule, params=task_item.params)
        else:
            if task_item.params:
                problems.append(f"item {index + 1}: a question item takes no `params`")
                continue
            data.update(question=task_item.question, rubric=task_item.rubric)
        try:
            validate_items([data])
        except ChecklistError as exc:
            problems.append(f"item {index + 1}: {str(exc).split(': ', 2)[-1]}")
            continue
        items.append(data)
    if problems:
        raise ChecklistError("task checklist: " + "; ".join(problems))
    return validate_items(items, where="task checklist")


# ---------------------------------------------------------------------------------------------------------------
# Answer matching (reused by refine and rewards)

_NUMBER_RE = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|(?<![\w.])[-+−]?\.\d+%?")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: Any) -> str:
    """Lower-case, strip accents, punctuation (except inside numbers), articles and extra whitespace."""
    s = unicodedata.normalize("NFKD", str(text))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower().replace("−", "-")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,234 -> 1234
    s = re.sub(r"[^\w\s.%-]|(?<!\d)\.|\.(?!\d)", " ", s)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def extract_numbers(text: str) -> list[float]:
    """Numbers written in `text` (thousands separators and a trailing % understood; 45% also counts as 0.45)."""
    values: list[float] = []
    for m in _NUMBER_RE.finditer(str(text).replace("−", "-")):
        token = m.group(0).replace(",", "").replace("−", "-")
        pct = token.endswith("%")
        token = token.rstrip("%")
        try:
            value = float(token)
        except ValueError:
            continue
        values.append(value)
        if pct:
            values.append(value / 100)
    return values


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip().replace(",", "")
    pct = s.endswith("%")
    try:
        number = float(s.rstrip("%"))
    except ValueError:
        return None
    return number / 100 if pct else number


def _numbers_close(candidate: float, reference: float, tolerance: float, rel_tolerance: float) -> bool:
    if math.isclose(candidate, reference, rel_tol=rel_tolerance, abs_tol=tolerance):
        return True
    return False


def _decimals(token: str) -> int:
    token = token.rstrip("%")
    return len(token.split(".", 1)[1]) if "." in token else 0


def _number_in_text(reference: float, text: str, tolerance: float, rel_tolerance: float) -> bool:
    for m in _NUMBER_RE.finditer(str(text).replace("−", "-")):
        token = m.group(0).replace(",", "")
        for value in extract_numbers(token):
            if _numbers_close(value, reference, tolerance, rel_tolerance):
                return True
            # A value shown with >= 2 decimals counts when it is the reference rounded to that precision.
            places = _decimals(token)
            if places >= 2 and not token.endswith("%") and round(reference, places) == value:
                return True
    return False


def _split_list(value: Any) -> list[Any] | None:
    if isinstance(value, (list, tuple, set)):
        return list(value)
    s = str(value).strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return parsed
        except json.JSONDecodeError:
            pass
    if "|" in s:  # WikiTQ-style list answers
        return [p.strip() for p in s.split("|") if p.strip()]
    return None


def answers_match(
    answer: Any,
    reference: Any,
    *,
    tolerance: float = 1e-6,
    rel_tolerance: float = 0.0,
    contains: bool = True,
) -> bool:
    """Does `answer` agree with `reference`?

    - numbers: equal within `tolerance` (absolute) or `rel_tolerance` (relative); a value written with two or
      more decimals also matches the reference rounded to that many places;
    - strings: equal after `normalize_answer`;
    - lists/sets (a Python list, a JSON list, or `a|b|c`): every reference element matches some answer element
      and, when the answer is itself a list, the same number of elements (order ignored).
    With `contains=True` (agent answers are prose) a reference element also matches when it occurs in the
    answer: the number among the answer's numbers, the normalised string as a whole-word substring.
    """
    if answer is None or reference is None:
        return False
    ref_list = _split_list(reference)
    if ref_list is not None:
        ans_list = _split_list(answer)
        if ans_list is not None:
            if len(ans_list) != len(ref_list):
                return False
            unused = list(ans_list)
            for ref in ref_list:
                hit = next((a for a in unused if answers_match(a, ref, tolerance=tolerance,
                                                               rel_tolerance=rel_tolerance, contains=False)), None)
                if hit is None:
                    return False
                unused.remove(hit)
            return True
        return all(answers_match(answer, ref, tolerance=tolerance, rel_tolerance=rel_tolerance, contains=contains)
                   for ref in ref_list)
    ref_number = _as_number(reference)
    if ref_number is not None:
        ans_number = _as_number(answer)
        if ans_number is not None:
            return _numbers_close(ans_number, ref_number, tolerance, rel_tolerance) or _number_in_text(
                ref_number, str(answer), tolerance, rel_tolerance
            )
        return contains and _number_in_text(ref_number, str(answer), tolerance, rel_tolerance)
    norm_answer, norm_ref = normalize_answer(answer), normalize_answer(reference)
    if not norm_ref:
        return False
    if norm_answer == norm_ref:
        return True
    return contains and re.search(rf"(?<!\w){re.escape(norm_ref)}(?!\w)", norm_answer) is not None


# ---------------------------------------------------------------------------------------------------------------
# Built-in rules


def _executed(ctx: RuleContext) -> list[tuple[int, str, ExecResult]]:
    """(cell number from 1, code, result) of every cell that actually ran."""
    cells = []
    for turn in ctx.trajectory.turns:
        if turn.code is not None and turn.result is not None:
            cells.append((len(cells) + 1, turn.code, turn.result))
    return cells


def _first_line(text: str | None, limit: int = 160) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    # A traceback's last line names the exception; that is the useful one.
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)


@rule("answer_present", fix="Finish with an <Answer>…</Answer> that states the result.")
def answer_present(ctx: RuleContext) -> ItemResult:
    """The episode ended with a non-empty <Answer>."""
    answer = (ctx.trajectory.answer or "").strip()
    if not answer:
        return ItemResult(False, f"no answer (episode stopped: {ctx.trajectory.stop_reason})")
    return ItemResult(True, f"answer of {len(answer)} characters")


@rule("answer_min_length", fix="Write a fuller <Answer>: state the result and how it was obtained.")
def answer_min_length(ctx: RuleContext, *, chars: int) -> ItemResult:
    """The answer has at least `chars` characters."""
    length = len((ctx.trajectory.answer or "").strip())
    if length < chars:
        return ItemResult(False, f"answer has {length} characters, fewer than {chars}")
    return ItemResult(True, f"answer has {length} characters")


@rule("turns_between", fix="Work the task in a number of steps within the allowed range.")
def turns_between(ctx: RuleContext, *, min: int = 1, max: int = 30) -> ItemResult:
    """The number of model turns lies in [min, max]."""
    n = len(ctx.trajectory.turns)
    if n < min:
        return ItemResult(False, f"{n} turns, fewer than {min}: too little exploration")
    if n > max:
        return ItemResult(False, f"{n} turns, more than {max}")
    return ItemResult(True, f"{n} turns, within [{min}, {max}]")


def _imports(code: str) -> set[str]:
    names: set[str] = set()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        for m in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))", code, re.MULTILINE):
            for name in (m.group(1) or m.group(2) or "").split(","):
                if name.strip():
                    names.add(name.strip().split()[0])
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@rule("uses_library", fix="Use the required library for this task (import it and work with it).")
def uses_library(ctx: RuleContext, *, name: str) -> ItemResult:
    """Some executed code cell imports `name` (or a submodule of it)."""
    for number, code, _ in _executed(ctx):
        for imported in _imports(code):
            if imported == name or imported.startswith(name + "."):
                return ItemResult(True, f"cell {number} imports {imported}")
    return ItemResult(False, f"no executed cell imports {name}")


@rule("no_unresolved_errors", fix="Fix the failing code and re-run it until it succeeds before answering.")
def no_unresolved_errors(ctx: RuleContext) -> ItemResult:
    """Every failing cell was followed by a later successful one, and the last cell succeeded."""
    cells = _executed(ctx)
    if not cells:
        return ItemResult(True, "no code was executed")
    errors = [(n, r) for n, _, r in cells if not r.ok]
    last_number, _, last = cells[-1]
    if not last.ok:
        what = "timed out" if last.timed_out else _first_line(last.error)
        return ItemResult(False, f"the last cell ({last_number}) failed: {what}")
    if errors:
        return ItemResult(True, f"{len(errors)} error(s) later fixed (cells {', '.join(str(n) for n, _ in errors)})")
    return ItemResult(True, f"all {len(cells)} cells succeeded")


@rule("code_runs", fix="Make the code run without errors; check column names and types before using them.")
def code_runs(ctx: RuleContext, *, min: float = 1.0) -> ItemResult:
    """The fraction of executed cells without error is at least `min`."""
    cells = _executed(ctx)
    if not cells:
        return ItemResult(False, "no code was executed")
    ok = sum(1 for _, _, r in cells if r.ok)
    rate = ok / len(cells)
    verdict = rate >= min - 1e-12
    return ItemResult(verdict, f"{ok}/{len(cells)} cells ran without error ({rate:.0%}; needed {min:.0%})")


@rule("file_created", fix="Write the requested output file into the working directory.")
def file_created(ctx: RuleContext, *, glob: str) -> ItemResult:
    """A file matching `glob` exists in the final workspace and did not exist before the episode."""
    final, initial = ctx.final_files(), ctx.initial_files()
    new = [p for p in final if _matches(p, glob) and (p not in initial or initial[p].sha256 != final[p].sha256)]
    created = [p for p in new if p not in initial]
    if created:
        return ItemResult(True, f"created {', '.join(created[:5])}")
    if new:
        return ItemResult(False, f"{', '.join(new[:5])} existed before the episode (modified, not created)")
    existing = [p for p in final if _matches(p, glob)]
    if existing:
        return ItemResult(False, f"only pre-existing files match {glob!r}: {', '.join(existing[:5])}")
    return ItemResult(False, f"no file matching {glob!r} in the workspace")


_TABULAR = (".csv", ".tsv", ".parquet", ".xlsx", ".xls", ".json", ".jsonl")


@rule("file_nonempty", fix="Write the output file with its actual content (not empty, not just a header).")
def file_nonempty(ctx: RuleContext, *, glob: str) -> ItemResult:
    """At least one file matches `glob` and every match has content (tables: at least one data row)."""
    final = ctx.final_files()
    matches = sorted(p for p in final if _matches(p, glob))
    if not matches:
        return ItemResult(False, f"no file matching {glob!r} in the workspace")
    for path in matches:
        if final[path].size == 0:
            return ItemResult(False, f"{path} is empty (0 bytes)")
        if ctx.workspace is not None and path.lower().endswith(_TABULAR):
            try:
                rows = sum(len(frame) for frame in _read_tables(ctx.workspace / path, None).values())
            except Exception as exc:
                return ItemResult(False, f"{path} cannot be read as a table: {_first_line(str(exc))}")
            if rows == 0:
                return ItemResult(False, f"{path} has no data rows")
    return ItemResult(True, f"{len(matches)} file(s) with content: {', '.join(matches[:5])}")


def _read_tables(path: Path, table: str | None) -> dict[str, Any]:
    """{table name: DataFrame} of a CSV/TSV/Parquet/Excel/JSON file or SQLite database (one table when named)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return {path.name: pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")}
    if suffix == ".parquet":
        return {path.name: pd.read_parquet(path)}
    if suffix in (".xlsx", ".xls", ".xlsm"):
        sheets = pd.read_excel(path, sheet_name=table if table else None)
        return sheets if isinstance(sheets, dict) else {table: sheets}
    if suffix == ".jsonl":
        return {path.name: pd.read_json(path, lines=True)}
    if suffix == ".json":
        return {path.name: pd.read_json(path)}
    if suffix in (".sqlite", ".sqlite3", ".db") or _is_sqlite(path):
        uri = f"file:{path}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")]
            if table is not None:
                if table not in names:
                    raise ValueError(f"no table {table!r} in {path.name}; tables: {', '.join(names)}")
                names = [table]
            return {n: pd.read_sql_query(f'SELECT * FROM "{n}"', conn) for n in names if not n.startswith("sqlite_")}
    raise ValueError(f"unsupported table file type {suffix or path.name!r}")


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


@rule("table_has_no_nulls", fix="Handle the missing values so the output table has none left.")
def table_has_no_nulls(ctx: RuleContext, *, file: str, column: str | None = None, table: str | None = None) -> ItemResult:
    """The table in workspace file `file` (CSV/TSV/Parquet/Excel sheet/SQLite table; a glob matching one file)
    has no missing values, in `column` only when given."""
    if ctx.workspace is None:
        raise RuleSetupError("table_has_no_nulls needs the episode's workspace directory")
    final = ctx.final_files()
    candidates = sorted(p for p in final if p == file or _matches(p, file))
    if not candidates:
        return ItemResult(False, f"no file {file!r} in the workspace")
    path = candidates[0]
    try:
        tables = _read_tables(ctx.workspace / path, table)
    except Exception as exc:
        return ItemResult(False, f"{path} cannot be read as a table: {_first_line(str(exc))}")
    checked = 0
    for name, frame in tables.items():
        where = path if len(tables) == 1 else f"{path}:{name}"
        if column is not None:
            if column not in frame.columns:
                if len(tables) > 1:
                    continue
                return ItemResult(False, f"{where} has no column {column!r}; columns: {', '.join(map(str, frame.columns))}")
            nulls = int(frame[column].isna().sum())
            if nulls:
                return ItemResult(False, f"{where} column {column!r} has {nulls} missing value(s)")
        else:
            counts = frame.isna().sum()
            bad = {str(c): int(n) for c, n in counts.items() if n}
            if bad:
                listed = ", ".join(f"{c}={n}" for c, n in list(bad.items())[:5])
                return ItemResult(False, f"{where} has missing values ({listed})")
        checked += 1
    if checked == 0:
        return ItemResult(False, f"no table in {path} has a column {column!r}")
    scope = f"column {column!r}" if column else "any column"
    return ItemResult(True, f"{path}: no missing values in {scope}")


@rule("sources_unchanged", hard=True, fix="Never modify the source files; write results to new files.")
def sources_unchanged(ctx: RuleContext, *, allow_workspace_changes: bool = False) -> ItemResult:
    """The original sources still hash as they did at the start and, unless the task allows modifying them,
    the workspace copies present before the episode are unchanged and still there."""
    changed = []
    for source in ctx.sources:
        if not source.path.exists():
            changed.append(f"original {source.path} was removed")
        elif hash_path(source.path) != source.sha256:
            changed.append(f"original {source.path} was modified")
    if not allow_workspace_changes and (ctx.initial_state is not None or ctx.state is not None or ctx.workspace):
        initial, final = ctx.initial_files(), ctx.final_files()
        for rel, info in sorted(initial.items()):
            if rel not in final:
                changed.append(f"workspace copy {rel} was deleted")
            elif final[rel].sha256 != info.sha256:
                changed.append(f"workspace copy {rel} was modified")
    if changed:
        return ItemResult(False, "; ".join(changed[:5]))
    scope = "originals" if allow_workspace_changes else "originals and workspace copies"
    return ItemResult(True, f"{len(ctx.sources)} source(s) unchanged ({scope})")


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?%?(?!\w)")


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in _NUMBER.finditer(text or "")]


def _value(token: str) -> tuple[float, int]:
    """A number token -> (value, decimals written); a percentage is its fraction with two more decimals."""
    body = token.rstrip("%").replace(",", "")
    decimals = len(body.split(".", 1)[1]) if "." in body and "e" not in body.lower() else 0
    value = float(body)
    if token.endswith("%"):
        return value / 100, decimals + 2
    return value, decimals


def _grounded(token: str, seen: list[float]) -> bool:
    value, decimals = _value(token)
    step = 10.0 ** -decimals
    for other in seen:
        if abs(other - value) <= step / 2 + 1e-9 * abs(value):
            return True  # equal, or the output rounded to the decimals the answer writes
        if (other >= 0) == (value >= 0) and 0 <= abs(other) - abs(value) < step:
            return True  # the output truncated to those decimals
    return False


@rule("answer_grounded", fix="Print every number you report and copy it from the output; never compute or invent "
                             "a number in the answer.")
def answer_grounded(ctx: RuleContext) -> ItemResult:
    """Every number in the answer appears in an <Execute> output (up to the rounding the answer shows) or in the
    task itself: a small model's answer often states numbers no cell ever printed."""
    answer = ctx.trajectory.answer or ""
    tokens = _numbers(answer)
    if not tokens:
        return ItemResult(True, "the answer states no numbers")
    printed = " ".join(t.result.output() for t in ctx.trajectory.turns if t.result is not None)
    seen = [_value(t)[0] for t in _numbers(printed) + _numbers(ctx.trajectory.prompt)]
    seen += [v * 100 for v in seen] + [v / 100 for v in seen]  # 0.25 printed, "25%" answered (and back)
    missing = list(dict.fromkeys(t for t in tokens if not _grounded(t, seen)))
    if missing:
        return ItemResult(False, f"{len(missing)} of {len(tokens)} number(s) in the answer appear in no output: "
                                 + ", ".join(missing[:6]))
    return ItemResult(True, f"all {len(tokens)} number(s) in the answer appear in the outputs")


@rule("answer_after_output", fix="Print the result (e.g. print(df)) and answer from what the output shows.")
def answer_after_output(ctx: RuleContext) -> ItemResult:
    """The last cell before the answer ran and printed something: the answer rests on output the agent saw."""
    cells = [t for t in ctx.trajectory.turns if t.result is not None]
    if not cells:
        return ItemResult(False, "no code cell ran before the answer")
    last = cells[-1].result
    if not last.ok:
        return ItemResult(False, "the last cell before the answer failed")
    if not last.output().strip():
        return ItemResult(False, "the last cell before the answer printed nothing")
    return ItemResult(True, f"the last cell printed {len(last.output())} characters")


@rule("answer_matches", fix="Re-check the computation: the answer does not match the expected result.")
def answer_matches(
    ctx: RuleContext, *, reference: Any = None, tolerance: float = 1e-6, rel_tolerance: float = 0.0,
    contains: bool = True,
) -> ItemResult:
    """The answer agrees with the reference (param, else the task's reference answer); see `answers_match`."""
    expected = reference if reference is not None else ctx.reference
    if expected is None:
        return ItemResult(False, "no reference answer to compare with")
    answer = ctx.trajectory.answer
    if not answer:
        return ItemResult(False, "no answer")
    if answers_match(answer, expected, tolerance=tolerance, rel_tolerance=rel_tolerance, contains=contains):
        return ItemResult(True, f"answer matches the reference {expected!r}")
    return ItemResult(False, f"answer does not match the reference {expected!r}")


_EXECUTE_OPEN = re.compile(r"</?Execute>")


@rule("no_model_written_execute", hard=True, fix="Never write <Execute> yourself; stop after </Code>.")
def no_model_written_execute(ctx: RuleContext, *, count_repaired: bool = False) -> ItemResult:
    """No model turn contains an <Execute> tag. With `count_repaired`, an invented Execute the loop already cut
    out (noted on the turn) also fails."""
    for number, turn in enumerate(ctx.trajectory.turns, start=1):
        if _EXECUTE_OPEN.search(turn.text):
            return ItemResult(False, f"turn {number} contains an <Execute> tag written by the model")
        if count_repaired and any("execute" in note.lower() for note in turn.notes):
            return ItemResult(False, f"turn {number}: the loop cut an invented <Execute> ({turn.notes[0]})")
    return ItemResult(True, "no model-written <Execute>")


@rule("execute_blocks_authentic", hard=True, fix="Never write <Execute> yourself; stop after </Code>.")
def execute_blocks_authentic(ctx: RuleContext) -> ItemResult:
    """Every <Execute> block in the assembled assistant message equals what the sandbox really returned for the
    corresponding cell, and there is one block per executed cell."""
    from synth.protocol import parse

    blocks = [a.content for a in parse(ctx.text()).of_kind("Execute")]
    real = [t.result.output() for t in ctx.trajectory.turns if t.result is not None]
    for index, (shown, actual) in enumerate(zip(blocks, real), start=1):
        if shown.strip("\n") != actual.strip("\n"):
            return ItemResult(False, f"<Execute> block {index} differs from the real output of cell {index}: "
                                     f"shows {_first_line(shown, 60)!r}, sandbox printed {_first_line(actual, 60)!r}")
    if len(blocks) != len(real):
        return ItemResult(False, f"{len(blocks)} <Execute> blocks for {len(real)} executed cells")
    return ItemResult(True, f"all {len(real)} <Execute> blocks match the sandbox output")


# Volatile bits that legitimately differ between two runs of the same code (documented in replay_reproduces).
_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]{4,}"), "0x<addr>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s|sec|secs|seconds?|minutes?)\b"), "<duration>"),
    (re.compile(r"/tmp/[\w.-]+"), "/tmp/<tmp>"),
]


def _normalize_output(text: str, workspaces: Sequence[Path], extra: Sequence[re.Pattern[str]]) -> str:
    for ws in workspaces:
        for form in {str(ws), str(ws.resolve())}:
            text = text.replace(form, "<workspace>")
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    for pattern in extra:
        text = pattern.sub("<ignored>", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


@rule("replay_reproduces", fix="Make the code deterministic (fix random seeds; do not print times or ids).")
def replay_reproduces(ctx: RuleContext, *, ignore_patterns: list[str] = []) -> ItemResult:  # noqa: B006 (pydantic copies)
    """Re-executes every code cell in order in a FRESH sandbox session over the same sources and compares each
    output and success flag with the recorded one.

    Tolerated differences, and only these: memory addresses (0x…), durations with a time unit (`1.2 s`,
    `30ms`), paths under /tmp and the workspace path, trailing whitespace, plus any regex in `ignore_patterns`.
    Unseeded randomness, wall-clock timestamps and anything else that changes between runs fails the item.
    """
    if ctx.sandbox is None:
        raise RuleSetupError("replay_reproduces needs the Sandbox backend (RuleContext.sandbox)")
    cells = _executed(ctx)
    if not cells:
        return ItemResult(False, "no code to replay")
    try:
        extra = [re.compile(p) for p in ignore_patterns]
    except re.error as exc:
        return ItemResult(False, f"bad ignore pattern: {exc}")
    session = ctx.sandbox.open([s.path for s in ctx.sources], mode=ctx.trajectory.mode, limits=ctx.limits)
    try:
        workspaces = [w for w in (ctx.workspace, session.workspace) if w is not None]
        for number, code, recorded in cells:
            replayed = session.run(code)
            if replayed.ok != recorded.ok:
                state = "succeeded" if replayed.ok else f"failed ({_first_line(replayed.error)})"
                return ItemResult(False, f"cell {number} {state} on replay but {'succeeded' if recorded.ok else 'failed'} when recorded")
            a = _normalize_output(recorded.output(), workspaces, extra)
            b = _normalize_output(replayed.output(), workspaces, extra)
            if a != b:
                return ItemResult(False, f"cell {number} printed different output on replay: {_first_difference(a, b)}")
    finally:
        session.close()
    return ItemResult(True, f"all {len(cells)} cells reproduced in a fresh session")


def _first_difference(recorded: str, replayed: str) -> str:
    rec, rep = recorded.splitlines(), replayed.splitlines()
    for i in range(max(len(rec), len(rep))):
        a = rec[i] if i < len(rec) else "<missing>"
        b = rep[i] if i < len(rep) else "<missing>"
        if a != b:
            return f"line {i + 1} recorded {a[:60]!r}, replay {b[:60]!r}"
    return "whitespace only"


# ---------------------------------------------------------------------------------------------------------------
# Judged items

# Used only when no inspector role can be found (roles/inspector.yaml is the real prompt).
DEFAULT_JUDGE_SYSTEM = """\
You review the work of a data-science agent. You see the task, the agent's steps with the REAL output of every
code cell (inside <Execute>), and its final answer. Answer each review question strictly from that evidence: an
answer that is not supported by an <Execute> output fails.
Reply with ONE JSON object and nothing else:
{"answers": [{"id": str, "pass": true or false, "reason": str}]}
with one entry per question, ids as given, each reason one short sentence."""

DEFAULT_JUDGE_USER = """\
# Task
{{ instruction }}

# Agent's work
{{ trajectory }}

# Questions
{%- for item in questions %}
- id {{ item.id }}: {{ item.question }}{% if item.rubric %} (rubric: {{ item.rubric }}){% endif %}
{%- endfor %}"""

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_TRUE = {"true", "yes", "pass", "passed", "ok", "y", "1"}
_FALSE = {"false", "no", "fail", "failed", "n", "0"}


@dataclass
class _JudgeOutcome:
    verdicts: dict[str, ItemResult]
    usage: Usage


def _instruction_of(prompt: str) -> str:
    text = prompt.split("# Instruction", 1)[-1]
    return text.split("\n# Data", 1)[0].strip()


def _clip_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - limit} characters omitted]…\n{text[-half:]}"


def _judge_messages(
    items: Sequence[JudgedItem], ctx: RuleContext, judge_prompt: str | None, roles_dir: Path | None, max_chars: int
) -> tuple[list[Message], dict[str, Any]]:
    context = {
        "instruction": _instruction_of(ctx.trajectory.prompt),
        "prompt": ctx.trajectory.prompt,
        "trajectory": _clip_middle(ctx.text(), max_chars),
        "answer": ctx.trajectory.answer or "",
        "reference": ctx.reference,
        "questions": [{"id": i.id, "question": i.question, "rubric": i.rubric} for i in items],
    }
    system, user, params = DEFAULT_JUDGE_SYSTEM, DEFAULT_JUDGE_USER, {"temperature": 0.0}
    if judge_prompt is None:
        from synth.roles import RoleError, load_role

        try:
            role = load_role("inspector", roles_dir)
        except RoleError as exc:
            if "no role named" not in str(exc):
                raise
            role = None
        if role is not None:
            system = role.render_system(**context)
            user = role.render_user(**context) if role.user.strip() else _render(DEFAULT_JUDGE_USER, context)
            params = dict(role.params)
            return _with_system(system, user), params
    else:
        user = judge_prompt
    return _with_system(_render(system, context), _render(user, context)), params


def _render(template: str, context: dict[str, Any]) -> str:
    try:
        return _JINJA.from_string(template).render(**context)
    except jinja2.TemplateError as exc:
        raise ChecklistError(f"cannot render the judge prompt: {exc}") from None


def _with_system(system: str, user: str) -> list[Message]:
    messages: list[Message] = []
    if system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return messages


def _extract_json(text: str) -> Any:
    """The JSON value in a reply: the whole text, a ```json fence, or the outermost {...}."""
    candidates = [text.strip()]
    candidates += [m.group(1) for m in re.finditer(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.DOTALL)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    last_error: Exception | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError) as exc:
            last_error = exc
    raise ValueError(f"no JSON object found ({last_error})")


def _coerce_pass(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


_ANSWER_OBJECT = re.compile(
    r'"id"\s*:\s*"([^"]+)"\s*,\s*"pass(?:ed)?"\s*:\s*(true|false)(?:\s*,\s*"reason"\s*:\s*"((?:[^"\\]|\\.)*)")?'
)


def parse_judge_reply(
    text: str, item_ids: Sequence[str], asked: Sequence[str] | None = None
) -> tuple[dict[str, ItemResult], list[str]]:
    """Verdicts found in a judge reply and the ids it gave no usable verdict for.

    Accepts {"answers": [{"id", "pass"|"passed", "reason"}]}, {item_id: {"passed", "reason"}}, {item_id: bool}
    and a bare list of answer objects. Small judges often number the questions instead of copying their ids: an
    id "k" that is not a real id means the k-th question as `asked` (default `item_ids`). Raises ValueError when
    the reply holds no JSON at all.
    """
    try:
        data = _extract_json(text)
    except ValueError:
        # A reply cut off by max_tokens still holds its complete answer objects: use those.
        data = [
            {"id": m.group(1), "pass": m.group(2) == "true", "reason": m.group(3) or ""}
            for m in _ANSWER_OBJECT.finditer(text)
        ]
        if not data:
            raise
    entries: dict[str, Any] = {}
    listing = data.get("answers", data.get("items")) if isinstance(data, dict) else data
    if isinstance(listing, list):
        for entry in listing:
            if isinstance(entry, dict) and "id" in entry:
                entries[str(entry["id"])] = entry
    elif isinstance(data, dict):
        entries = {str(k): v for k, v in data.items()}
    else:
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    asked = list(asked if asked is not None else item_ids)
    for key in [k for k in entries if k not in asked]:
        number = key.strip().lstrip("#").removeprefix("q").removeprefix("Q")
        if number.isdigit() and 1 <= int(number) <= len(asked) and asked[int(number) - 1] not in entries:
            entries[asked[int(number) - 1]] = entries[key]
    verdicts: dict[str, ItemResult] = {}
    missing: list[str] = []
    for item_id in item_ids:
        entry = entries.get(item_id)
        if isinstance(entry, dict):
            raw = next((entry[k] for k in ("passed", "pass", "verdict", "answer") if k in entry), None)
            reason = str(entry.get("reason", "")).strip()
        else:
            raw, reason = entry, ""
        passed = _coerce_pass(raw)
        if passed is None:
            missing.append(item_id)
        else:
            verdicts[item_id] = ItemResult(passed, reason or "judge gave no reason")
    return verdicts, missing


async def _judge(
    items: Sequence[JudgedItem],
    ctx: RuleContext,
    model: ChatModel,
    *,
    judge_prompt: str | None,
    roles_dir: Path | None,
    max_repairs: int,
    max_chars: int,
) -> _JudgeOutcome:
    messages, params = _judge_messages(items, ctx, judge_prompt, roles_dir, max_chars)
    wanted = [i.id for i in items]
    verdicts: dict[str, ItemResult] = {}
    usage = Usage()
    problem = ""
    for attempt in range(max_repairs + 1):
        completion = await model.chat(
            messages,
            max_tokens=params.get("max_tokens"),
            temperature=params.get("temperature", 0.0),
            response_format={"type": "json_object"},
        )
        usage = usage + completion.usage
        try:
            found, missing = parse_judge_reply(completion.text, [i for i in wanted if i not in verdicts], wanted)
        except ValueError as exc:
            problem = f"judge reply was not valid JSON: {exc}"
            missing = [i for i in wanted if i not in verdicts]
            found = {}
            repair = f"Your reply was not valid JSON ({exc}). Reply again with ONLY the JSON object."
        else:
            problem = ""
            repair = ("Your reply gave no true/false verdict for: " + ", ".join(missing)
                      + ". Reply again with ONLY the JSON object covering every id.")
        verdicts.update(found)
        if not missing or attempt == max_repairs:
            break
        messages = [*messages, {"role": "assistant", "content": completion.text}, {"role": "user", "content": repair}]
    for item_id in wanted:
        if item_id not in verdicts:
            verdicts[item_id] = ItemResult(False, problem or "judge gave no verdict")
    return _JudgeOutcome(verdicts, usage)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def _run_rules(items: Sequence[RuleItem], ctx: RuleContext) -> dict[str, tuple[ItemResult, bool]]:
    results: dict[str, tuple[ItemResult, bool]] = {}
    for item in items:
        spec = get_rule(item.rule)
        params = spec.validate_params(item.params)
        hard = spec.hard if item.hard is None else item.hard
        try:
            result = spec.fn(ctx, **params)
        except RuleSetupError:
            raise
        except Exception as exc:  # a rule tripping over odd data fails that item, visibly, not the whole episode
            log.warning("rule %s crashed on item %s: %r", item.rule, item.id, exc)
            result = ItemResult(False, f"rule {item.rule} could not check this: {type(exc).__name__}: {exc}")
        if not isinstance(result, ItemResult):
            raise ChecklistError(f"rule {item.rule!r} returned {type(result).__name__}, not ItemResult")
        results[item.id] = (result, hard)
    return results


async def evaluate(
    checklist_items: Sequence[RuleItem | JudgedItem | dict[str, Any]],
    ctx: RuleContext,
    judge_model: ChatModel | None = None,
    *,
    judge_prompt: str | None = None,
    roles_dir: Path | None = None,
    max_repairs: int = 1,
    max_transcript_chars: int = 24_000,
) -> Verdict:
    """Check every item and decide.

    Rule items run in a worker thread (they read files and may replay code); judged items go to `judge_model`
    in ONE call whose prompt comes from the inspector role (`roles_dir` override, else built-in), or from
    `judge_prompt` (a Jinja template of the user message) when given. Decision: every required item passed →
    accept; a required hard item failed → reject; otherwise revise, with `feedback` listing what to fix.
    """
    items = validate_items(list(checklist_items))
    rule_items = [i for i in items if isinstance(i, RuleItem)]
    judged_items = [i for i in items if isinstance(i, JudgedItem)]
    if judged_items and judge_model is None:
        raise RuleSetupError(
            f"{len(judged_items)} judged item(s) ({', '.join(i.id for i in judged_items)}) need a judge model"
        )
    rule_results = await asyncio.to_thread(_run_rules, rule_items, ctx) if rule_items else {}
    usage = Usage()
    judged: dict[str, ItemResult] = {}
    if judged_items:
        outcome = await _judge(judged_items, ctx, judge_model, judge_prompt=judge_prompt, roles_dir=roles_dir,
                               max_repairs=max_repairs, max_chars=max_transcript_chars)
        judged, usage = outcome.verdicts, outcome.usage
    verdicts: list[ItemVerdict] = []
    for item in items:
        if isinstance(item, RuleItem):
            result, hard = rule_results[item.id]
            verdicts.append(ItemVerdict(id=item.id, kind="rule", passed=result.passed, reason=result.reason,
                                        required=item.required, hard=hard))
        else:
            result = judged[item.id]
            verdicts.append(ItemVerdict(id=item.id, kind="judged", passed=result.passed, reason=result.reason,
                                        required=item.required))
    return _decide(items, verdicts, usage)


def _decide(items: Sequence[RuleItem | JudgedItem], verdicts: list[ItemVerdict], usage: Usage) -> Verdict:
    score = sum(v.passed for v in verdicts) / len(verdicts) if verdicts else 1.0
    blocking = [v for v in verdicts if not v.passed and v.required]
    if not blocking:
        decision = "accept"
    elif any(v.hard for v in blocking):
        decision = "reject"
    else:
        decision = "revise"
    by_id = {i.id: i for i in items}
    lines = []
    for v in verdicts:
        if v.passed:
            continue
        item = by_id[v.id]
        if isinstance(item, RuleItem):
            fix = get_rule(item.rule).fix or "Fix this."
            what = item.description or item.rule
            lines.append(f"- {what}: {v.reason}. {fix}")
        else:
            lines.append(f"- {item.question} The reviewer says no: {v.reason}. Revise the work so that it does.")
        if not v.required:
            lines[-1] += " (advisory)"
    return Verdict(items=verdicts, decision=decision, score=score, feedback="\n".join(lines),
                   usage=usage.to_dict())


__all__ = [
    "ChecklistError", "RuleSetupError", "RuleItem", "JudgedItem", "ChecklistItem", "ItemResult", "ItemVerdict",
    "Verdict", "SourceFile", "source_files", "hash_path", "RuleContext", "RuleSpec", "rule", "get_rule",
    "registered_rules", "Checklist", "validate_items", "combine_items", "load_checklist", "list_categories",
    "TaskChecklistItem", "task_item_schema", "validate_task_items", "normalize_answer", "extract_numbers",
    "answers_match", "parse_judge_reply", "evaluate", "DEFAULT_JUDGE_SYSTEM", "DEFAULT_JUDGE_USER",
]
