"""GRPO rewards for agent episodes (PROTOCOL-FACTS, Training).

Terms, each in [0, 1]:
- format: the assembled assistant message must be well formed per `synth.protocol.validate` (tags closed, starts
  with <Analyze>, ends with <Answer>, nothing outside tags); a malformed episode gets `weights.malformed` (−1)
  and no other term counts;
- accuracy: the answer against the reference (`synth.matchers` rule chain); a task without a reference (a
  data task judged by its effects) uses the checklist pass rate instead;
- checklist: the pass rate of the task's rule items (`synth.checklist`), evaluated over the REAL sandbox state
  after the episode (files created, tables, sources unchanged …); judged items are left to the inspector;
- interaction: the checklist pass rate, or the code success rate when the task has no rule items;
- code success: the share of executed cells that ran without error;
- turns: min(turns / turns_target, 1);
- report: an LLM judge scores the answer 1–5 on usefulness, richness, soundness, interpretability and
  readability; the term is (mean − 1) / 4.

Combination (weights configurable): qa / datatask → ½·(accuracy + interaction); openresearch →
⅓·(report + turns + code success).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from synth.llm.replies import json_objects
from synth.protocol import instruction_of, validate
from synth.trajectory import Trajectory

REPORT_DIMENSIONS = ("usefulness", "richness", "soundness", "interpretability", "readability")

REPORT_JUDGE_PROMPT = """\
You grade a data-science report written by an analyst for the task below. Score each dimension from 1 (poor)
to 5 (excellent):
- usefulness: does it answer the task and help a reader act on it?
- richness: does it cover the relevant aspects of the data, with concrete figures?
- soundness: are the methods and conclusions correct and supported by the analysis?
- interpretability: are results explained so a non-expert understands them?
- readability: is it well organised and clearly written?

# Task
{task}

# Report
{report}

