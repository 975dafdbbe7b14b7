"""Rules over the answer: present, long enough, grounded in printed output, after output, matching a reference."""

from __future__ import annotations

from typing import Any

from synth.checklist.context import RuleContext
from synth.checklist.items import ItemResult
from synth.checklist.registry import rule
from synth.matchers import NumberToken, answer_fields, answers_match, as_number, named_values, number_tokens


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



def _grounded(token: NumberToken, seen: list[float]) -> bool:
    value, step = token.value, 10.0 ** -token.decimals
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
    tokens = number_tokens(ctx.trajectory.answer or "")
    if not tokens:
        return ItemResult(True, "the answer states no numbers")
    printed = " ".join(t.result.output() for t in ctx.trajectory.turns if t.result is not None)
    seen = [t.value for t in number_tokens(printed) + number_tokens(ctx.trajectory.prompt)]
    seen += [v * 100 for v in seen] + [v / 100 for v in seen]  # 0.25 printed, "25%" answered (and back)
    missing = list(dict.fromkeys(t.text for t in tokens if not _grounded(t, seen)))
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


@rule("answer_matches", fix="Re-check the computation: which rows and columns the task means, the filters, the "
                            "aggregation and the rounding; then answer from the printed result.")
def answer_matches(
    ctx: RuleContext, *, reference: Any = None, tolerance: float = 1e-6, rel_tolerance: float = 0.0,
    contains: bool = True,
) -> ItemResult:
    """The answer agrees with the reference (param, else the task's reference answer); see `answers_match`. The
    solver's feedback never shows the reference value, only that the result disagrees with it."""
    expected = reference if reference is not None else ctx.reference
    if expected is None:
        return ItemResult(False, "no reference answer to compare with")
    answer = ctx.trajectory.answer
    if not answer:
        return ItemResult(False, "no answer")
    if answers_match(answer, expected, tolerance=tolerance, rel_tolerance=rel_tolerance, contains=contains):
        return ItemResult(True, f"answer matches the reference {expected!r}")
    return ItemResult(False, f"answer does not match the reference {expected!r}",
                      feedback="the result disagrees with an independent computation of the same task")


# --- complete, and stating a result ---------------------------------------------------------------------------

import re as _re
from collections import Counter as _Counter

_WORDS = _re.compile(r"[A-Za-z][A-Za-z0-9_'-]*")
# A sentence never ends on these: an answer that does was cut off.
_DANGLING = frozenset("the a an of to and or but is are was were be with for in on by from as at than that which "
                      "its their this these whose into per between has have had not".split())
_CLEAN_END = ".!?)]}\"'`*|%>"
_CUT_END = ",;:-\u2013\u2014/&+=(["
_STRUCTURED_LINE = _re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#|\|)")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text or "")]


def _why_cut(answer: str, context: str) -> str | None:
    if answer.count("```") % 2:
        return "it ends inside an unclosed ``` block"
    for open_, close in ("()", "[]"):
        if answer.count(open_) > answer.count(close):
            return f"it leaves a {open_!r} unclosed"
    last = answer[-1]
    if last in _CLEAN_END or last.isdigit():
        return None
    if last in _CUT_END:
        return f"it ends with {last!r}"
    match = _re.search(r"([A-Za-z][A-Za-z0-9_'-]*)$", answer)
    if match is None:
        return None
    word = match.group(1).lower()
    if word in _DANGLING:
        return f"it ends with the word {match.group(1)!r}"
    counts = _Counter(_words(context))
    if counts[word] <= 1:  # the answer's own last word is the one occurrence: the fragment is no word elsewhere
        longer = sorted(w for w in counts if w.startswith(word) and len(w) > len(word))
        if longer:
            return f"it ends mid-word: {match.group(1)!r} (cf. {longer[0]!r})"
    line = answer.splitlines()[-1]
    if not _STRUCTURED_LINE.match(line) and len(_WORDS.findall(line)) >= 4:
        return f"its last sentence has no ending: {line.strip()[-50:]!r}"
    return None


@rule("answer_complete", fix="Finish the <Answer>: complete its last sentence and close what it opens.")
def answer_complete(ctx: RuleContext) -> ItemResult:
    """The answer is not cut off: it does not end mid-word, on a dangling word (`the`, `of` …) or punctuation
    (`,` `:`), inside an open bracket or ``` block, or in a prose sentence without an ending. A list item, a
    heading or a table row may end without a full stop."""
    answer = (ctx.trajectory.answer or "").rstrip()
    if not answer.strip():
        return ItemResult(False, "no answer")
    why = _why_cut(answer, f"{ctx.trajectory.prompt}\n{ctx.text()}")
    if why:
        return ItemResult(False, f"the answer looks cut off: {why}")
    return ItemResult(True, "the answer ends cleanly")


@rule("answer_states_result", fix="State the result itself in the <Answer>: the value(s), names or counts your "
                                  "code printed, not only what you did.")
