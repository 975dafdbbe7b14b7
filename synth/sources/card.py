"""DataCard: what a profiled source looks like to the rest of ds-synth (and, rendered, to the questioner LLM)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# JSON-safe cell value: profiles are cached and exported as JSON, so numpy/pandas scalars never leak in.
Scalar = Union[bool, int, float, str, None]

SourceKind = Literal["sqlite", "duckdb", "csv", "tsv", "excel", "parquet", "json", "jsonl", "text"]

_PROMPT_ROWS = 3
_PROMPT_CELL_CHARS = 40


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValueCount(_Model):
    value: Scalar
    count: int


class ColumnProfile(_Model):
    name: str
    type: str
    nulls: int
    null_rate: float
    distinct: int
    min: Scalar = None
    max: Scalar = None
    mean: Optional[float] = None
    top_values: list[ValueCount] = Field(default_factory=list)
    examples: list[Scalar] = Field(default_factory=list)
    primary_key: bool = False


class ForeignKey(_Model):
    columns: list[str]
    ref_table: str
    ref_columns: list[str]


class TableProfile(_Model):
    name: str
    rows: int
    # True when `rows` is an estimate (large file) rather than a count.
    rows_approx: bool = False
    # Rows the column statistics were computed over; fewer than `rows` means the stats are approximate.
    stats_rows: int = 0
    is_view: bool = False
    columns: list[ColumnProfile] = Field(default_factory=list)
    sample_rows: list[dict[str, Scalar]] = Field(default_factory=list)
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def stats_approx(self) -> bool:
        return self.rows_approx or self.stats_rows < self.rows


class Document(_Model):
    name: str
    chars: int
    lines: int
    encoding: str
    excerpt: str
    truncated: bool


class DataCard(_Model):
    name: str
    kind: SourceKind
    path: str
    sha256: str
    # "full": sha256 of the whole file; "sampled": of size + head/middle/tail blocks (file too large to hash whole).
    hash_mode: Literal["full", "sampled"] = "full"
    size_bytes: int
    tables: list[TableProfile] = Field(default_factory=list)
    documents: list[Document] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    profiler_version: str = ""

    @property
    def approx(self) -> bool:
        return any(t.stats_approx for t in self.tables)

    def table(self, name: str) -> TableProfile:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"{self.name}: no table {name!r} (have: {', '.join(t.name for t in self.tables)})")

    def summary_dict(self) -> dict:
        """The compact JSON shape printed by `synth sources profile --json`."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "approx": self.approx,
            "tables": [
                {
                    "name": t.name,
                    "rows": t.rows,
                    "rows_approx": t.rows_approx,
                    "is_view": t.is_view,
                    "columns": [
                        {"name": c.name, "type": c.type, "nulls": c.nulls, "distinct": c.distinct} for c in t.columns
                    ],
                    "foreign_keys": [fk.model_dump() for fk in t.foreign_keys],
                }
                for t in self.tables
            ],
            "documents": [{"name": d.name, "chars": d.chars, "lines": d.lines} for d in self.documents],
            "notes": self.notes,
        }

    def to_prompt(self, max_chars: int = 4000) -> str:
        """Compact text for LLM prompts: schema, types, row counts, ranges, FKs, example rows — never over max_chars.

        Every table keeps at least its compact schema (names, types, rows, FKs); column statistics, one example
        row and then three example rows are added table by table while the budget allows. If even the schemas do
        not fit, trailing tables are left out and named in a final line.
        """
        if max_chars < 40:
            raise ValueError(f"to_prompt: max_chars must be at least 40, got {max_chars}")
        header = "\n".join(
            [f"Source {self.name} ({self.kind}, {_human_size(self.size_bytes)})"] + [f"note: {n}" for n in self.notes]
        )
        # Every table gets its compact schema first; then, table by table, richer levels while the budget allows:
        # column statistics, one example row, three example rows.
        levels = [(0, False), (0, True), (1, True), (_PROMPT_ROWS, True)]
        render = [lambda lv, t=t: _render_table(t, *levels[lv]) for t in self.tables]
        render += [lambda lv, d=d: _render_document(d, full=lv > 0) for d in self.documents]
        chosen = [0] * len(render)
        blocks = [r(0) for r in render]
        total = len(header) + sum(len(b) + 1 for b in blocks)
        if total > max_chars:
            return self._fit(header, blocks, max_chars)
        for level in range(1, len(levels)):
            for i, r in enumerate(render):
                if chosen[i] != level - 1:
                    continue
                richer = r(level)
                if total - len(blocks[i]) + len(richer) <= max_chars:
                    total += len(richer) - len(blocks[i])
                    blocks[i], chosen[i] = richer, level
        return "\n".join([header] + blocks)

    def focus_prompt(self, table: str, max_chars: int = 2500, *, alone: bool = False) -> str:
        """Like `to_prompt`, but centred on one table: it first and in full detail (statistics, example rows),
        the tables linked to it by foreign keys as schemas, every other table as one line. `alone` shows the focus
        table only (tasks that must not need any other table)."""
        focus = self.table(table)
        header = f"Source {self.name} ({self.kind}, {_human_size(self.size_bytes)})"
        blocks = [_render_table(focus, _PROMPT_ROWS, True)]
        if alone:
            text = "\n".join([header, *blocks])
            return text if len(text) <= max_chars else text[: max_chars - 13].rstrip() + "\n…[truncated]"
        linked = {fk.ref_table for fk in focus.foreign_keys} | {
            t.name for t in self.tables if any(fk.ref_table == focus.name for fk in t.foreign_keys)
        }
        others = [t for t in self.tables if t.name != focus.name]
        blocks += [_render_table(t, 0, False) for t in others if t.name in linked]
        rest = [t for t in others if t.name not in linked]
        if rest:
            blocks.append("Other tables: " + ", ".join(f"{t.name} ({t.rows} rows)" for t in rest))
        text = "\n".join([header, *blocks])
        if len(text) > max_chars:
            text = text[: max_chars - 13].rstrip() + "\n…[truncated]"
        return text

    def focus_table(self, visit: int) -> str | None:
        """The table the source's `visit`-th task centres on: every table once (in an order fixed by the source's
        hash) before any repeats, so a resumed run asks the same and no two early tasks share a prompt."""
        tables = sorted(t.name for t in self.tables if not t.is_view)
        if not tables:
            return None
        tables.sort(key=lambda name: hashlib.sha256(f"{self.sha256}:{name}".encode()).hexdigest())
        return tables[visit % len(tables)]

    def referenced_tables(self, focus: str | None) -> list[str]:
        """Tables the focus table points at (a foreign key, or a column named like `AlbumId`): a task on the focus
        table alone can still speak of them through those id columns."""
        if focus is None:
            return []
        table = self.table(focus)
        columns = {c.name.lower() for c in table.columns}
        named = {fk.ref_table for fk in table.foreign_keys}
        return [t.name for t in self.tables
                if t.name != focus and (t.name in named or f"{t.name.lower()}id" in columns)]

    def questioner_prompt(self, focus: str | None, max_chars: int = 2500, *, alone: bool = False) -> str:
        """What the questioner sees: the card centred on `focus` (only it when `alone`), or the whole card."""
        if focus is None:
            return self.to_prompt(max_chars=max_chars)
        return self.focus_prompt(focus, max_chars, alone=alone)

    def _fit(self, header: str, blocks: list[str], budget: int) -> str:
        """Compact schemas of as many tables as fit, then a line naming the ones left out."""
        names = [t.name for t in self.tables] + [d.name for d in self.documents]
        out = header
        for i, block in enumerate(blocks):
            rest = names[i + 1 :]
            reserve = len(_omitted_line(rest)) if rest else 0
            if len(out) + 1 + len(block) + reserve > budget:
                out += _omitted_line(names[i:])
                break
            out += "\n" + block
        if len(out) > budget:
            out = out[: budget - 13].rstrip() + "\n…[truncated]"
        return out


