"""Known defects planted into a good trajectory, for calibrating the inspector (synth/dataset/calibrate.py).

Each plant takes an accepted record (as an AuditRow) and returns a copy with exactly one defect, or None when the
defect does not apply (no number in the answer, no deliverable in the checklist …):

    wrong_number          a number in the answer changed to one no output shows
    foreign_answer        the answer of another task
    cells_removed         the cell whose output the answer rests on removed, with its <Execute>
    execute_altered       a number in an <Execute> block changed (the code prints another)
    source_modified       a value in a source file changed after the trajectory ran on it
    last_cell_fails       the last cell fails (its <Execute> shows the real error); the answer stays
    answer_truncated      the answer cut mid-word
    answer_without_result the answer says what was done and states no result
    deliverable_deleted   a file the checklist requires is deleted by the last cell

`needs_outputs` lists the plants whose code changed: their <Execute> blocks must be re-made from a real run.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

from synth.dataset.trajectories import AuditRow
from synth.matchers import number_tokens
from synth.protocol import Action, extract_code, parse

DEFECTS: dict[str, str] = {
    "wrong_number": "a number in the answer changed",
    "foreign_answer": "the answer of another task",
    "cells_removed": "the cell the answer rests on removed",
    "execute_altered": "an <Execute> block altered",
    "source_modified": "a source file modified",
    "last_cell_fails": "the last cell fails",
    "answer_truncated": "the answer cut mid-word",
    "answer_without_result": "the answer states no result",
    "deliverable_deleted": "a required deliverable deleted",
}
needs_outputs = ("last_cell_fails", "deliverable_deleted")
NO_RESULT_ANSWER = "I analysed the data with the code above and worked out what the task asks for."


# --- editing an assistant message ------------------------------------------------------------------------------


def _actions(text: str, kind: str) -> list[Action]:
    return [a for a in parse(text).actions if a.kind == kind]


def _swap(text: str, action: Action, content: str) -> str:
    close = f"</{action.kind}>" if action.closed else ""
    return f"{text[:action.start]}<{action.kind}>{content}{close}{text[action.end:]}"


def answer_of(text: str) -> str | None:
    answers = [a for a in _actions(text, "Answer") if a.closed]
    return answers[0].content.strip() if answers else None


def with_answer(text: str, answer: str) -> str:
    target = next(a for a in _actions(text, "Answer") if a.closed)
    body = target.content
    lead = body[: len(body) - len(body.lstrip())]
    trail = body[len(body.rstrip()):]
    return _swap(text, target, f"{lead}{answer}{trail}")


def with_execute(text: str, index: int, output: str) -> str:
    """The `index`-th (from 0) <Execute> block replaced by `output` (framed as the harness frames it)."""
    return _swap(text, _actions(text, "Execute")[index], f"\n{output}\n")


def with_outputs(text: str, outputs: list[str]) -> str:
    """Every <Execute> block replaced, in order (last first, so positions stay valid)."""
    for index in reversed(range(min(len(outputs), len(_actions(text, "Execute"))))):
        text = with_execute(text, index, outputs[index])
    return text


def with_code(text: str, index: int, code: str) -> str:
    target = _actions(text, "Code")[index]
    old = extract_code(target.content)
    content = target.content.replace(old, code, 1) if old and old in target.content else f"\n```python\n{code}\n```\n"
    return _swap(text, target, content)


def without_cell(text: str, index: int) -> str:
    """The `index`-th <Code> and the <Execute> right after it removed."""
    code = _actions(text, "Code")[index]
    end = code.end
    rest = parse(text[end:]).actions
    if rest and rest[0].kind == "Execute" and not text[end:end + rest[0].start].strip():
        end += rest[0].end
    return text[:code.start] + text[end:].lstrip("\n")


# --- plants ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PlantContext:
    others: list[AuditRow]  # the other accepted records (for foreign_answer)
    files: dict[str, Path]  # the row's files on this machine (for source_modified)
    scratch: Path  # where a plant may write modified files


def _outputs(text: str) -> str:
    return "\n".join(a.content for a in _actions(text, "Execute"))


def _number_spans(text: str) -> list[tuple[int, int, str]]:
    tokens = [t.text for t in number_tokens(text)]
    spans, position = [], 0
    for token in tokens:
        found = text.find(token, position)
        if found == -1:
            continue
        spans.append((found, found + len(token), token))
        position = found + len(token)
    return spans


def _other_number(token: str, avoid: str) -> str:
    body = token.rstrip("%").replace(",", "")
    decimals = len(body.split(".", 1)[1]) if "." in body else 0
    value = float(body)
    for bump in (7.0, 13.0, 31.0, 97.0):
        candidate = f"{value * 1.5 + bump:.{decimals}f}" + ("%" if token.endswith("%") else "")
        if candidate not in avoid:
            return candidate
    return f"{value * 3 + 1001:.{decimals}f}"


def wrong_number(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    answer = answer_of(row.assistant or "")
    spans = _number_spans(answer or "")
    if not spans:
        return None
    start, end, token = spans[-1]
    changed = answer[:start] + _other_number(token, _outputs(row.assistant)) + answer[end:]
    return dataclasses.replace(row, assistant=with_answer(row.assistant, changed))


def foreign_answer(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    mine = answer_of(row.assistant or "")
    for other in ctx.others:
        theirs = answer_of(other.assistant or "")
        if theirs and theirs != mine and other.id != row.id:
            return dataclasses.replace(row, assistant=with_answer(row.assistant, theirs))
    return None


def cells_removed(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    blocks = _actions(row.assistant or "", "Execute")
    printing = [n for n, block in enumerate(blocks) if block.content.strip()]
    if not printing or len(_actions(row.assistant, "Code")) < printing[-1] + 1:
        return None
    return dataclasses.replace(row, assistant=without_cell(row.assistant, printing[-1]))


def execute_altered(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    blocks = _actions(row.assistant or "", "Execute")
    for index in reversed(range(len(blocks))):
        body = blocks[index].content.strip("\n")
        spans = _number_spans(body)
        if spans:
            start, end, token = spans[-1]
            altered = body[:start] + _other_number(token, body) + body[end:]
            return dataclasses.replace(row, assistant=with_execute(row.assistant, index, altered))
    if blocks:
        body = blocks[-1].content.strip("\n")
        return dataclasses.replace(row, assistant=with_execute(row.assistant, len(blocks) - 1, body + "\nDone: True"))
    return None


def _modify_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        for n in range(1, len(lines)):
            match = re.search(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", lines[n])
            if match:
                number = match.group(0)
                bumped = str(round(float(number) + 1, 6)) if "." in number else str(int(number) + 1)
                lines[n] = lines[n][:match.start()] + bumped + lines[n][match.end():]
                path.write_text("".join(lines), encoding="utf-8")
                return True
    if suffix in (".sqlite", ".sqlite3", ".db"):
        with sqlite3.connect(path) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                         "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
                for column in conn.execute(f'PRAGMA table_info("{table}")'):
                    if str(column[2]).upper() in ("INTEGER", "REAL", "NUMERIC", "INT", "FLOAT", "DOUBLE"):
                        conn.execute(f'UPDATE "{table}" SET "{column[1]}" = "{column[1]}" + 1 '
                                     f'WHERE rowid = (SELECT MIN(rowid) FROM "{table}")')
                        return True
    with open(path, "ab") as fh:  # anything else: one byte more is still a different file
        fh.write(b"\n")
    return True


def source_modified(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    if not ctx.files:
        return None
    folder = ctx.scratch / "modified-sources"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in ctx.files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copyfile)(path, target)
    first = next(iter(ctx.files))
    if (folder / first).is_dir():
        return None
    _modify_file(folder / first)
    return dataclasses.replace(row, workspace=folder)


def last_cell_fails(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    codes = _actions(row.assistant or "", "Code")
    if not codes:
        return None
    code = extract_code(codes[-1].content)
    failing = f"raise KeyError('result_column')  # the column the task needs is not there\n{code}"
    return dataclasses.replace(row, assistant=with_code(row.assistant, len(codes) - 1, failing))


def answer_truncated(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    answer = answer_of(row.assistant or "")
    if not answer:
        return None
    words = [m for m in re.finditer(r"[A-Za-z][A-Za-z_]{3,}", answer)]
    if not words:
        return None
    middle = len(answer) // 2
    word = next((m for m in words if m.end() > middle), words[-1])
    cut = word.start() + max(2, (word.end() - word.start()) // 2)
    return dataclasses.replace(row, assistant=with_answer(row.assistant, answer[:cut]))


def answer_without_result(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    if not answer_of(row.assistant or ""):
        return None
    return dataclasses.replace(row, assistant=with_answer(row.assistant, NO_RESULT_ANSWER))


def _deliverables(row: AuditRow) -> list[str]:
    globs = []
    for item in row.checklist or []:
        if isinstance(item, dict) and item.get("rule") in ("file_created", "file_nonempty"):
            glob = (item.get("params") or {}).get("glob")
            if glob:
                globs.append(glob)
    return list(dict.fromkeys(globs))


def deliverable_deleted(row: AuditRow, ctx: PlantContext) -> AuditRow | None:
    globs = _deliverables(row)
    codes = _actions(row.assistant or "", "Code")
    if not globs or not codes:
        return None
    code = extract_code(codes[-1].content)
    deleting = (f"{code}\nimport glob as _glob, os as _os\nfor _found in _glob.glob({globs[0]!r}, recursive=True):\n"
                "    _os.remove(_found)")
    return dataclasses.replace(row, assistant=with_code(row.assistant, len(codes) - 1, deleting))


PLANTS: dict[str, Callable[[AuditRow, PlantContext], AuditRow | None]] = {
    "wrong_number": wrong_number, "foreign_answer": foreign_answer, "cells_removed": cells_removed,
    "execute_altered": execute_altered, "source_modified": source_modified, "last_cell_fails": last_cell_fails,
    "answer_truncated": answer_truncated, "answer_without_result": answer_without_result,
    "deliverable_deleted": deliverable_deleted,
}

__all__ = ["DEFECTS", "PLANTS", "PlantContext", "needs_outputs", "answer_of", "with_answer", "with_execute",
           "with_outputs", "with_code", "without_cell", "NO_RESULT_ANSWER"]
