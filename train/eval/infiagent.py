"""InfiAgent-DABench (closed-form): questions.jsonl + labels.jsonl + tables/, scored as the official
`eval_closed_form.py`: every `@name[value]` in the response is extracted (a later one of the same name wins); a
sub-answer is right when the strings are equal or both are numbers differing by < 1e-6; a question is right when
every labelled sub-answer is. Also accepts the upstream file names (da-dev-questions.jsonl, da-dev-labels.jsonl,
da-dev-tables/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from synth.jsonl import iter_json_objects
from synth.tasks import infiagent_instruction
from train.eval.benchmarks import Benchmark, EvalDataError, EvalItem, Score

_ANSWER_RE = re.compile(r"@(\w+)\[(.*?)\]")


def load(path: Path, limit: int | None = None) -> list[EvalItem]:
    questions, labels_path, tables = _locate(Path(path))
    labels = {str(row.get("id")): row for _, row in _json_lines(labels_path)}
    items: list[EvalItem] = []
    for where, row in _json_lines(questions):
        for key in ("id", "question", "format", "file_name"):
            if key not in row:
                raise EvalDataError(f"{where}: InfiAgent question has no {key!r} field")
        qid = str(row["id"])
        label = labels.get(qid)
        if label is None or not isinstance(label.get("common_answers"), list):
            raise EvalDataError(f"{where}: question id {qid} has no `common_answers` label in {labels_path}")
        table = tables / str(row["file_name"])
        if not table.is_file():
            raise EvalDataError(f"{where}: table {row['file_name']} not found in {tables}")
        reference = [[str(name), str(value)] for name, value in label["common_answers"]]
        items.append(EvalItem(
            id=qid, instruction=infiagent_instruction(row), reference=reference, category=str(row.get("level") or "all"),
            files={table.name: table},
            meta={"concepts": row.get("concepts", []), "file_name": table.name}))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise EvalDataError(f"{questions}: no questions found")
    return items


def extract_answers(response: str | None) -> dict[str, str]:
    """Every `@name[value]` in the response; a later occurrence of a name replaces an earlier one (official)."""
    return dict(_ANSWER_RE.findall(response or ""))


def is_equal(response: str, label: str) -> bool:
    if response == label:
        return True
    try:
        return abs(float(response) - float(label)) < 1e-6
    except ValueError:
        return False


def score(item: EvalItem, prediction: str | None, sandbox: Any = None) -> Score:
    extracted = extract_answers(prediction)
    labels = {name: value for name, value in item.reference}
    correctness = {name: is_equal(extracted[name].strip(), value) for name, value in labels.items() if name in extracted}
    right = sum(correctness.values())
    solved = len(correctness) == len(labels) and all(correctness.values())
    return Score(score=1.0 if solved else 0.0, correct=solved, details={
        "metric": "closed_form", "prediction": extracted, "correctness": correctness,
        "sub_correct": right, "sub_total": len(labels)})


def extra_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy by question and by sub-answer (the two figures the official script reports)."""
    subs = [(r["details"].get("sub_correct", 0), r["details"].get("sub_total", 0)) for r in records if r.get("details")]
    total = sum(t for _, t in subs)
    return {
        "accuracy_by_question": sum(1 for r in records if r.get("correct")) / len(records) if records else 0.0,
        "accuracy_by_sub_question": sum(c for c, _ in subs) / total if total else 0.0,
        "sub_questions": total,
    }


def _locate(path: Path) -> tuple[Path, Path, Path]:
    if not path.exists():
        raise EvalDataError(f"--data {path}: no such file or directory")
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        questions = path
    else:
        candidates = sorted(folder.glob("*questions*.jsonl"))
        if not candidates:
            raise EvalDataError(f"--data {path}: no questions .jsonl (questions.jsonl or da-dev-questions.jsonl) here")
        questions = candidates[0]
    labels = folder / questions.name.replace("questions", "labels")
    if not labels.is_file():
        raise EvalDataError(f"--data {path}: labels file {labels.name} not found beside {questions.name}")
    tables = next((d for d in (folder / "tables", folder / questions.name.replace("questions.jsonl", "tables"))
                   if d.is_dir()), None)
    if tables is None:
        raise EvalDataError(f"--data {path}: no tables/ folder beside {questions.name}")
    return questions, labels, tables


def _json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    return iter_json_objects(path, EvalDataError)


BENCHMARK = Benchmark(name="infiagent", load=load, score=score, metric="accuracy", extra_metrics=extra_metrics)
