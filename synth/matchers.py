"""Does a model's answer agree with a reference? The one place that reads numbers and compares answers.

`number_tokens(text)` is the one number tokenizer (thousands separators, decimals, exponents, percentages) used by
the checklist rules (answer_grounded, answer_matches), refine's verification and the GRPO rewards.

    exact     normalised strings equal (`normalize_answer`)
    numeric   every reference number appears among the answer's numbers, within a relative tolerance
    wikitq    WikiTableQuestions denotation accuracy: the official evaluator's normalisation (diacritics, quotes,
              dashes, citations, trailing parentheses and '.'), values typed as number / date / string, list
              answers compared as sets of the same size. Extended with thousands separators ("1,000") and
              written-out dates ("January 5, 2010") that the official script leaves to CoreNLP tagging.
    contains  `answers_match`: the reference occurs in a prose answer (lenient)
    judge     an LLM decides (roles/judge.yaml) — the last resort, for answers no rule can read

`match_answer(answer, reference, chain)` tries matchers in order and returns the first that accepts. The answer
text is also read as its likely final-answer candidates ("The answer is X.", a bold **X**, the last line), since
models wrap the value in prose.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from synth.errors import SynthError

RuleMatcher = Callable[[str, Any], bool]
DEFAULT_CHAIN: tuple[str, ...] = ("exact", "wikitq", "numeric", "contains")


class MatcherError(SynthError, ValueError):
    """Unknown matcher name or a bad matcher chain."""


@dataclass(frozen=True)
class MatchResult:
    matched: bool
    method: str  # the matcher that accepted, or "none"
    detail: str = ""  # e.g. the candidate that matched, or the judge's reason

    def to_dict(self) -> dict[str, Any]:
        return {"matched": self.matched, "method": self.method, "detail": self.detail}


# --- numbers -----------------------------------------------------------------------------------------------------

# A number not glued to a word on either side ("Q3", "3rd", "x2" are not numbers), with optional sign, thousands
# separators, decimals, exponent and percent sign.
_NUMBER_RE = re.compile(
    r"(?<![\w.])[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?%?(?![A-Za-z_\d])"
)


@dataclass(frozen=True)
class NumberToken:
    text: str  # as written, e.g. "1,234.50" or "45%"
    value: float  # 1234.5; a percentage is its fraction (45% -> 0.45)
    decimals: int  # digits written after the point (a percentage counts two more: 45.1% -> 3)
    percent: bool
    written: float  # the number as written, without the percent scaling (45% -> 45.0)


def number_tokens(text: Any) -> list[NumberToken]:
    """Every number written in `text`, in order."""
    tokens = []
    for m in _NUMBER_RE.finditer(str(text or "").replace("\u2212", "-")):
        raw = m.group(0)
        body = raw.rstrip("%").replace(",", "")
        try:
            written = float(body)
        except ValueError:
            continue
        decimals = len(body.split(".", 1)[1].split("e")[0].split("E")[0]) if "." in body else 0
        percent = raw.endswith("%")
        tokens.append(NumberToken(raw, written / 100 if percent else written, decimals + (2 if percent else 0),
                                  percent, written))
    return tokens


def extract_numbers(text: str) -> list[float]:
    """Numbers written in `text` as written (a percentage also counts as its fraction: 45% -> 45 and 0.45)."""
    values: list[float] = []
    for token in number_tokens(text):
        values.append(token.written)
        if token.percent:
            values.append(token.value)
    return values


def as_number(value: Any) -> float | None:
    """`value` as one number ("1,234", "45%" -> 0.45, 3), or None when it is not exactly one number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    tokens = number_tokens(text)
    if len(tokens) != 1 or tokens[0].text != text:
        return None
    return tokens[0].value


