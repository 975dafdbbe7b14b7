"""The checklist engine (DESIGN §7): rule items checked by code, judged items answered by an LLM.

    items.py            what a checklist holds and what checking produces (RuleItem, JudgedItem, Verdict) — light
    registry.py         @rule, get_rule, plugins (entry-point group `ds_synth.rules`)
    loading.py          validate items, load checklists/<category>.yaml, combine standing and task items
    context.py          RuleContext: what a rule may look at after an episode
    answer_rules.py     rules over the answer (present, grounded, after output, matches a reference …)
    file_rules.py       rules over the workspace and sources (file created, no nulls, sources unchanged …)
    execution_rules.py  rules over the execution (errors, Execute authentic, replay reproduces …)
    judge.py            judged items: one structured call to the inspector's model
    evaluation.py       check every item and decide: accept, revise (with feedback) or reject

The shapes and the loading API are imported here directly; the engine parts load on first use, so that a record
(which stores items and verdicts) does not pull in the rules or the judge.
"""

from __future__ import annotations

import importlib
from typing import Any

from synth.checklist.items import ChecklistItem, ItemResult, ItemVerdict, JudgedItem, RuleItem, Verdict
from synth.checklist.loading import (
    BUILTIN_CHECKLISTS_DIR,
    Checklist,
    TaskChecklistItem,
    checklist_dirs,
    combine_items,
    list_categories,
    load_checklist,
    task_item_schema,
    validate_items,
    validate_task_items,
)
from synth.checklist.registry import (
    ENTRY_POINT_GROUP,
    ChecklistError,
    RuleSetupError,
    RuleSpec,
    get_rule,
    registered_rules,
    rule,
)

_LAZY = {
    "RuleContext": "synth.checklist.context",
    "evaluate": "synth.checklist.evaluation",
    "parse_judge_reply": "synth.checklist.judge",
    "DEFAULT_JUDGE_SYSTEM": "synth.checklist.judge",
    "DEFAULT_JUDGE_USER": "synth.checklist.judge",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'synth.checklist' has no attribute {name!r}")


__all__ = [
    "ChecklistError", "RuleSetupError", "RuleItem", "JudgedItem", "ChecklistItem", "ItemResult", "ItemVerdict",
    "Verdict", "RuleContext", "RuleSpec", "rule", "get_rule", "registered_rules", "Checklist", "validate_items",
    "combine_items", "checklist_dirs", "load_checklist", "list_categories", "TaskChecklistItem", "task_item_schema",
    "validate_task_items", "parse_judge_reply", "evaluate", "DEFAULT_JUDGE_SYSTEM", "DEFAULT_JUDGE_USER",
    "BUILTIN_CHECKLISTS_DIR", "ENTRY_POINT_GROUP",
]
