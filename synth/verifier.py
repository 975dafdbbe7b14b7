"""The verifier role: an independent computation of a closed-form task's answer (DESIGN §7).

The verifier sees the task and the DataCards of its files — never the solver's trajectory — and writes ONE
program (roles/verifier.yaml). The program runs in a fresh sandbox over fresh copies of the sources; the value of
its last `ANSWER:` line is the verified reference. A failing program gets one repair with its error. A reply of
OPEN marks the task as having no single closed-form answer (it keeps its judged items, unverified).

`Reference` is what a record says about its reference answer: the value and how it was verified — `given` (the
user's task file), `program` (a verifier program agreed with the solver), `consensus` (the first program did not
agree, a second independent one did) or `none` (unverified).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict

from synth.dataset.record import Reference, VerifiedBy
from synth.llm.base import ChatModel, Message
from synth.protocol import extract_code
from synth.sandbox.base import Limits, Sandbox

_ANSWER_LINE = re.compile(r"^\s*ANSWER:\s*(.*?)\s*$", re.MULTILINE)
_READS = re.compile(r"read_csv|read_excel|read_parquet|read_json|read_table|read_sql|sqlite3|duckdb|open\(")


class Computation(BaseModel):
    """One verifier attempt: the program, what it printed, the answer it printed (None: no answer)."""

    model_config = ConfigDict(extra="forbid")

    closed_form: bool = True
    program: str | None = None
    output: str = ""
    error: str | None = None
    answer: str | None = None
    reads_data: bool = True  # False: the program answered without opening any of the task's files
    model_calls: int = 0


def reads_files(code: str, files: Sequence[str]) -> bool:
    """Whether code opens one of the task's files: it names one (or its stem) and calls a reader."""
    names = {n for f in files for n in (Path(f).name, Path(f).stem) if n}
    return any(name in code for name in names) and bool(_READS.search(code))


_NAMED_VALUE = re.compile(r"@(\w+)\[\s*(.*?)\s*\]")


def printed_answer(output: str) -> str | None:
    """The value of the last `ANSWER:` line; else the `@name[value]` pairs the program printed (a task that asks
    for that format, InfiAgent-style, gets them from programs that forget the ANSWER line), a later one of a name
    winning."""
    found = _ANSWER_LINE.findall(output or "")
    if found and found[-1].strip():
        return found[-1].strip()
    named = dict(_NAMED_VALUE.findall(output or ""))
    return ", ".join(f"@{name}[{value}]" for name, value in named.items()) if named else None


async def compute_reference(
    model: ChatModel,
    instruction: str,
    data: str,
    sources: Sequence[Path],
    sandbox: Sandbox,
    *,
    limits: Limits | None = None,
    second: bool = False,
    roles_dir: Path | None = None,
) -> Computation:
    """Ask the verifier for a program, run it over fresh copies of `sources`, repair once. `second=True` asks for
    an independent second program (a tie-break), sampled differently."""
    from synth.roles import load_role

    role = load_role("verifier", roles_dir)
    params = role.params
    user = role.render_user(instruction=instruction, data=data, files=[Path(s).name for s in sources])
    if second:
        user = f"{user.rstrip()}\n\n{role.render_template('second')}"
    messages: list[Message] = [{"role": "system", "content": role.render_system()}]
    messages += role.few_shot_messages()  # type: ignore[arg-type]
    messages.append({"role": "user", "content": user})
    temperature = float(params.get("second_temperature", 0.6)) if second else float(params.get("temperature", 0.0))
    result = Computation()
    for attempt in range(2):
        completion = await model.chat(messages, max_tokens=int(params.get("max_tokens", 700)),
                                      temperature=temperature)
        result.model_calls += 1
        reply = completion.text or ""
        if attempt == 0 and reply.strip().upper().startswith("OPEN") and "```" not in reply:
            return result.model_copy(update={"closed_form": False})
        code = extract_code(reply)
        ran = await asyncio.to_thread(_run_program, code, sources, sandbox, limits)
        result = result.model_copy(update={"program": code, "output": ran.output(), "error": ran.error,
                                           "answer": printed_answer(ran.stdout) if ran.ok else None,
                                           "reads_data": reads_files(code, [str(s) for s in sources])})
        if result.answer is not None:
            return result
        repair = role.render_template("repair", error=(ran.error or "")[-1500:], output=ran.output()[-1500:])
        messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": repair}]
    return result