def answer_states_result(ctx: RuleContext) -> ItemResult:
    """The answer states a result: a number that is not just repeated from the task, or a value (a word) that a
    cell printed and that neither the task nor the code contains — "I computed the average" states nothing."""
    from synth.protocol import instruction_of

    answer = ctx.trajectory.answer or ""
    if not answer.strip():
        return ItemResult(False, "no answer")
    task = instruction_of(ctx.trajectory.prompt)
    asked = {t.value for t in number_tokens(task)}
    numbers = [t.text for t in number_tokens(answer) if t.value not in asked]
    if numbers:
        return ItemResult(True, f"the answer states {len(numbers)} number(s), e.g. {numbers[0]}")
    printed = set(_words(" ".join(t.result.output() for t in ctx.trajectory.turns if t.result is not None)))
    known = set(_words(task)) | set(_words(" ".join(t.code or "" for t in ctx.trajectory.turns))) | _DANGLING
    values = list(dict.fromkeys(w for w in _words(answer) if w in printed and w not in known and len(w) > 1))
    if values:
        return ItemResult(True, f"the answer names {len(values)} printed value(s), e.g. {values[0]!r}")
    return ItemResult(False, "the answer states no result: no number and no value printed by a cell")


@rule("answer_format_followed", fix="Give every value the task asks for in its answer format, @name[value] for each "
                                    "name, rounded as the task says.")
def answer_format_followed(ctx: RuleContext) -> ItemResult:
    """When the task prescribes @name[value] answers (InfiAgent-DABench's format, or a user's task written the same
    way), the answer gives every requested name with a value, and no numeric value has more decimals than the task
    states for that field (matchers.answer_fields). A task without such a format passes."""
    from synth.protocol import instruction_of

    fields = answer_fields(instruction_of(ctx.trajectory.prompt))
    if not fields:
        return ItemResult(True, "the task prescribes no @name[value] format")
    given = named_values(ctx.trajectory.answer or "")
    missing = [f for f in fields if not given.get(f.name, "").strip()]
    if missing:
        return ItemResult(False, f"the answer gives no {', '.join(f'@{f.name}[...]' for f in missing[:6])}; the "
                                 f"task asks for: {' '.join(f.template() for f in fields)}")
    loose = []
    for f in fields:
        tokens = number_tokens(given[f.name]) if as_number(given[f.name]) is not None else []
        if f.decimals is not None and tokens and not tokens[0].percent and tokens[0].decimals > f.decimals:
            loose.append(f"@{f.name}[{given[f.name]}] has {tokens[0].decimals} decimals where the task asks for "
                         f"{f.decimals}")
    if loose:
        return ItemResult(False, "; ".join(loose[:4]))
    return ItemResult(True, f"the answer gives all {len(fields)} requested @name[value] field(s)")


_IDENTIFIER = _re.compile(r"`([A-Za-z_][\w.]*)`|(?<![\w.])([A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+)(?![\w])")


@rule("answer_names_known", fix="Name only the tables, columns and values this task's data has, exactly as the "
                                "code and its output show them.")
def answer_names_known(ctx: RuleContext) -> ItemResult:
    """Every column-like name in the answer (a snake_case word or a `backticked` identifier) appears in the task
    or in the agent's work before the answer: an answer naming columns this episode never saw belongs to another
    task (or invents them)."""
    answer = ctx.trajectory.answer or ""
    names = list(dict.fromkeys(m.group(1) or m.group(2) for m in _IDENTIFIER.finditer(answer)))
    if not names:
        return ItemResult(True, "the answer names no columns or identifiers")
    text = ctx.text()
    cut = text.rfind("<Answer>")
    seen = f"{ctx.trajectory.prompt}\n{text[:cut] if cut != -1 else text}".lower()
    unknown = [n for n in names if n.lower() not in seen]
    if unknown:
        return ItemResult(False, f"the answer names {', '.join(repr(n) for n in unknown[:4])}, which neither the task "
                                 "nor any step of the episode shows")
    return ItemResult(True, f"all {len(names)} name(s) in the answer appear in the task or the episode")


@rule("protocol_valid", hard=True, fix="Write only the five actions: start with <Analyze>, close every tag, put no "
                                          "text outside tags, never write <Execute>, end with <Answer>.")
def protocol_valid(ctx: RuleContext) -> ItemResult:
    """The assistant message parses under the five-action grammar (synth.protocol.validate: starts with
    <Analyze>, every tag closed, no text outside tags, ends with <Answer>) and every <Code> is followed by its
    <Execute>. The agent loop always writes such messages; a trajectory from elsewhere may not."""
    from synth.protocol import parse, validate

    text = ctx.text()
    issues = [str(issue) for issue in validate(text)]
    kinds = [a.kind for a in parse(text).actions]
    for n, kind in enumerate(kinds):
        if kind == "Code" and "Execute" not in kinds[n + 1:n + 2]:
            issues.append(f"code_not_executed: <Code> {kinds[:n + 1].count('Code')} has no <Execute> after it")
        if kind == "Execute" and (n == 0 or kinds[n - 1] != "Code"):
            issues.append(f"orphan_execute: <Execute> {kinds[:n + 1].count('Execute')} follows no <Code>")
    if issues:
        more = f" (+{len(issues) - 3} more)" if len(issues) > 3 else ""
        return ItemResult(False, "; ".join(issues[:3]) + more)
    return ItemResult(True, f"{len(kinds)} well-formed actions")


__all__ = ["answer_present", "answer_min_length", "answer_grounded", "answer_after_output", "answer_matches",
           "answer_complete", "answer_states_result", "answer_names_known", "protocol_valid"]
