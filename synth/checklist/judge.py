"""Judged items: the inspector's model answers every question with pass/fail, a QUOTE and a reason.

The prompt comes from the inspector role (roles/inspector.yaml, overridable). For each question the judge must
quote the span of the agent's work that decides it; the engine checks that the quote really occurs in the
trajectory and that the reason says more than the question itself. A missing verdict, a missing quote, a quote
that is not there or a reason that only restates the question is no verdict: the judge is asked once more (with
what was wrong), and an item still without a usable answer is **not judged** — it neither passes nor blocks.
The reply is read leniently (small models number the questions, get cut off by max_tokens, wrap the JSON in
prose). `votes` > 1 samples that many judgments and takes the majority per item.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qsl, urlencode

import jinja2

from synth.checklist.context import RuleContext
from synth.checklist.items import ItemResult, JudgedItem
from synth.checklist.registry import ChecklistError
from synth.llm.base import ChatModel, Message, Usage
from synth.llm.replies import json_values
from synth.protocol import instruction_of


def _reply_json(text: str) -> Any:
    """The JSON value of a judge reply: an object, or a bare list of answer objects."""
    for value in json_values(text, arrays=True, inner=False):
        return value
    raise ValueError("no JSON object found")


# Used only when no inspector role can be found (roles/inspector.yaml is the real prompt).
DEFAULT_JUDGE_SYSTEM = """\
You review the work of a data-science agent. You see the task, the agent's steps with the REAL output of every
code cell (inside <Execute>), and its final answer. Answer each review question strictly from that evidence: an
answer that is not supported by an <Execute> output fails.
Reply with ONE JSON object and nothing else:
{"answers": [{"id": str, "quote": str, "pass": true or false, "reason": str}]}
with one entry per question, ids as given. `quote` is the span of the agent's work that decides the question,
copied character for character (a line of an <Execute> output, of the code or of the answer); `reason` is one
short sentence in your own words naming that evidence, never a repeat of the question."""

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
VOTE_TEMPERATURE = 0.7  # the least temperature used when several judgments are sampled


@dataclass(frozen=True)
class JudgedAnswer(ItemResult):
    """One judged item's outcome: the verdict, the reason, the quoted evidence, or `not_judged` (no verdict)."""

    quote: str = ""
    not_judged: bool = False


@dataclass
class JudgeOutcome:
    verdicts: dict[str, JudgedAnswer]
    usage: Usage


def _clip_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - limit} characters omitted]…\n{text[-half:]}"


