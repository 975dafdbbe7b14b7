"""Checklists as data: validate items against the registry, load a category's YAML, combine standing and task items.

A checklist file is `checklists/<category>.yaml` (built in) or `<--checklists DIR>/<category>.yaml` (the user's,
which wins); every category with a checklist file can be planned. The questioner writes task items through the
restricted schema at the bottom (`TaskChecklistItem`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synth.checklist.items import ChecklistItem, JudgedItem, RuleItem
from synth.checklist.registry import ChecklistError, errors_text, get_rule, registered_rules

BUILTIN_CHECKLISTS_DIR = Path(__file__).resolve().parent.parent.parent / "checklists"


class Checklist(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    description: str = ""
    hint: str = Field("", description="One line telling the questioner what a task of this category does.")
    open_ended: bool = Field(False, description="Tasks have no single right answer (reports, open research): "
                             "they are not verified against a reference and get the `openresearch` reward.")
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
            problems.append(f"{label}: {errors_text(exc, skip=1)}")
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
        raise ChecklistError(f"{path}: {errors_text(exc)}") from None


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
            problems.append(f"item {index + 1}: {errors_text(exc)}")
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



__all__ = ["BUILTIN_CHECKLISTS_DIR", "Checklist", "validate_items", "combine_items", "checklist_dirs",
           "load_checklist", "list_categories", "TaskChecklistItem", "task_item_schema", "validate_task_items"]
