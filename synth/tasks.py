"""Tasks from the user (`synth generate --tasks FILE`): their own questions instead of the questioner's.

A row gives `instruction`, `files` (names relative to `--sources`), and optionally `reference`, `category`,
`difficulty` and `id` — the field names of the jsonl / csv / parquet formats. The benchmark formats map their own
fields onto these: `infiagent` (questions.jsonl with question, constraints, format, file_name, level; references
from labels.jsonl beside it when present), `wikitq` (questions.tsv: utterance, context = table path, targetValue)
and `tablebench` (inline tables, written as CSV files for the run). A bad row (no instruction, a file that is not
there) is reported with its line and skipped; the rest run.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import SynthError

TaskFormat = Literal["auto", "jsonl", "csv", "parquet", "infiagent", "wikitq", "tablebench"]
TASK_FORMATS: tuple[str, ...] = ("auto", "jsonl", "csv", "parquet", "infiagent", "wikitq", "tablebench")


class TasksError(SynthError, ValueError):
    """The tasks file cannot be read at all (missing, wrong format); bad single rows are `TaskRowError`s."""


class UserTask(BaseModel):
    """One task a user brought: what to do, on which files, and (optionally) the right answer."""

    model_config = ConfigDict(extra="forbid")

    id: str
    instruction: str = Field(..., min_length=1)
    files: list[str] = Field(..., min_length=1)
    reference: Any = None
    category: str = "data_analysis"
    difficulty: str = "medium"


@dataclass
class TaskRowError:
    where: str  # file:line
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class TaskSet:
    tasks: list[UserTask] = field(default_factory=list)
    errors: list[TaskRowError] = field(default_factory=list)
    # Files the format carries inline (tablebench): name -> CSV text, written into the run for its sources.
    inline_files: dict[str, str] = field(default_factory=dict)


def read_tasks(path: Path, fmt: str = "auto", *, sources: Path | None = None,
               categories: tuple[str, ...] = ()) -> TaskSet:
    """Read and check every row. `sources` is where the files rows name must exist (None: not checked);
    `categories` the known ones (a row naming another is an error)."""
    path = Path(path)
    if not path.exists():
        raise TasksError(f"--tasks {path}: no such file or directory")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in TASK_FORMATS:
        raise TasksError(f"--format {fmt!r}: expected one of {', '.join(TASK_FORMATS)}")
    reader = {"jsonl": _plain_rows, "csv": _plain_rows, "parquet": _plain_rows, "infiagent": _infiagent_rows,
              "wikitq": _wikitq_rows, "tablebench": _tablebench_rows}[fmt]
    out = TaskSet()
    seen: set[str] = set()
    for where, row in reader(path, fmt, out):
        if isinstance(row, TaskRowError):
            out.errors.append(row)
            continue
        problem = _check(row, sources, categories, set(out.inline_files))
        if problem is None and row["id"] in seen:
            problem = f"duplicate task id {row['id']!r}"
        if problem is not None:
            out.errors.append(TaskRowError(where, problem))
            continue
        seen.add(row["id"])
        out.tasks.append(UserTask.model_validate(row))
    if not out.tasks and not out.errors:
        raise TasksError(f"--tasks {path}: no tasks found")
    return out


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "questions.tsv").is_file():
            return "wikitq"
        if (path / "questions.jsonl").is_file():
            return "infiagent"
        raise TasksError(f"--tasks {path}: a folder must hold questions.jsonl (infiagent) or questions.tsv (wikitq)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), "{}")
        try:
            keys = set(json.loads(first)) if first.lstrip().startswith("{") else set()
        except json.JSONDecodeError:
            keys = set()
        if {"qtype", "table", "question"} <= keys:
            return "tablebench"
        if {"question", "file_name", "format"} <= keys:
            return "infiagent"
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise TasksError(f"--tasks {path}: cannot tell the format from {suffix or 'no extension'}; give --format")


def task_id(row: dict[str, Any]) -> str:
    """The row's id, else a hash of its instruction and files."""
    if row.get("id") not in (None, ""):
        return str(row["id"])
    key = json.dumps([row.get("instruction"), row.get("files")], sort_keys=True, default=str)
    return "task-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _check(row: dict[str, Any], sources: Path | None, categories: tuple[str, ...], inline: set[str]) -> str | None:
    if not str(row.get("instruction") or "").strip():
        return "empty instruction"
    if not row.get("files"):
        return "no files (give the names of its data files relative to --sources)"
    for name in row["files"]:
        if name in inline:
            continue
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"file {name!r} must be a name relative to --sources"
        if sources is not None and not (sources / name).is_file():
            return f"file {name!r} not found in {sources}"
    category = row.get("category", UserTask.model_fields["category"].default)
    if categories and category not in categories:
        return f"unknown category {category!r}; known: {', '.join(categories)}"
    return None


