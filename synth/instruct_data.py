"""Readers for existing instruction datasets (the input of `synth refine`), and tables rendered for prompts.

Formats:
    wikitq      a WikiTableQuestions folder: questions.tsv (id, utterance, context = table path, targetValue with
                `|` between list answers) and the csv/ tables it points to
    tablebench  TableBench-style JSONL: id, question, answer and an inline table {"columns": […], "data": [[…]]}
    jsonl/json  one object per line (or a JSON list); fields named by --question-field/--answer-field/…
    csv/tsv     one row per item, same field mapping
    parquet     same field mapping
    hf          a `datasets` dataset saved with save_to_disk (a Dataset, or a DatasetDict: every split)

A table field may hold {"columns", "data"} / {"header", "rows"}, a list of rows (header first), a list of row
objects, a path (relative to the input file) of a CSV/TSV table, or already rendered text. Source files are only
ever read.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from synth.errors import SynthError
from synth.jsonl import iter_json_objects

FORMATS: tuple[str, ...] = ("auto", "wikitq", "tablebench", "jsonl", "json", "csv", "tsv", "parquet", "hf")
_QUESTION_FIELDS = ("question", "utterance", "instruction", "query", "input", "prompt")
_ANSWER_FIELDS = ("answer", "targetValue", "target_value", "target", "output", "label", "reference")
_TABLE_FIELDS = ("table", "table_text", "table_path", "context")
_ID_FIELDS = ("id", "qid", "question_id", "uid")


class InstructDataError(SynthError, ValueError):
    """The input cannot be read as instruction items; the message says what and where (file, line)."""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    name: str = ""

    def render(self, *, max_rows: int = 40, max_cols: int = 24, max_cell_chars: int = 80,
               max_chars: int = 6000) -> str:
        """A markdown table cut to the limits; a final line says what was left out."""
        columns = [_cell(c, max_cell_chars) for c in self.columns[:max_cols]]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        shown = 0
        for row in self.rows[:max_rows]:
            line = "| " + " | ".join(_cell(v, max_cell_chars) for v in list(row)[:max_cols]) + " |"
            if sum(len(x) + 1 for x in lines) + len(line) > max_chars:
                break
            lines.append(line)
            shown += 1
        notes = []
        if shown < len(self.rows):
            notes.append(f"{len(self.rows) - shown} more rows not shown")
        if len(self.columns) > max_cols:
            notes.append(f"{len(self.columns) - max_cols} more columns not shown")
        if notes:
            lines.append(f"… ({'; '.join(notes)}; the table has {len(self.rows)} rows)")
        return "\n".join(lines)


def _cell(value: Any, limit: int) -> str:
    text = "" if value is None else " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class InstructItem:
    """One question with its reference answer and the table (and/or text context) it is about."""

    id: str
    question: str
    answer: Any  # a string, or a list for list answers
    table: Table | None = None
    table_text: str | None = None  # a table given as text (no structure to render)
    context: str | None = None
    dataset: str = ""  # e.g. "wikitq", "tablebench", the input file name
    category: str = "table_qa"
    meta: dict[str, Any] = field(default_factory=dict)

    def table_prompt(self, **limits: Any) -> str | None:
        if self.table is not None:
            return self.table.render(**limits)
        return self.table_text

    def prompt(self, **limits: Any) -> str:
        """The user message of the reasoning record: the question, then the table and context it is about."""
        parts = [f"# Instruction\n{self.question.strip()}"]
        table = self.table_prompt(**limits)
        if table:
            parts.append(f"# Table\n{table}")
        if self.context:
            parts.append(f"# Context\n{self.context.strip()}")
        return "\n\n".join(parts)

    def content_hash(self) -> str:
        """sha256 of what the item says (question, answer, table): the record's source hash."""
        payload = json.dumps([self.question, self.answer, self.table_prompt(max_rows=10**9, max_chars=10**12),
                              self.context], ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- reading ---------------------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        if (path / "questions.tsv").is_file():
            return "wikitq"
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "hf"
        raise InstructDataError(f"{path}: a folder without questions.tsv (WikiTQ) or a saved `datasets` dataset")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        first = _first_json_line(path)
        table = first.get("table") if isinstance(first, dict) else None
        return "tablebench" if isinstance(table, dict) and "columns" in table and "data" in table else "jsonl"
    if suffix in (".json", ".csv", ".tsv", ".parquet"):
        return suffix[1:]
    raise InstructDataError(f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS[1:])})")