# --- exact / numeric / contains -----------------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: Any) -> str:
    """Lower-case, strip accents, punctuation (except inside numbers), articles and extra whitespace."""
    s = unicodedata.normalize("NFKD", str(text))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower().replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,234 -> 1234
    s = re.sub(r"[^\w\s.%-]|(?<!\d)\.|\.(?!\d)", " ", s)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _number_in_text(reference: float, text: str, tolerance: float, rel_tolerance: float) -> bool:
    for token in number_tokens(text):
        for value in ((token.written, token.value) if token.percent else (token.value,)):
            if math.isclose(value, reference, rel_tol=rel_tolerance, abs_tol=tolerance):
                return True
        # A value shown with >= 2 decimals counts when it is the reference rounded to that precision.
        if token.decimals >= 2 and not token.percent and round(reference, token.decimals) == token.value:
            return True
    return False


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
    options = {"tolerance": tolerance, "rel_tolerance": rel_tolerance}
    ref_pairs = named_values(reference)
    if ref_pairs:  # `@name[value]` answers (InfiAgent style): every named value must be there and agree
        ans_pairs = named_values(answer)
        if ans_pairs:
            return all(name in ans_pairs and answers_match(ans_pairs[name], value, contains=False, **options)
                       for name, value in ref_pairs.items())
        return contains and all(answers_match(answer, value, contains=True, **options) for value in ref_pairs.values())
    if contains and _only_numbers(reference):  # "1.25, 3" printed by a program: every number must be stated
        return all(_number_in_text(t.value, str(answer), tolerance, rel_tolerance) for t in number_tokens(reference))
    ref_list = list_values(reference)
    if ref_list is not None:
        ans_list = list_values(answer)
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
    ref_number = as_number(reference)
    if ref_number is not None:
        ans_number = as_number(answer)
        if ans_number is not None:
            return math.isclose(ans_number, ref_number, rel_tol=rel_tolerance, abs_tol=tolerance) or \
                _number_in_text(ref_number, str(answer), tolerance, rel_tolerance)
        return contains and _number_in_text(ref_number, str(answer), tolerance, rel_tolerance)
    norm_answer, norm_ref = normalize_answer(answer), normalize_answer(reference)
    if not norm_ref:
        return False
    if norm_answer == norm_ref:
        return True
    return contains and re.search(rf"(?<!\w){re.escape(norm_ref)}(?!\w)", norm_answer) is not None


_NAMED_RE = re.compile(r"@(\w+)\[(.*?)\]")


def named_values(text: Any) -> dict[str, str]:
    """`@name[value]` pairs in `text` (a later one of a name wins, as InfiAgent's scorer does)."""
    return dict(_NAMED_RE.findall(str(text))) if isinstance(text, str) else {}


@dataclass(frozen=True)
class AnswerField:
    """One `@name[placeholder]` field a task prescribes for its answer, with the decimals the task states for it."""

    name: str
    placeholder: str
    decimals: int | None  # None: the task states no rounding for this field

    def template(self, max_placeholder: int | None = None) -> str:
        """`@name[placeholder]`; a placeholder longer than `max_placeholder` characters is shown as `...`."""
        short = max_placeholder is not None and len(self.placeholder) > max_placeholder
        return f"@{self.name}[{'...' if short else self.placeholder}]"


_DECIMALS_RE = re.compile(r"\b(\w+)\s+decimal\s+places?\b", re.IGNORECASE)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
# A task's format text splits into clauses at sentence ends, line breaks and each "where …".
_CLAUSE_RE = re.compile(r"(?<=\.)\s+|\n+|(?=\bwhere\b)", re.IGNORECASE)


def _stated_decimals(text: str) -> set[int]:
    words = (w.lower() for w in _DECIMALS_RE.findall(text))
    return {_NUMBER_WORDS[w] if w in _NUMBER_WORDS else int(w) for w in words if w in _NUMBER_WORDS or w.isdigit()}