def _files(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return [part.strip() for part in text.replace("|", ",").split(",") if part.strip()]
    return [str(v) for v in value]


def _normalised(row: dict[str, Any]) -> dict[str, Any]:
    out = {"instruction": str(row.get("instruction") or "").strip(), "files": _files(row.get("files"))}
    for key in ("reference", "category", "difficulty"):
        value = row.get(key)
        if value not in (None, "") and not (isinstance(value, float) and value != value):  # NaN from a table
            out[key] = value
    out["id"] = task_id({**row, **out})
    return out


def _plain_rows(path: Path, fmt: str, out: TaskSet) -> Iterator[tuple[str, Any]]:
    if fmt == "jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{number}", TaskRowError(f"{path}:{number}", f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                yield f"{path}:{number}", TaskRowError(f"{path}:{number}", "a task row is a JSON object")
                continue
            yield f"{path}:{number}", _normalised(row)
    elif fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            for number, row in enumerate(csv.DictReader(fh, dialect=dialect), start=2):
                yield f"{path}:{number}", _normalised(row)
    else:
        import pandas as pd

        for number, row in enumerate(pd.read_parquet(path).to_dict(orient="records"), start=1):
            yield f"{path}:row {number}", _normalised(row)


def infiagent_instruction(row: dict[str, Any]) -> str:
    """An InfiAgent-DABench question as an instruction: question, constraints, answer format."""
    parts = [f"Question: {str(row['question']).strip()}"]
    if row.get("constraints"):
        parts.append(f"Constraints: {str(row['constraints']).strip()}")
    parts.append(f"Format: {str(row['format']).strip()}")
    parts.append(f"The data is in the file {row['file_name']}. Give every requested value in your final <Answer> "
                 "exactly in the @name[value] format above, e.g. @mean[1.23].")
    return "\n".join(parts)


def _infiagent_rows(path: Path, fmt: str, out: TaskSet) -> Iterator[tuple[str, Any]]:
    questions = path / "questions.jsonl" if path.is_dir() else path
    labels_path = questions.with_name("labels.jsonl")
    labels: dict[str, Any] = {}
    if labels_path.is_file():
        for line in labels_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                label = json.loads(line)
                labels[str(label.get("id"))] = label.get("common_answers")
    for number, line in enumerate(questions.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{questions}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, TaskRowError(where, f"not valid JSON ({exc.msg})")
            continue
        missing = [k for k in ("question", "format", "file_name") if not row.get(k)]
        if missing:
            yield where, TaskRowError(where, f"InfiAgent question without {', '.join(missing)}")
            continue
        answers = labels.get(str(row.get("id")))
        reference = ", ".join(f"@{name}[{value}]" for name, value in answers) if answers else None
        level = str(row.get("level") or "medium")
        yield where, {"id": str(row.get("id", number)), "instruction": infiagent_instruction(row),
                      "files": [str(row["file_name"])], "reference": reference, "category": "data_analysis",
                      "difficulty": level if level in ("easy", "medium", "hard") else "medium"}


def _wikitq_rows(path: Path, fmt: str, out: TaskSet) -> Iterator[tuple[str, Any]]:
    questions = path / "questions.tsv" if path.is_dir() else path
    with open(questions, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
            where = f"{questions}:{number}"
            if not row.get("utterance") or not row.get("context"):
                yield where, TaskRowError(where, "WikiTQ row without utterance or context")
                continue
            name = row["context"]
            yield where, {"id": row.get("id") or str(number),
                          "instruction": f"{row['utterance'].strip()} The table is in {Path(name).name}.",
                          "files": [name], "reference": row.get("targetValue") or None,
                          "category": "data_analysis", "difficulty": "easy"}


def _tablebench_rows(path: Path, fmt: str, out: TaskSet) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            table = row["table"]
            columns, data = table["columns"], table["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            yield where, TaskRowError(where, f"not a TableBench item ({type(exc).__name__}: {exc})")
            continue
        if str(row.get("qtype")) == "Visualization":
            yield where, TaskRowError(where, "chart questions are not closed-form tasks; skipped")
            continue
        name = f"table_{row.get('id', number)}.csv"
        out.inline_files[name] = _csv_text(columns, data)
        yield where, {"id": str(row.get("id", number)),
                      "instruction": f"{str(row['question']).strip()} The table is in {name}.",
                      "files": [name], "reference": row.get("answer"), "category": "data_analysis",
                      "difficulty": "medium"}


def _csv_text(columns: list[Any], rows: list[list[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


__all__ = ["UserTask", "TaskSet", "TaskRowError", "TasksError", "TASK_FORMATS", "read_tasks", "detect_format",
           "task_id", "infiagent_instruction"]