def settle(verdict: dict[str, Any], reference: dict[str, Any], second: Computation,
           answer: str | None) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """The tie-break after the solver and the first program still disagree: (a new verdict accepting the answer —
    or None when the solver stays wrong —, the reference, what the tie-break found)."""
    from synth.checklist import Verdict
    from synth.matchers import answers_match

    agrees = second.answer is not None and second.reads_data and answers_match(answer, second.answer,
                                                                               rel_tolerance=0.01)
    with_first = second.answer is not None and answers_match(second.answer, reference.get("value"),
                                                             rel_tolerance=0.01, contains=False)
    record = {"program": second.program, "output": second.output, "answer": second.answer,
              "sided_with": "solver" if agrees else "reference" if with_first else "neither"}
    if not agrees:
        return None, reference, record
    old = Verdict.model_validate(verdict)
    items = [v if v.id != "verified_answer" else v.model_copy(update={
        "passed": True, "reason": "a second independent program agrees with the answer (the first program did not)"})
        for v in old.items]
    blocking = [v for v in items if v.required and not v.passed and not getattr(v, "not_judged", False)]
    decided = Verdict(items=items, decision="accept" if not blocking else old.decision,
                      score=sum(v.passed for v in items) / max(1, len(items)), feedback=old.feedback, usage={})
    consensus = {"value": second.answer, "verified_by": "consensus", "program": second.program,
                 "output": second.output}
    return decided.model_dump(mode="json"), consensus, record


def redact(text: str, value: Any) -> str:
    """`text` with the reference value taken out, so feedback can never hand the solver the answer."""
    if value is None:
        return text
    needles = {str(value).strip()} | {v.strip() for v in re.findall(r"@\w+\[(.*?)\]", str(value))}
    for needle in sorted((n for n in needles if len(n) >= 2), key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(needle)}(?![\w])", "[withheld]", text)
    return text


def solve_rate(answer: str | None, others: Sequence[str | None], reference: dict[str, Any] | None
               ) -> dict[str, Any] | None:
    """How many of the k independent solves (the kept one and the others) agree with the verified reference."""
    from synth.matchers import answers_match

    ref = Reference.coerce(reference)
    if ref is None or not ref.verified:
        return {"k": 1 + len(others), "agreeing": None, "rate": None}
    answers = [answer, *others]
    agreeing = sum(1 for a in answers if a and answers_match(a, ref.value, rel_tolerance=0.01))
    return {"k": len(answers), "agreeing": agreeing, "rate": round(agreeing / len(answers), 3)}


def verification_stats(records: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """How references were verified, how disagreements with them ended, and — where the user gave references —
    how many accepted answers are right by a strict comparison (no 1 % tolerance)."""
    from synth.matchers import answers_match

    by: Counter = Counter()
    for row in records:
        by[(row.get("reference") or {}).get("verified_by", "none") if row.get("reference") else "no reference"] += 1
    outcomes: Counter = Counter()
    for row, accepted in [(r, True) for r in records] + [(r, False) for r in rejected]:
        verdicts = [row["verdict"]] if accepted and row.get("verdict") else (row.get("verdicts") or [])
        history = [next((i["passed"] for i in v.get("items", []) if i["id"] == "verified_answer"), None)
                   for v in verdicts]
        tiebreak = (row.get("tiebreak") or {}).get("sided_with")
        if accepted and (row.get("reference") or {}).get("verified_by") == "consensus":
            outcomes["resolved_for_the_solver_by_tiebreak"] += 1
        elif not accepted and False in history:
            outcomes["rejected_after_disagreeing" + (f"_tiebreak_{tiebreak}" if tiebreak else "")] += 1
        elif accepted and row.get("revisions") and (row.get("reference") or {}).get("verified_by") == "program":
            outcomes["agreed_after_revision"] += 1
        if not accepted and str(row.get("reason") or "").startswith("answerable without the data"):
            outcomes["answerable_without_the_data"] += 1
    given = [r for r in records if (r.get("reference") or {}).get("verified_by") == "given"]
    right = sum(1 for r in given if answers_match(_answer_of(r), r["reference"]["value"]))
    return {
        "accepted_by_reference": dict(by),
        "disagreements": dict(outcomes),
        "accepted_with_given_reference": len(given),
        "accuracy_of_accepted_given": round(right / len(given), 4) if given else None,
    }


def _answer_of(record: dict[str, Any]) -> str | None:
    from synth.protocol import parse

    return parse(record["messages"][-1]["content"]).answer


def _run_program(code: str, sources: Sequence[Path], sandbox: Sandbox, limits: Limits | None) -> Any:
    with sandbox.open(list(sources), mode="script", limits=limits) as session:
        return session.run(code)


__all__ = ["Reference", "Computation", "VerifiedBy", "compute_reference", "reads_files", "printed_answer", "settle",
           "redact", "solve_rate", "verification_stats"]