def answer_fields(task: Any) -> list[AnswerField]:
    """The `@name[placeholder]` fields a task asks its answer in (InfiAgent-DABench's format), in order.

    A field's rounding is the one stated in its own brackets (`@r[the coefficient, rounded to two decimal places]`),
    else in a clause that quotes its placeholder (`where "r" is …, rounded to two decimal places`); when no field
    has its own, the task's one stated rounding applies to all (`@m[mean], @s[std], rounded to two decimal places`).
    A bracket holding a number (`@mean[1.23]`) or the generic `@name[value]` only shows the notation: no field."""
    if not isinstance(task, str):
        return []
    fields = [(name, placeholder) for name, placeholder in named_values(task).items()
              if (name, placeholder) != ("name", "value") and as_number(placeholder) is None]
    if not fields:
        return []
    clauses = [c for c in _CLAUSE_RE.split(task) if c and _stated_decimals(c)]
    overall = _stated_decimals(task)
    stated: dict[str, set[int]] = {}
    for name, placeholder in fields:
        quoted = {name.lower(), placeholder.strip().lower()}
        stated[name] = _stated_decimals(placeholder) or next(
            (_stated_decimals(c) for c in clauses if quoted & {q.lower() for q in re.findall(r'"([^"]+)"', c)}), set())
    if not any(stated.values()) and len(overall) == 1:
        stated = {name: overall for name in stated}
    return [AnswerField(name, placeholder, next(iter(stated[name])) if len(stated[name]) == 1 else None)
            for name, placeholder in fields]


def _only_numbers(reference: Any) -> bool:
    if not isinstance(reference, str):
        return False
    tokens = number_tokens(reference)
    rest = _NUMBER_RE.sub(" ", reference.replace("\u2212", "-"))
    return len(tokens) >= 2 and not rest.strip(" ,;|()[]\n\t")


def exact_match(answer: str, reference: Any) -> bool:
    """Equal after lower-casing and stripping punctuation, articles and whitespace; lists compared as sets."""
    refs = reference_values(reference)
    answers = _split_prediction(answer, len(refs))
    if len(answers) != len(refs):
        return False
    return sorted(normalize_answer(a) for a in answers) == sorted(normalize_answer(r) for r in refs)


def numeric_match(answer: str, reference: Any, *, rel_tolerance: float = 1e-4, abs_tolerance: float = 1e-6) -> bool:
    """Every reference value is a number and each appears among the answer's numbers (within tolerance)."""
    refs = reference_values(reference)
    ref_numbers = [_wikitq_number(r) for r in refs]
    if not ref_numbers or any(n is None for n in ref_numbers):
        return False
    found = extract_numbers(answer)
    return all(any(math.isclose(v, n, rel_tol=rel_tolerance, abs_tol=abs_tolerance) for v in found)
               for n in ref_numbers)


def contains_match(answer: str, reference: Any) -> bool:
    return answers_match(answer, reference, contains=True)


# --- WikiTQ denotation accuracy ----------------------------------------------------------------------------------


def wikitq_normalize(text: str) -> str:
    """The official WikiTQ evaluator's `normalize` (evaluator.py, Pasupat & Liang 2015)."""
    x = "".join(c for c in unicodedata.normalize("NFKD", str(text)) if unicodedata.category(c) != "Mn")
    x = re.sub(r"[‘’´`]", "'", x)
    x = re.sub(r"[“”]", '"', x)
    x = re.sub(r"[‐‑‒–—−]", "-", x)
    while True:
        old = x
        x = re.sub(r"((?<!^)\[[^\]]*\]|\[\d+\]|[•♦†‡*#+])*$", "", x.strip())  # citations, footnote marks
        x = re.sub(r"(?<!^)( \([^)]*\))*$", "", x.strip())  # trailing details in parentheses
        x = re.sub(r'^"([^"]*)"$', r"\1", x.strip())  # outermost quotation marks
        if x == old:
            break
    if x and x[-1] == ".":
        x = x[:-1]
    return re.sub(r"\s+", " ", x, flags=re.U).lower().strip()