def _omitted_line(names: list[str]) -> str:
    shown = ", ".join(names)
    if len(shown) > 160:
        shown = shown[:159] + "…"
    return f"\n… {len(names)} more omitted: {shown}"


class SourceError(_Model):
    """A source that could not be profiled; the rest of the run continues without it."""

    path: str
    message: str

    def summary_dict(self) -> dict:
        return {"path": self.path, "error": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _render_table(table: TableProfile, example_rows: int, column_detail: bool) -> str:
    kind = "View" if table.is_view else "Table"
    rows = f"~{table.rows}" if table.rows_approx else str(table.rows)
    approx = f", stats from {table.stats_rows} sampled rows (approx)" if table.stats_approx else ""
    lines = [f"{kind} {table.name} — {rows} rows{approx}"]
    if column_detail:
        lines += ["  " + _render_column(c) for c in table.columns]
    else:
        lines.append("  columns: " + ", ".join(f"{c.name} {c.type}" for c in table.columns))
    for fk in table.foreign_keys:
        lines.append(f"  FK ({', '.join(fk.columns)}) -> {fk.ref_table}({', '.join(fk.ref_columns)})")
    lines += [f"  note: {n}" for n in table.notes]
    if example_rows and table.sample_rows:
        lines.append("  example rows:")
        for row in table.sample_rows[:example_rows]:
            cells = {k: _short(v) for k, v in row.items()}
            lines.append("    " + json.dumps(cells, ensure_ascii=False, default=str))
    return "\n".join(lines)


def _render_column(col: ColumnProfile) -> str:
    parts = [f"{col.name}: {col.type}"]
    if col.primary_key:
        parts.append("PK")
    if col.nulls:
        parts.append(f"{col.nulls} null ({col.null_rate:.1%})")
    parts.append(f"{col.distinct} distinct")
    if col.min is not None or col.max is not None:
        parts.append(f"range {_short(col.min)}..{_short(col.max)}")
    if col.mean is not None:
        parts.append(f"mean {col.mean:.4g}")
    if col.top_values and col.distinct <= 20:
        parts.append("values " + ", ".join(f"{_short(v.value)}({v.count})" for v in col.top_values[:5]))
    elif col.examples and col.mean is None and col.min is None:
        parts.append("e.g. " + ", ".join(repr(_short(v)) for v in col.examples[:3]))
    return "; ".join(parts)


def _render_document(doc: Document, full: bool) -> str:
    keep = 600 if full else 150
    excerpt = doc.excerpt[:keep] + ("…" if doc.truncated or len(doc.excerpt) > keep else "")
    return f"Document {doc.name} — {doc.lines} lines, {doc.chars} chars\n  " + excerpt.replace("\n", "\n  ")


def _short(value: Scalar) -> Scalar:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, str) and len(value) > _PROMPT_CELL_CHARS:
        return value[: _PROMPT_CELL_CHARS - 1] + "…"
    return value


def _human_size(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TB"
