"""Checking a checklist: rule items by code, judged items by the inspector's model, then the decision."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Sequence

from synth.checklist.context import RuleContext
from synth.checklist.items import ItemResult, ItemVerdict, JudgedItem, RuleItem, Verdict
from synth.checklist.judge import judge
from synth.checklist.loading import validate_items
from synth.checklist.registry import ChecklistError, RuleSetupError, get_rule
from synth.llm.base import ChatModel, Usage

log = logging.getLogger(__name__)


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
    votes: int = 1,
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
    judged: dict[str, Any] = {}  # id -> judge.JudgedAnswer
    if judged_items:
        outcome = await judge(judged_items, ctx, judge_model, judge_prompt=judge_prompt, roles_dir=roles_dir,
                               max_repairs=max_repairs, max_chars=max_transcript_chars, votes=votes)
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
                                        required=item.required, evidence=getattr(result, "quote", ""),
                                        not_judged=getattr(result, "not_judged", False)))
    notes = {item_id: result.feedback for item_id, (result, _) in rule_results.items() if result.feedback}
    return decide(items, verdicts, usage, notes)


def decide(items: Sequence[RuleItem | JudgedItem], verdicts: list[ItemVerdict], usage: Usage,
           notes: dict[str, str] | None = None) -> Verdict:
    """The decision, and feedback for a revision: each failed item with why (a rule's solver-facing note instead
    of its reason when it has one) and how to fix it. An item with no verdict (`not_judged`: the judge gave no
    usable answer) neither passes nor blocks: it is left out of the score and the feedback."""
    counted = [v for v in verdicts if not v.not_judged]
    score = sum(v.passed for v in counted) / len(counted) if counted else 1.0
    blocking = [v for v in counted if not v.passed and v.required]
    if not blocking:
        decision = "accept"
    elif any(v.hard for v in blocking):
        decision = "reject"
    else:
        decision = "revise"
    by_id = {i.id: i for i in items}
    lines = []
    for v in counted:
        if v.passed:
            continue
        item = by_id[v.id]
        if isinstance(item, RuleItem):
            fix = get_rule(item.rule).fix or "Fix this."
            what = item.description or item.rule
            lines.append(f"- {what}: {(notes or {}).get(v.id, v.reason)}. {fix}")
        else:
            lines.append(f"- {item.question} The reviewer says no: {v.reason}. Revise the work so that it does.")
        if not v.required:
            lines[-1] += " (advisory)"
    return Verdict(items=verdicts, decision=decision, score=score, feedback="\n".join(lines),
                   usage=usage.to_dict())


__all__ = ["evaluate", "decide"]