_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"], start=1)}
_MONTHS.update({name[:3]: i for name, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9


def _wikitq_number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = wikitq_normalize(str(text)).replace("−", "-")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    try:
        value = float(s)
    except ValueError:
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _parse_date(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) with -1 for an unknown part, as the official DateValue; None when not a date."""
    s = wikitq_normalize(text).replace(",", " ")
    s = " ".join(s.split())
    m = re.fullmatch(r"(\d{4}|xxxx|xx)-(\d{1,2}|xx)-(\d{1,2}|xx)", s)
    if m:
        parts = [-1 if not p.isdigit() else int(p) for p in m.groups()]
        year, month, day = parts
        if (month == -1 or 1 <= month <= 12) and (day == -1 or 1 <= day <= 31) and not (year == month == day == -1):
            return year, month, day
        return None
    words = s.split(" ")
    month = next((_MONTHS[w.rstrip(".")] for w in words if w.rstrip(".") in _MONTHS), None)
    if month is None:
        return None
    rest = [w for w in words if w.rstrip(".") not in _MONTHS]
    if not rest or len(rest) > 2 or not all(re.fullmatch(r"\d{1,2}(st|nd|rd|th)?|\d{4}", w) for w in rest):
        return None
    year, day = -1, -1
    for w in rest:
        digits = int(re.sub(r"\D", "", w))
        if len(re.sub(r"\D", "", w)) == 4:
            year = digits
        elif 1 <= digits <= 31:
            day = digits
        else:
            return None
    return year, month, day


def _typed(text: str) -> tuple[str, Any]:
    number = _wikitq_number(text)
    if number is not None:
        return "number", number
    date = _parse_date(text)
    if date is not None:
        return "date", date
    return "string", wikitq_normalize(text)


def _value_matches(predicted: str, target: str) -> bool:
    if wikitq_normalize(predicted) == wikitq_normalize(target):
        return True
    p_kind, p_value = _typed(predicted)
    t_kind, t_value = _typed(target)
    if p_kind != t_kind:
        # A year written alone ("1993") against a date target with only the year known, and vice versa.
        if {p_kind, t_kind} == {"number", "date"}:
            number, date = (p_value, t_value) if p_kind == "number" else (t_value, p_value)
            return date[1] == -1 and date[2] == -1 and float(date[0]) == number
        return False
    if p_kind == "number":
        return abs(p_value - t_value) < 1e-6
    return p_value == t_value


def wikitq_match(answer: str, reference: Any) -> bool:
    """Denotation accuracy: same number of values, and every target value matches a distinct predicted one."""
    targets = reference_values(reference)
    predicted = _split_prediction(answer, len(targets))
    if not targets or len(predicted) != len(targets):
        return False
    unused = list(predicted)
    for target in targets:
        hit = next((p for p in unused if _value_matches(p, target)), None)
        if hit is None:
            return False
        unused.remove(hit)
    return True


# --- answers as values -------------------------------------------------------------------------------------------


def list_values(value: Any) -> list[Any] | None:
    """The elements of a list-valued answer (a Python list, a JSON list, or WikiTQ's `a|b|c`); None otherwise."""
    if isinstance(value, (list, tuple, set)):
        return list(value)
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return parsed
        except json.JSONDecodeError:
            pass
    if "|" in text:
        return [p.strip() for p in text.split("|") if p.strip()]
    return None


def reference_values(reference: Any) -> list[str]:
    """A reference as its list of values: a list, a JSON list, or WikiTQ's `a|b|c`; a scalar is one value."""
    values = list_values(reference)
    if values is not None:
        return [str(v) for v in values]
    text = str(reference).strip()
    return [text] if text else []


def _split_prediction(answer: str, expected: int) -> list[str]:
    values = reference_values(answer)
    if expected > 1 and len(values) == 1:
        # A list written in prose: "a, b and c" / "a; b".
        parts = [p.strip() for p in re.split(r";|,(?!\d{3}\b)|\band\b", values[0]) if p.strip()]
        if len(parts) == expected:
            return parts
    return values


_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*(.+)", re.IGNORECASE | re.DOTALL)
_BOLD_RE = re.compile(r"\*\*(.+?)\*\*")


def answer_candidates(text: str) -> list[str]:
    """The answer text and the final-answer strings likely inside it, most specific first, without repeats."""
    text = str(text or "").strip()
    found: list[str] = []
    for m in _ANSWER_IS_RE.finditer(text):
        found.append(m.group(1).strip().splitlines()[0].rstrip(".") if m.group(1).strip() else "")
    found.extend(m.group(1) for m in _BOLD_RE.finditer(text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        found.append(lines[-1])
    found.append(text)
    out: list[str] = []
    for item in found:
        item = item.replace("**", "").strip()
        item = re.sub(r"^\$|\$$", "", item).strip()
        if item and item not in out:
            out.append(item)
    return out


# --- registry and chains -----------------------------------------------------------------------------------------

RULE_MATCHERS: dict[str, RuleMatcher] = {
    "exact": exact_match,
    "numeric": numeric_match,
    "wikitq": wikitq_match,
    "contains": contains_match,
}
MATCHER_NAMES: tuple[str, ...] = (*RULE_MATCHERS, "judge")


def parse_chain(spec: str | Sequence[str] | None) -> list[str]:
    """'exact,wikitq,judge' (or a list) as a checked list of matcher names; None/'auto' is DEFAULT_CHAIN."""
    if spec is None or spec == "auto":
        return list(DEFAULT_CHAIN)
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise MatcherError("matcher chain is empty; name at least one of " + ", ".join(MATCHER_NAMES))
    for name in names:
        if name not in MATCHER_NAMES:
            raise MatcherError(f"unknown matcher {name!r}; choose from {', '.join(MATCHER_NAMES)}")
    return names


def match_rules(answer: str | None, reference: Any, chain: Sequence[str] = DEFAULT_CHAIN) -> MatchResult:
    """The rule matchers of `chain` (the judge is skipped), tried on every answer candidate."""
    if answer is None or reference is None or not reference_values(reference):
        return MatchResult(False, "none", "no answer" if answer is None else "no reference")
    candidates = answer_candidates(answer)
    for name in chain:
        matcher = RULE_MATCHERS.get(name)
        if matcher is None:
            continue
        for candidate in candidates:
            if matcher(candidate, reference):
                return MatchResult(True, name, candidate[:200])
    return MatchResult(False, "none", f"{candidates[0][:200] if candidates else ''!r} vs {reference!r}")


async def match_answer(answer: str | None, reference: Any, chain: Sequence[str] = DEFAULT_CHAIN, *,
                       judge_model: Any = None, question: str = "", roles_dir: Any = None) -> MatchResult:
    """Rule matchers in order; the LLM judge last, only when `judge` is in the chain and a model is given."""
    result = match_rules(answer, reference, chain)
    if result.matched or "judge" not in chain or judge_model is None or answer is None or reference is None:
        return result
    return await judge_match(judge_model, question=question, answer=answer, reference=reference, roles_dir=roles_dir)


async def judge_match(model: Any, *, question: str, answer: str, reference: Any, roles_dir: Any = None) -> MatchResult:
    """Ask an LLM whether `answer` states the same result as `reference` (roles/judge.yaml)."""
    from synth.roles import load_role

    role = load_role("judge", roles_dir)
    messages = []
    system = role.render_system()
    if system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": role.render_user(
        question=question, answer=answer, reference=" | ".join(reference_values(reference)))})
    params = role.params
    completion = await model.chat(messages, max_tokens=params.get("max_tokens", 200),
                                  temperature=params.get("temperature", 0.0))
    verdict, reason = _read_judgement(completion.text)
    return MatchResult(verdict, "judge" if verdict else "none", reason)


def _read_judgement(text: str) -> tuple[bool, str]:
    try:
        start, end = text.index("{"), text.rindex("}") + 1
        data = json.loads(text[start:end])
        value = data.get("match")
        if isinstance(value, bool):
            return value, str(data.get("reason", ""))[:300]
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
            return value.strip().lower() in ("true", "yes"), str(data.get("reason", ""))[:300]
    except (ValueError, AttributeError):
        pass
    # No usable JSON: a judge that cannot say clearly does not accept.
    return False, f"unreadable judge reply: {' '.join(text.split())[:200]!r}"


__all__ = [
    "AnswerField", "answer_fields", "MatchResult", "MatcherError", "DEFAULT_CHAIN", "MATCHER_NAMES", "RULE_MATCHERS",
    "NumberToken", "number_tokens",
    "extract_numbers", "as_number", "normalize_answer", "answers_match", "exact_match", "numeric_match",
    "contains_match", "named_values", "wikitq_match", "wikitq_normalize", "list_values", "reference_values", "answer_candidates",
    "parse_chain", "match_rules", "match_answer", "judge_match",
]