Reply with ONLY a JSON object: {{"usefulness": n, "richness": n, "soundness": n, "interpretability": n, \
"readability": n, "reason": "one sentence"}}"""


@dataclass
class RewardWeights:
    accuracy: float = 0.5
    interaction: float = 0.5
    report: float = 1 / 3
    turns: float = 1 / 3
    code: float = 1 / 3
    malformed: float = -1.0
    turns_target: int = 10


@dataclass
class RewardBreakdown:
    total: float
    method: str
    well_formed: bool
    issues: list[str] = field(default_factory=list)
    accuracy: float | None = None
    checklist: float | None = None
    interaction: float | None = None
    code_success: float | None = None
    turns: float = 0.0
    report: float | None = None
    report_scores: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- terms -------------------------------------------------------------------------------------------------------


def format_issues(assistant_text: str) -> list[str]:
    """Structural problems of the assembled assistant message (empty when well formed)."""
    return [str(issue) for issue in validate(assistant_text)]


def accuracy_score(answer: str | None, ground_truth: Any, chain: Sequence[str] | None = None) -> float:
    """1.0 when a rule matcher accepts `answer` against `ground_truth`, else 0.0."""
    from synth.matchers import DEFAULT_CHAIN, match_rules

    return 1.0 if match_rules(answer, ground_truth, tuple(chain or DEFAULT_CHAIN)).matched else 0.0


def code_success_rate(trajectory: Trajectory) -> float | None:
    """Share of executed cells that succeeded; None when no code ran."""
    results = trajectory.results()
    if not results:
        return None
    return sum(1 for r in results if r.ok) / len(results)


def turns_score(trajectory: Trajectory, target: int = 10) -> float:
    return min(len(trajectory.turns) / max(target, 1), 1.0)


async def checklist_pass_rate(items: Sequence[Any], ctx: Any) -> tuple[float | None, list[str]]:
    """Pass rate of the rule items (judged items skipped) over `ctx` (a `synth.checklist.RuleContext` holding
    the real sandbox state); None when there are no rule items. Also returns one line per failed item."""
    from synth.checklist import RuleItem, evaluate, validate_items

    rules = [i for i in validate_items(list(items)) if isinstance(i, RuleItem)]
    if not rules:
        return None, []
    verdict = await evaluate(rules, ctx)
    failed = [f"{v.id}: {v.reason}" for v in verdict.items if not v.passed]
    return verdict.score, failed


# --- report judge ------------------------------------------------------------------------------------------------

_SCORE_RE = re.compile(r"(" + "|".join(REPORT_DIMENSIONS) + r")\W{0,6}?(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?",
                       re.IGNORECASE)


def parse_report_scores(text: str) -> dict[str, float] | None:
    """The five 1–5 scores from a judge reply: a JSON object (possibly fenced or inside prose, keys in any case,
    values as numbers, "4", "4/5"), or `name: n` lines. Values are clamped to [1, 5]; out-of-5 fractions on
    another scale (e.g. 8/10) are rescaled. None unless all five are found."""
    scores: dict[str, float] = {}
    for candidate in json_objects(text):
        lowered = {str(k).strip().lower(): v for k, v in candidate.items()}
        found = {d: _as_score(lowered[d]) for d in REPORT_DIMENSIONS if d in lowered}
        found = {d: v for d, v in found.items() if v is not None}
        if len(found) == len(REPORT_DIMENSIONS):
            return found
        scores.update(found)
    for match in _SCORE_RE.finditer(text):
        name = match.group(1).lower()
        if name not in scores:
            value = _as_score(match.group(2) + (f"/{match.group(3)}" if match.group(3) else ""))
            if value is not None:
                scores[name] = value
    return scores if len(scores) == len(REPORT_DIMENSIONS) else None


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, dict):  # {"score": 4, "reason": …}
        value = value.get("score")
    if isinstance(value, str):
        m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?", value)
        if not m:
            return None
        number = float(m.group(1))
        if m.group(2) and float(m.group(2)) > 0 and float(m.group(2)) != 5:
            number = 1 + 4 * number / float(m.group(2))
        value = number
    if not isinstance(value, (int, float)):
        return None
    return float(min(max(value, 1.0), 5.0))


async def judge_report(model: Any, task: str, report: str, *, prompt: str = REPORT_JUDGE_PROMPT,
                       attempts: int = 2) -> tuple[float | None, dict[str, float] | None, str]:
    """Ask `model` (a ChatModel) to grade `report`; returns (term in [0, 1], scores, note). An unreadable reply
    is asked again once; if it stays unreadable the term is None and the note says why."""
    messages = [{"role": "user", "content": prompt.format(task=task.strip(), report=report.strip())}]
    reply = ""
    for _ in range(max(attempts, 1)):
        completion = await model.chat(messages, max_tokens=300, temperature=0.0)
        reply = completion.text or ""
        scores = parse_report_scores(reply)
        if scores is not None:
            mean = sum(scores.values()) / len(scores)
            return (mean - 1.0) / 4.0, scores, ""
    return None, None, f"unreadable report judge reply: {' '.join(reply.split())[:160]!r}"


# --- combination -------------------------------------------------------------------------------------------------


async def score_episode(
    trajectory: Trajectory,
    reward_spec: dict[str, Any],
    *,
    ctx: Any = None,
    weights: RewardWeights | None = None,
    judge_model: Any = None,
    matcher_chain: Sequence[str] | None = None,
    assistant_text: str | None = None,
) -> RewardBreakdown:
    """The reward of one finished episode. `reward_spec` = {method, ground_truth, checklist}; `ctx` is the
    `RuleContext` over the episode's sandbox (needed when the checklist has rule items)."""
    w = weights or RewardWeights()
    method = reward_spec.get("method", "qa")
    text = assistant_text if assistant_text is not None else trajectory.assistant_text()
    issues = format_issues(text)
    turns = turns_score(trajectory, w.turns_target)
    code = code_success_rate(trajectory)
    if issues:
        return RewardBreakdown(total=w.malformed, method=method, well_formed=False, issues=issues, turns=turns,
                               code_success=code)
    out = RewardBreakdown(total=0.0, method=method, well_formed=True, turns=turns, code_success=code)
    items = reward_spec.get("checklist") or []
    if items:
        if ctx is None:
            from synth.checklist import RuleContext

            ctx = RuleContext(trajectory=trajectory, assistant_text=text)
        out.checklist, failed = await checklist_pass_rate(items, ctx)
        out.notes += [f"checklist failed {line}" for line in failed]
    if method == "openresearch":
        if judge_model is None:
            out.notes.append("no report judge model configured: report term is 0")
            report = 0.0
        else:
            task = instruction_of(trajectory.prompt)
            term, out.report_scores, note = await judge_report(judge_model, task, trajectory.answer or "")
            if note:
                out.notes.append(note)
            report = term or 0.0
        out.report = report
        out.total = w.report * report + w.turns * turns + w.code * (code or 0.0)
        return out
    ground_truth = reward_spec.get("ground_truth")
    if ground_truth is not None:
        out.accuracy = accuracy_score(trajectory.answer, ground_truth, matcher_chain)
    else:
        out.accuracy = out.checklist if out.checklist is not None else (code or 0.0)
    out.interaction = out.checklist if out.checklist is not None else (code or 0.0)
    out.total = w.accuracy * out.accuracy + w.interaction * out.interaction
    return out


__all__ = [
    "REPORT_DIMENSIONS", "REPORT_JUDGE_PROMPT", "RewardWeights", "RewardBreakdown", "format_issues",
    "accuracy_score", "code_success_rate", "turns_score", "checklist_pass_rate", "parse_report_scores",
    "judge_report", "score_episode",
]
