"""Rules over the workspace and the sources: files created with content, tables without nulls, sources untouched."""

from __future__ import annotations

import fnmatch
import sqlite3
from pathlib import Path
from typing import Any

from synth.checklist.context import RuleContext, first_line
from synth.checklist.items import ItemResult
from synth.checklist.registry import RuleSetupError, rule
from synth.hashing import path_sha256


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)


@rule("file_created", fix="Write the requested output file into the working directory.")
def file_created(ctx: RuleContext, *, glob: str) -> ItemResult:
    """A file matching `glob` exists in the final workspace and did not exist before the episode."""
    final, initial = ctx.final_files(), ctx.initial_files()
    new = [p for p in final if _matches(p, glob) and (p not in initial or initial[p].sha256 != final[p].sha256)]
    created = [p for p in new if p not in initial]
    if created:
        return ItemResult(True, f"created {', '.join(created[:5])}")
    if new:
        return ItemResult(False, f"{', '.join(new[:5])} existed before the episode (modified, not created)")
    existing = [p for p in final if _matches(p, glob)]
    if existing:
        return ItemResult(False, f"only pre-existing files match {glob!r}: {', '.join(existing[:5])}")
    return ItemResult(False, f"no file matching {glob!r} in the workspace")


_TABULAR = (".csv", ".tsv", ".parquet", ".xlsx", ".xls", ".json", ".jsonl")


@rule("file_nonempty", fix="Write the output file with its actual content (not empty, not just a header).")
def file_nonempty(ctx: RuleContext, *, glob: str) -> ItemResult:
    """At least one file matches `glob` and every match has content (tables: at least one data row)."""
    final = ctx.final_files()
    matches = sorted(p for p in final if _matches(p, glob))
    if not matches:
        return ItemResult(False, f"no file matching {glob!r} in the workspace")
    for path in matches:
        if final[path].size == 0:
            return ItemResult(False, f"{path} is empty (0 bytes)")
        if ctx.workspace is not None and path.lower().endswith(_TABULAR):
            try:
                rows = sum(len(frame) for frame in read_tables(ctx.workspace / path, None).values())
            except Exception as exc:
                return ItemResult(False, f"{path} cannot be read as a table: {first_line(str(exc))}")
            if rows == 0:
                return ItemResult(False, f"{path} has no data rows")
    return ItemResult(True, f"{len(matches)} file(s) with content: {', '.join(matches[:5])}")


def read_tables(path: Path, table: str | None) -> dict[str, Any]:
    """{table name: DataFrame} of a CSV/TSV/Parquet/Excel/JSON file or SQLite database (one table when named)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return {path.name: pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")}
    if suffix == ".parquet":
        return {path.name: pd.read_parquet(path)}
    if suffix in (".xlsx", ".xls", ".xlsm"):
        sheets = pd.read_excel(path, sheet_name=table if table else None)
        return sheets if isinstance(sheets, dict) else {table: sheets}
    if suffix == ".jsonl":
        return {path.name: pd.read_json(path, lines=True)}
    if suffix == ".json":
        return {path.name: pd.read_json(path)}
    if suffix in (".sqlite", ".sqlite3", ".db") or _is_sqlite(path):
        uri = f"file:{path}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")]
            if table is not None:
                if table not in names:
                    raise ValueError(f"no table {table!r} in {path.name}; tables: {', '.join(names)}")
                names = [table]
            return {n: pd.read_sql_query(f'SELECT * FROM "{n}"', conn) for n in names if not n.startswith("sqlite_")}
    raise ValueError(f"unsupported table file type {suffix or path.name!r}")


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


@rule("table_has_no_nulls", fix="Handle the missing values so the output table has none left.")
def table_has_no_nulls(ctx: RuleContext, *, file: str, column: str | None = None, table: str | None = None) -> ItemResult:
    """The table in workspace file `file` (CSV/TSV/Parquet/Excel sheet/SQLite table; a glob matching one file)
    has no missing values, in `column` only when given."""
    if ctx.workspace is None:
        raise RuleSetupError("table_has_no_nulls needs the episode's workspace directory")
    final = ctx.final_files()
    candidates = sorted(p for p in final if p == file or _matches(p, file))
    if not candidates:
        return ItemResult(False, f"no file {file!r} in the workspace")
    path = candidates[0]
    try:
        tables = read_tables(ctx.workspace / path, table)
    except Exception as exc:
        return ItemResult(False, f"{path} cannot be read as a table: {first_line(str(exc))}")
    checked = 0
    for name, frame in tables.items():
        where = path if len(tables) == 1 else f"{path}:{name}"
        if column is not None:
            if column not in frame.columns:
                if len(tables) > 1:
                    continue
                return ItemResult(False, f"{where} has no column {column!r}; columns: {', '.join(map(str, frame.columns))}")
            nulls = int(frame[column].isna().sum())
            if nulls:
                return ItemResult(False, f"{where} column {column!r} has {nulls} missing value(s)")
        else:
            counts = frame.isna().sum()
            bad = {str(c): int(n) for c, n in counts.items() if n}
            if bad:
                listed = ", ".join(f"{c}={n}" for c, n in list(bad.items())[:5])
                return ItemResult(False, f"{where} has missing values ({listed})")
        checked += 1
    if checked == 0:
        return ItemResult(False, f"no table in {path} has a column {column!r}")
    scope = f"column {column!r}" if column else "any column"
    return ItemResult(True, f"{path}: no missing values in {scope}")


@rule("sources_unchanged", hard=True, fix="Never modify the source files; write results to new files.")
def sources_unchanged(ctx: RuleContext, *, allow_workspace_changes: bool = False) -> ItemResult:
    """The original sources still hash as they did at the start and, unless the task allows modifying them,
    the workspace copies present before the episode are unchanged and still there."""
    changed = []
    for source in ctx.sources:
        if source.path is None:  # a reference without its original on this machine (e.g. an audited record)
            continue
        if not source.path.exists():
            changed.append(f"original {source.path} was removed")
        elif path_sha256(source.path) != source.sha256:
            changed.append(f"original {source.path} was modified")
    if not allow_workspace_changes and (ctx.initial_state is not None or ctx.state is not None or ctx.workspace):
        initial, final = ctx.initial_files(), ctx.final_files()
        for rel, info in sorted(initial.items()):
            if rel not in final:
                changed.append(f"workspace copy {rel} was deleted")
            elif final[rel].sha256 != info.sha256:
                changed.append(f"workspace copy {rel} was modified")
    if changed:
        return ItemResult(False, "; ".join(changed[:5]))
    scope = "originals" if allow_workspace_changes else "originals and workspace copies"
    return ItemResult(True, f"{len(ctx.sources)} source(s) unchanged ({scope})")



__all__ = ["file_created", "file_nonempty", "table_has_no_nulls", "sources_unchanged", "read_tables"]
