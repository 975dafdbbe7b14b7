"""DS-1000: JSONL problems (prompt, reference_code, code_context with `test_execution`, metadata). The agent gets
the prompt with no files; its answer's code is run for real, as the official harness does:
`code_context + test_execution(solution) [+ test_string(solution)]` in a fresh sandbox process with a timeout —
pass when it exits cleanly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from synth.jsonl import iter_json_objects
from synth.sandbox.base import Limits
from train.eval.benchmarks import Benchmark, EvalDataError, EvalItem, Score, code_blocks

EXEC_TIMEOUT_S = 120.0

_RULES = (
    "\n\nWrite the missing code: what goes between the given code's solution markers (`BEGIN SOLUTION` / "
    "`SOLUTION START`), so that the surrounding code works unchanged. You may try it with <Code> first. Put the "
    "final missing code, and only it, in your <Answer> as one ```python block.")


def load(path: Path, limit: int | None = None) -> list[EvalItem]:
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"--data {path}: expected a DS-1000 .jsonl file")
    items: list[EvalItem] = []
    for index, (where, row) in enumerate(iter_json_objects(path, EvalDataError)):
        for key in ("prompt", "code_context"):
            if not isinstance(row.get(key), str):
                raise EvalDataError(f"{where}: DS-1000 problem has no {key!r} text")
        if "def test_execution" not in row["code_context"]:
            raise EvalDataError(f"{where}: code_context defines no test_execution(solution)")
        meta = row.get("metadata") or {}
        problem_id = meta.get("problem_id", row.get("id", index))
        items.append(EvalItem(
            id=str(problem_id), instruction=row["prompt"].rstrip() + _RULES,
            reference=row.get("reference_code"), category=str(meta.get("library") or "all"),
            meta={"code_context": row["code_context"], "perturbation_type": meta.get("perturbation_type")}))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise EvalDataError(f"--data {path}: no problems found")
    return items


def extract_solution(answer: str | None) -> str:
    """The answer's code: its first fenced block (else the whole text), cut as the official postprocess does."""
    blocks = code_blocks(answer)
    code = blocks[0] if blocks else (answer or "")
    code = code.split("</code>")[0].replace("<code>", "")
    code = re.split(r"\n\s*(?:#\s*)?END SOLUTION", code)[0]
    return code.strip("\n")


def _fit_indentation(solution: str, code_context: str) -> tuple[str, bool]:
    """Indent an unindented solution whose [insert] sits in a function body (a prompt like `def f(df):`).

    Completion models continue the indented prompt; an agent hands back a dedented block, which would otherwise
    fail on indentation alone."""
    match = re.search(r"^(.*)\n([ \t]*)\[insert\]", code_context, re.MULTILINE)
    if not match or not match.group(1).rstrip().endswith(":") or match.group(2):
        return solution, False
    lines = solution.splitlines()
    if lines and lines[0][:1] not in (" ", "\t"):
        return "\n".join(("    " + line) if line.strip() else line for line in lines), True
    return solution, False


def build_test_program(code_context: str, solution: str) -> str:
    """The official DS-1000 test program for `solution`."""
    program = f"{code_context}\ncode = {solution!r}\ntest_execution(code)\n"
    if "test_string(" in code_context:
        program += "test_string(code)\n"
    return program


def score(item: EvalItem, prediction: str | None, sandbox: Any = None, *, timeout_s: float = EXEC_TIMEOUT_S) -> Score:
    if sandbox is None:
        raise ValueError("DS-1000 scoring runs code: pass a sandbox")
    solution = extract_solution(prediction)
    details: dict[str, Any] = {"metric": "execution", "prediction": solution}
    if not solution.strip():
        details["error"] = "no code in the answer"
        return Score(0.0, False, details)
    solution, reindented = _fit_indentation(solution, item.meta["code_context"])
    details["reindented"] = reindented
    limits = Limits(timeout_s=timeout_s, cpu_seconds=int(timeout_s) + 60)
    with sandbox.open([], mode="script", limits=limits) as session:  # a fresh empty workspace, removed after
        result = session.run(build_test_program(item.meta["code_context"], solution), timeout_s)
    if not result.ok:
        details["error"] = (result.error or "")[-2000:]
        details["timed_out"] = result.timed_out
    return Score(1.0 if result.ok else 0.0, result.ok, details)


BENCHMARK = Benchmark(name="ds1000", load=load, score=score, metric="pass@1")