def _judge_messages(
    items: Sequence[JudgedItem], ctx: RuleContext, judge_prompt: str | None, roles_dir: Path | None, max_chars: int
) -> tuple[list[Message], dict[str, Any]]:
    context = {
        "instruction": instruction_of(ctx.trajectory.prompt),
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


# --- reading a reply ---------------------------------------------------------------------------------------------

_ID_FIELD = re.compile(r'"id"\s*:\s*"([^"]+)"')
_PASS_FIELD = re.compile(r'"pass(?:ed)?"\s*:\s*(true|false)')
_TEXT_FIELD = r'"{name}"\s*:\s*"((?:[^"\\]|\\.)*)"'


def _unescape(text: str) -> str:
    import json

    try:
        return json.loads(f'"{text}"')
    except ValueError:
        return text


def _cut_off_entries(text: str) -> list[dict[str, Any]]:
    """The complete answer objects of a reply cut off by max_tokens (fields in any order)."""
    starts = [m for m in _ID_FIELD.finditer(text)]
    entries = []
    for n, match in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(text)
        chunk = text[match.end():end]
        verdict = _PASS_FIELD.search(chunk)
        if verdict is None:
            continue
        entry: dict[str, Any] = {"id": match.group(1), "pass": verdict.group(1) == "true"}
        for name in ("quote", "reason"):
            found = re.search(_TEXT_FIELD.format(name=name), chunk)
            if found:
                entry[name] = _unescape(found.group(1))
        entries.append(entry)
    return entries


def parse_judge_reply(
    text: str, item_ids: Sequence[str], asked: Sequence[str] | None = None
) -> tuple[dict[str, JudgedAnswer], list[str]]:
    """Verdicts found in a judge reply and the ids it gave no true/false verdict for.

    Accepts {"answers": [{"id", "quote", "pass"|"passed", "reason"}]}, {item_id: {"passed", "reason"}},
    {item_id: bool} and a bare list of answer objects. Small judges often number the questions instead of copying
    their ids: an id "k" that is not a real id means the k-th question as `asked` (default `item_ids`). Raises
    ValueError when the reply holds no JSON at all. Whether a verdict's evidence holds is `evidence_problem`'s
    business, not the parser's.
    """
    try:
        data = _reply_json(text)
    except ValueError:
        data = _cut_off_entries(text)  # a reply cut off by max_tokens still holds its complete answer objects
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
    verdicts: dict[str, JudgedAnswer] = {}
    missing: list[str] = []
    for item_id in item_ids:
        entry = entries.get(item_id)
        if isinstance(entry, dict):
            raw = next((entry[k] for k in ("passed", "pass", "verdict", "answer") if k in entry), None)
            reason = str(entry.get("reason") or "").strip()
            quote = next((str(entry[k]) for k in ("quote", "evidence", "span") if entry.get(k)), "")
        else:
            raw, reason, quote = entry, "", ""
        passed = _coerce_pass(raw)
        if passed is None:
            missing.append(item_id)
        else:
            verdicts[item_id] = JudgedAnswer(passed, reason or "judge gave no reason", quote=quote.strip())
    return verdicts, missing


# --- is the evidence real ----------------------------------------------------------------------------------------

_STOPWORDS = frozenset("""
a an the and or but nor of to in on at by for with from into onto as is are was were be been being it its this
that these those there their they them he she we you i me my our your his her so such if then than when where
while which who whom whose what how why whether not no yes any every each all some none can could should would
may might will shall must do does did done has have had having also only just very more most less least one ones
exactly directly clearly indeed correct correctly yes true false pass passed fail failed ok okay agent answer
answers question questions
""".split())
_WORD = re.compile(r"[A-Za-z0-9_]+(?:[.,][0-9]+)*%?")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> list[str]:
    return [_stem(w) for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOPWORDS]


def restates_question(reason: str, question: str, rubric: str = "") -> bool:
    """True when a reason adds fewer than two words of its own to the question (and rubric) it answers: "The
    answer directly answers the question" says nothing about the trajectory."""
    asked = set(_content_words(f"{question} {rubric}"))
    novel = [w for w in _content_words(reason) if w not in asked]
    return len(novel) < 2


def _squash(text: str) -> str:
    return " ".join(text.replace("\u2026", "...").split()).lower()


def quote_occurs(quote: str, transcript: str) -> bool:
    """The quote occurs in the transcript, up to whitespace and case; a quote with `...` elisions must have each
    of its pieces there, in order. A quote with fewer than 3 letters or digits quotes nothing."""
    text = _squash(transcript)
    cleaned = _squash(quote).strip("\"'`“”‘’ ")
    if sum(ch.isalnum() for ch in cleaned) < 3:
        return False
    position = 0
    for piece in (p.strip() for p in cleaned.split("...")):
        if not piece:
            continue
        found = text.find(piece, position)
        if found == -1:
            return False
        position = found + len(piece)
    return True


def evidence_problem(answer: JudgedAnswer, item: JudgedItem, transcript: str) -> str | None:
    """Why a verdict is no verdict, or None when its evidence holds."""
    if not answer.quote.strip():
        return "the judge quoted no evidence from the trajectory"
    if not quote_occurs(answer.quote, transcript):
        shown = " ".join(answer.quote.split())
        return f"the judge's quote is not in the trajectory: {shown[:80]!r}"
    if answer.reason == "judge gave no reason" or restates_question(answer.reason, item.question, item.rubric):
        return "the judge's reason only restates the question"
    return None


# --- asking ------------------------------------------------------------------------------------------------------


async def _judgment(items: Sequence[JudgedItem], messages: list[Message], params: dict[str, Any],
                    model: ChatModel, transcript: str, max_repairs: int,
                    temperature: float) -> tuple[dict[str, JudgedAnswer], Usage]:
    """One judgment: a call, then at most `max_repairs` retries for the items without a usable verdict."""
    by_id = {i.id: i for i in items}
    wanted = list(by_id)
    verdicts: dict[str, JudgedAnswer] = {}
    problems: dict[str, str] = {}
    usage = Usage()
    for attempt in range(max_repairs + 1):
        completion = await model.chat(
            messages,
            max_tokens=params.get("max_tokens"),
            temperature=temperature,
            response_format={"type": "json_object"},
        )
        usage = usage + completion.usage
        pending = [i for i in wanted if i not in verdicts]
        try:
            found, missing = parse_judge_reply(completion.text, pending, wanted)
        except ValueError as exc:
            problems = {i: f"judge reply was not valid JSON: {exc}" for i in pending}
            repair = f"Your reply was not valid JSON ({exc}). Reply again with ONLY the JSON object."
        else:
            problems = {i: "judge gave no verdict" for i in missing}
            for item_id, answer in found.items():
                problem = evidence_problem(answer, by_id[item_id], transcript)
                if problem is None:
                    verdicts[item_id] = answer
                else:
                    problems[item_id] = problem
            repair = ("Your reply gave no usable verdict for some questions:\n"
                      + "\n".join(f"- id {i}: {p}" for i, p in problems.items())
                      + "\nReply again with ONLY the JSON object covering these ids. For each, `quote` is copied "
                        "character for character from the agent's work (an <Execute> output line, a code line or "
                        "the answer) and decides the question; `reason` says in your own words what the quote "
                        "shows.")
        if not problems or attempt == max_repairs:
            break
        messages = [*messages, {"role": "assistant", "content": completion.text}, {"role": "user", "content": repair}]
    for item_id in wanted:
        if item_id not in verdicts:
            verdicts[item_id] = JudgedAnswer(False, problems.get(item_id, "judge gave no verdict"), not_judged=True)
    return verdicts, usage


def _majority(answers: list[JudgedAnswer]) -> JudgedAnswer:
    usable = [a for a in answers if not a.not_judged]
    if not usable:
        return answers[0]
    passes = [a for a in usable if a.passed]
    fails = [a for a in usable if not a.passed]
    tally = f"{len(passes)} pass, {len(fails)} fail of {len(answers)} votes"
    if len(passes) == len(fails):
        return JudgedAnswer(False, f"no majority ({tally})", not_judged=True)
    winner = (passes if len(passes) > len(fails) else fails)[0]
    return JudgedAnswer(winner.passed, f"{winner.reason} ({tally})", quote=winner.quote)


async def judge(
    items: Sequence[JudgedItem],
    ctx: RuleContext,
    model: ChatModel,
    *,
    judge_prompt: str | None,
    roles_dir: Path | None,
    max_repairs: int,
    max_chars: int,
    votes: int = 1,
) -> JudgeOutcome:
    """Every judged item's verdict with its checked evidence; `votes` judgments, majority per item."""
    messages, params = _judge_messages(items, ctx, judge_prompt, roles_dir, max_chars)
    transcript = ctx.text()
    votes = max(1, int(votes))
    temperature = float(params.get("temperature", 0.0) or 0.0)
    if votes > 1:
        temperature = max(temperature, VOTE_TEMPERATURE)

    def sample(n: int) -> list[Message]:
        if n == 0:
            return messages
        # Distinct requests, so a response cache does not hand every vote the same reply.
        last = dict(messages[-1], content=f"{messages[-1]['content']}\n\n(Independent review {n + 1} of {votes}.)")
        return [*messages[:-1], last]

    runs = await asyncio.gather(*(_judgment(items, sample(n), params, model, transcript, max_repairs, temperature)
                                  for n in range(votes)))
    usage = Usage()
    for _, used in runs:
        usage = usage + used
    verdicts = {i.id: _majority([found[i.id] for found, _ in runs]) if votes > 1 else runs[0][0][i.id]
                for i in items}
    return JudgeOutcome(verdicts, usage)


def split_votes(spec: str | None) -> tuple[str | None, int]:
    """A model spec without its `votes=k` option, and k (1 when absent): `openai:gpt-4o?votes=3&rpm=60` →
    (`openai:gpt-4o?rpm=60`, 3). `votes` belongs to the judge, not to the backend."""
    if not spec or "?" not in spec:
        return spec, 1
    head, _, query = spec.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    votes = [v for k, v in pairs if k == "votes"]
    if not votes:
        return spec, 1
    try:
        k = int(votes[-1])
    except ValueError:
        raise ChecklistError(f"model spec {spec!r}: votes must be a whole number, got {votes[-1]!r}") from None
    if k < 1:
        raise ChecklistError(f"model spec {spec!r}: votes must be at least 1")
    rest = [(key, v) for key, v in pairs if key != "votes"]
    return (f"{head}?{urlencode(rest)}" if rest else head), k


__all__ = ["DEFAULT_JUDGE_SYSTEM", "DEFAULT_JUDGE_USER", "JudgeOutcome", "JudgedAnswer", "parse_judge_reply",
           "evidence_problem", "quote_occurs", "restates_question", "judge", "split_votes"]