def read_items(
    path: Path | str,
    format: str = "auto",
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    table_field: str | None = None,
    context_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
) -> list[InstructItem]:
    """Read instruction items from `path`. Raises InstructDataError (file and line/row) on bad input."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InstructDataError(f"--input {path}: no such file or directory")
    fmt = detect_format(path) if format in (None, "auto") else format
    if fmt not in FORMATS:
        raise InstructDataError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "wikitq":
        items = _read_wikitq(path, limit)
    elif fmt == "tablebench":
        items = _read_tablebench(path, limit)
    else:
        mapping = _FieldMap(question_field, answer_field, table_field, context_field, id_field)
        rows = _rows(path, fmt)
        items = []
        for where, row in rows:
            items.append(mapping.item(row, where, base=path if path.is_dir() else path.parent, dataset=path.stem))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise InstructDataError(f"--input {path}: no items found")
    _check_unique_ids(items, path)
    return items


def _check_unique_ids(items: list[InstructItem], path: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InstructDataError(f"{path}: item id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)


def _read_wikitq(folder: Path, limit: int | None) -> list[InstructItem]:
    questions = folder / "questions.tsv" if folder.is_dir() else folder
    base = questions.parent
    items: list[InstructItem] = []
    tables: dict[str, Table] = {}
    with open(questions, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"id", "utterance", "context", "targetValue"} - set(reader.fieldnames or [])
        if missing:
            raise InstructDataError(f"{questions}: not a WikiTQ questions file; missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            ref = row["context"]
            if ref not in tables:
                table_path = base / ref
                if not table_path.is_file():
                    raise InstructDataError(f"{questions}:{line}: table {ref} not found under {base}")
                tables[ref] = _read_table_file(table_path, name=ref)
            target = _unescape_wikitq(row["targetValue"])
            values = [v for v in target.split("|")]
            items.append(InstructItem(
                id=row["id"], question=_unescape_wikitq(row["utterance"]),
                answer=values if len(values) > 1 else values[0], table=tables[ref], dataset="wikitq",
                meta={"table_path": ref}))
            if limit is not None and len(items) >= limit:
                break
    return items


def _unescape_wikitq(text: str) -> str:
    # The WikiTQ TSV escapes newline, pipe-in-value and backslash as \n, \p and \\.
    return text.replace("\\n", "\n").replace("\\p", "|").replace("\\\\", "\\")


def _read_tablebench(path: Path, limit: int | None) -> list[InstructItem]:
    items: list[InstructItem] = []
    for where, row in _json_lines(path):
        for key in ("id", "question", "answer", "table"):
            if key not in row:
                raise InstructDataError(f"{where}: TableBench item has no {key!r} field")
        table = _table_from_value(row["table"], where, base=path.parent)
        if not isinstance(table, Table):
            raise InstructDataError(f"{where}: TableBench `table` must be {{\"columns\": […], \"data\": [[…]]}}")
        qtype = str(row.get("qtype") or "table_qa")
        items.append(InstructItem(
            id=str(row["id"]), question=str(row["question"]), answer=row["answer"], table=table,
            dataset=path.stem, category=qtype,
            meta={k: row[k] for k in ("qtype", "qsubtype", "chart_type") if k in row}))
        if limit is not None and len(items) >= limit:
            break
    return items


@dataclass
class _FieldMap:
    question: str | None
    answer: str | None
    table: str | None
    context: str | None
    id: str | None

    def item(self, row: dict[str, Any], where: str, *, base: Path, dataset: str) -> InstructItem:
        question = _pick(row, self.question, _QUESTION_FIELDS, "question", where)
        answer = _pick(row, self.answer, _ANSWER_FIELDS, "answer", where)
        table_value = _pick(row, self.table, _TABLE_FIELDS if self.context is None else _TABLE_FIELDS[:3], "table",
                            where, required=self.table is not None)
        context = _pick(row, self.context, (), "context", where, required=self.context is not None)
        table = _table_from_value(table_value, where, base=base) if table_value not in (None, "") else None
        raw_id = _pick(row, self.id, _ID_FIELDS, "id", where, required=self.id is not None)
        if raw_id in (None, ""):
            payload = json.dumps([question, str(table_value)[:10000]], default=str)
            raw_id = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
        if isinstance(answer, str) and answer.strip().startswith("["):
            try:
                parsed = json.loads(answer)
                answer = parsed if isinstance(parsed, list) else answer
            except json.JSONDecodeError:
                pass
        return InstructItem(
            id=str(raw_id), question=str(question), answer=_plain(answer),
            table=table if isinstance(table, Table) else None, table_text=table if isinstance(table, str) else None,
            context=None if context in (None, "") else str(context), dataset=dataset)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value if isinstance(value, str) else str(value)


def _pick(row: dict[str, Any], name: str | None, defaults: Iterable[str], what: str, where: str, *,
          required: bool = True) -> Any:
    if name is not None:
        if name not in row:
            raise InstructDataError(f"{where}: no field {name!r} (--{what}-field); fields: {', '.join(map(str, row))}")
        return row[name]
    for candidate in defaults:
        if candidate in row:
            return row[candidate]
    if required:
        raise InstructDataError(f"{where}: no {what} field (tried {', '.join(defaults)}); name it with "
                                f"--{what}-field; fields: {', '.join(map(str, row))}")
    return None


def _table_from_value(value: Any, where: str, *, base: Path) -> Table | str:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        columns = value.get("columns", value.get("header"))
        rows = value.get("data", value.get("rows"))
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise InstructDataError(f"{where}: table object needs `columns`+`data` (or `header`+`rows`) lists")
        rows = [r.tolist() if hasattr(r, "tolist") else r for r in rows]
        if any(not isinstance(r, (list, tuple)) for r in rows):
            raise InstructDataError(f"{where}: every table row must be a list of cells")
        return Table([str(c) for c in columns], [["" if v is None else str(v) for v in r] for r in rows])
    if isinstance(value, list):
        if not value:
            raise InstructDataError(f"{where}: the table is an empty list")
        if all(isinstance(r, dict) for r in value):
            columns = list(dict.fromkeys(k for r in value for k in r))
            return Table(columns, [[str(r.get(c, "")) for c in columns] for r in value])
        if all(isinstance(r, (list, tuple)) for r in value):
            return Table([str(c) for c in value[0]], [[str(v) for v in r] for r in value[1:]])
        raise InstructDataError(f"{where}: a table list must hold rows (lists, header first) or row objects")
    if isinstance(value, str):
        text = value.strip()
        if "\n" not in text and text.lower().endswith((".csv", ".tsv")):
            path = (base / text) if not Path(text).is_absolute() else Path(text)
            if not path.is_file():
                raise InstructDataError(f"{where}: table file {text} not found under {base}")
            return _read_table_file(path, name=text)
        return text
    raise InstructDataError(f"{where}: cannot read a table from a {type(value).__name__}")


def _read_table_file(path: Path, *, name: str = "") -> Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise InstructDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InstructDataError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise InstructDataError(f"{path}: empty table file")
    return Table([c.replace("\\n", " ") for c in rows[0]], [[v.replace("\\n", " ") for v in r] for r in rows[1:]],
                 name=name or path.name)


def _first_json_line(path: Path) -> Any:
    for _, row in _json_lines(path):
        return row
    return None


def _json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    return iter_json_objects(path, InstructDataError)


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if fmt in ("jsonl", "tablebench"):
        yield from _json_lines(path)
    elif fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InstructDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("items"))
        if not isinstance(data, list):
            raise InstructDataError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise InstructDataError(f"{path}[{index}]: expected an object, got {type(row).__name__}")
            yield f"{path}[{index}]", row
    elif fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            for line, row in enumerate(reader, start=2):
                yield f"{path}:{line}", row
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InstructDataError(f"{path}: not a readable Parquet file ({exc})") from None
        for index, row in enumerate(table.to_pylist()):
            yield f"{path} row {index}", row
    elif fmt == "hf":
        yield from _hf_rows(path)
    else:  # pragma: no cover - FORMATS is checked before
        raise InstructDataError(f"--format {fmt!r} is not a row format")


def _hf_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:
        raise InstructDataError(
            f"{path}: reading a saved `datasets` dataset needs `pip install 'ds-synth[hub]'`") from None

    try:
        loaded = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError / ValueError variants
        raise InstructDataError(f"{path}: not a dataset saved with save_to_disk ({exc})") from None
    splits = loaded.items() if isinstance(loaded, DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        assert isinstance(dataset, Dataset)
        for index, row in enumerate(dataset):
            yield f"{path}{'[' + split + ']' if split else ''} row {index}", row


__all__ = ["FORMATS", "InstructDataError", "InstructItem", "Table", "detect_format", "read_items"]
