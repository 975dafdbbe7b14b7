"""Profile discovered sources into DataCards, with a cache keyed by file hash.

Sources are opened read-only and nothing is written next to them: SQLite through a `mode=ro&immutable=1` URI
(no journal, WAL or shm files), DuckDB with `read_only=True` and its temp directory elsewhere, everything else
with plain `open(..., "rb")`. Work is bounded: large text files are profiled from their head, and column
statistics come from at most `max_stats_rows` rows per table (the card then says "approx").
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import sqlite3
import tempfile
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

from synth.errors import SynthError
from synth.sources.card import (
    ColumnProfile,
    DataCard,
    Document,
    ForeignKey,
    SourceError,
    TableProfile,
)
from synth.sources.columns import MiB, ProfileLimits, fill_table, is_plain
from synth.sources.discover import DiscoveredFile, _classify, discover

# Bump when the profile output changes, so cached cards from older code are not reused.
PROFILER_VERSION = "1"



class SourceProfileError(SynthError, ValueError):
    """Raised by `profile` when a source cannot be read; `profile_all` turns it into a `SourceError`."""

    def __init__(self, path: Union[str, os.PathLike], message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message


def default_cache_dir() -> Path:
    """$DS_SYNTH_CACHE/profiles, else ~/.cache/ds-synth/profiles."""
    base = os.environ.get("DS_SYNTH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "ds-synth") / "profiles"


def profile(source: Union[DiscoveredFile, str, os.PathLike], limits: Optional[ProfileLimits] = None) -> DataCard:
    """Profile one source (no cache). Raises SourceProfileError with a one-line reason when it cannot be read."""
    source = _as_source(source)
    limits = limits or ProfileLimits()
    sha, mode = _fingerprint(source.path, limits)
    return _profile_uncached(source, limits, sha, mode)


def profile_all(
    path: Union[str, os.PathLike],
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    *,
    use_cache: bool = True,
    limits: Optional[ProfileLimits] = None,
) -> list[Union[DataCard, SourceError]]:
    """Discover and profile every source under `path`; a source that fails becomes a SourceError, the rest go on.

    Cards are cached in `cache_dir` (default: `default_cache_dir()`) keyed by file hash, profiler version and
    limits; the cache dir may not lie inside the source dir.
    """
    limits = limits or ProfileLimits()
    sources = discover(path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if use_cache:
        root = Path(path).resolve()
        root = root if root.is_dir() else root.parent
        if cache.resolve().is_relative_to(root):
            raise ValueError(
                f"cache dir {cache} is inside the source dir {root}, and ds-synth never writes there; "
                "set DS_SYNTH_CACHE elsewhere or use --no-cache"
            )
    results: list[Union[DataCard, SourceError]] = []
    for source in sources:
        try:
            results.append(_profile_cached(source, limits, cache if use_cache else None))
        except SourceProfileError as err:
            results.append(SourceError(path=err.path, message=err.message))
        except Exception as err:  # one odd file must not stop the run; say what it was
            results.append(SourceError(path=str(source.path), message=f"{type(err).__name__}: {_one_line(err)}"))
    return results


# --------------------------------------------------------------------------------------------------------- cache


def _profile_cached(source: DiscoveredFile, limits: ProfileLimits, cache: Optional[Path]) -> DataCard:
    sha, mode = _fingerprint(source.path, limits)
    if cache is None:
        return _profile_uncached(source, limits, sha, mode)
    key_text = f"{sha}|{mode}|{source.kind}|{PROFILER_VERSION}|{limits.model_dump_json()}"
    entry = cache / f"{hashlib.sha256(key_text.encode()).hexdigest()}.json"
    if entry.is_file():
        try:
            card = DataCard.model_validate_json(entry.read_text(encoding="utf-8"))
            # The same content may sit at another path or name than when it was cached.
            return card.model_copy(update={"name": source.name, "path": str(source.path)})
        except (ValueError, OSError):
            pass  # unreadable cache entry: profile again and overwrite it
    card = _profile_uncached(source, limits, sha, mode)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(card.model_dump_json())
        os.replace(tmp, entry)
    except OSError as err:
        _warn_cache_unwritable(cache, err)
    return card


def _warn_cache_unwritable(cache: Path, err: OSError) -> None:
    # A read-only home or full disk costs speed, not results: warn once per process and carry on uncached.
    if cache not in _UNWRITABLE_CACHES:
        _UNWRITABLE_CACHES.add(cache)
        warnings.warn(f"profile cache {cache} is not writable ({err.strerror or err}); continuing without it")


_UNWRITABLE_CACHES: set[Path] = set()


def _profile_uncached(source: DiscoveredFile, limits: ProfileLimits, sha: str, mode: str) -> DataCard:
    size = source.path.stat().st_size
    card = DataCard(
        name=source.name,
        kind=source.kind,
        path=str(source.path),
        sha256=sha,
        hash_mode=mode,  # type: ignore[arg-type]
        size_bytes=size,
        profiler_version=PROFILER_VERSION,
    )
    _PROFILERS[source.kind](source, limits, card)
    if mode == "sampled":
        card.notes.append("sha256 covers size + head/middle/tail blocks (file too large to hash whole)")
    return card


def _fingerprint(path: Path, limits: ProfileLimits) -> tuple[str, str]:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= limits.full_hash_bytes:
                for block in iter(lambda: handle.read(MiB), b""):
                    digest.update(block)
                return digest.hexdigest(), "full"
            block = 4 * MiB
            digest.update(str(size).encode())
            for offset in (0, size // 2, max(0, size - block)):
                handle.seek(offset)
                digest.update(handle.read(block))
            return digest.hexdigest(), "sampled"
    except OSError as err:
        raise SourceProfileError(path, _unreadable_reason(path, err)) from None


def _unreadable_reason(path: Path, err: OSError) -> str:
    reason = err.strerror or str(err)
    if path.is_symlink() and not path.exists():
        return f"cannot read: {reason} (symlink to {os.readlink(path)} that cannot be resolved)"
    if path.is_dir():
        return "cannot read: it is a directory, not a file"
    return f"cannot read: {reason}"


def _as_source(source: Union[DiscoveredFile, str, os.PathLike]) -> DiscoveredFile:
    if isinstance(source, DiscoveredFile):
        return source
    path = Path(source)
    kind = _classify(path)
    if kind is None:
        raise SourceProfileError(path, f"unknown source type (suffix {path.suffix!r})")
    return DiscoveredFile(path=path.absolute(), kind=kind, name=path.name)


# ----------------------------------------------------------------------------------------------------- databases


def _profile_sqlite(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    path = source.path
    for side in ("-wal", "-journal"):
        if Path(f"{path}{side}").exists():
            card.notes.append(f"{path.name}{side} exists; opened immutable, so its uncommitted changes are ignored")
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        raise SourceProfileError(path, f"cannot open SQLite database: {_one_line(err)}") from None
    try:
        objects = con.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type = 'view', name"
        ).fetchall()
        if not objects:
            card.notes.append("database has no tables")
        large = card.size_bytes > limits.full_read_bytes
        for name, obj_type in objects:
            card.tables.append(_sqlite_table(con, name, obj_type == "view", large, limits))
    except sqlite3.OperationalError as err:
        raise SourceProfileError(path, f"cannot read SQLite database: {_one_line(err)}") from None
    except sqlite3.DatabaseError as err:
        raise SourceProfileError(path, f"corrupt SQLite database: {_one_line(err)}") from None
    finally:
        con.close()


def _sqlite_table(con: sqlite3.Connection, name: str, is_view: bool, large: bool, limits: ProfileLimits) -> TableProfile:
    q = _quote(name)
    info = con.execute(f"PRAGMA table_info({q})").fetchall()
    declared = {row[1]: row[2] or "" for row in info}
    pk = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    table = TableProfile(name=name, rows=0, is_view=is_view)
    if not is_view:
        table.foreign_keys = _sqlite_foreign_keys(con, name)
    try:
        cursor = con.execute(f"SELECT * FROM {q} LIMIT {limits.max_stats_rows}")
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        table.rows, table.rows_approx = _sqlite_count(con, q, is_view, large, len(rows), limits)
    except sqlite3.OperationalError as err:
        if not is_view:
            raise
        # A view over a missing table or function is still worth listing; say why it has no rows.
        table.notes.append(f"view cannot be queried: {_one_line(err)}")
        table.columns = [ColumnProfile(name=n, type=t, nulls=0, null_rate=0.0, distinct=0) for n, t in declared.items()]
        return table
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=names) if rows else pd.DataFrame(columns=names)
    fill_table(table, frame, limits, declared_types=declared, primary_key=pk)
    return table


def _sqlite_count(
    con: sqlite3.Connection, q: str, is_view: bool, large: bool, sampled: int, limits: ProfileLimits
) -> tuple[int, bool]:
    if sampled < limits.max_stats_rows:
        return sampled, False
    if large and not is_view:
        try:  # a full COUNT(*) over a multi-GB table is a full scan; the largest rowid is a free estimate
            (top,) = con.execute(f"SELECT max(rowid) FROM {q}").fetchone()
            return int(top or 0), True
        except sqlite3.OperationalError:
            pass  # WITHOUT ROWID table
    (count,) = con.execute(f"SELECT COUNT(*) FROM {q}").fetchone()
    return int(count), False


def _sqlite_foreign_keys(con: sqlite3.Connection, name: str) -> list[ForeignKey]:
    grouped: dict[int, ForeignKey] = {}
    for fk_id, _seq, ref_table, from_col, to_col, *_ in con.execute(f"PRAGMA foreign_key_list({_quote(name)})"):
        fk = grouped.setdefault(fk_id, ForeignKey(columns=[], ref_table=ref_table, ref_columns=[]))
        fk.columns.append(from_col)
        if to_col is not None:
            fk.ref_columns.append(to_col)
    for fk in grouped.values():
        if not fk.ref_columns:  # "REFERENCES t" without columns means t's primary key
            info = con.execute(f"PRAGMA table_info({_quote(fk.ref_table)})").fetchall()
            fk.ref_columns = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    return list(grouped.values())


def _profile_duckdb(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    import duckdb

    path = source.path
    with tempfile.TemporaryDirectory(prefix="ds-synth-duckdb-") as tmp:
        try:
            con = duckdb.connect(str(path), read_only=True, config={"temp_directory": tmp})
        except duckdb.Error as err:
            raise SourceProfileError(path, f"cannot open DuckDB database: {_one_line(err)}") from None
        try:
            _duckdb_tables(con, limits, card)
        except duckdb.Error as err:
            raise SourceProfileError(path, f"cannot read DuckDB database: {_one_line(err)}") from None
        finally:
            con.close()


def _duckdb_tables(con: Any, limits: ProfileLimits, card: DataCard) -> None:
    objects = con.execute(
        "SELECT schema_name, table_name, false FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT internal UNION ALL SELECT schema_name, view_name, true FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal ORDER BY 3, 1, 2"
    ).fetchall()
    constraints = con.execute(
        "SELECT schema_name, table_name, constraint_type, constraint_column_names, referenced_table, "
        "referenced_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
        "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"
    ).fetchall()
    if not objects:
        card.notes.append("database has no tables")
    for schema, name, is_view in objects:
        display = name if schema == "main" else f"{schema}.{name}"
        q = f"{_quote(schema)}.{_quote(name)}"
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                "AND schema_name = ? AND table_name = ? ORDER BY column_index",
                [schema, name],
            ).fetchall()
        )
        pk: list[str] = []
        table = TableProfile(name=display, rows=0, is_view=bool(is_view))
        for c_schema, c_table, c_type, cols, ref_table, ref_cols in constraints:
            if (c_schema, c_table) != (schema, name):
                continue
            if c_type == "PRIMARY KEY":
                pk = list(cols)
            else:
                table.foreign_keys.append(
                    ForeignKey(columns=list(cols), ref_table=ref_table, ref_columns=list(ref_cols or []))
                )
        (table.rows,) = con.execute(f"SELECT COUNT(*) FROM {q}").fetchone()
        frame = con.execute(f"SELECT * FROM {q} LIMIT {limits.max_stats_rows}").df()
        fill_table(table, frame, limits, declared_types=types, primary_key=pk)
        card.tables.append(table)


# ------------------------------------------------------------------------------------------------- files: tables


def _profile_delimited(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    text, complete, encoding_note = _read_text_head(source.path, card.size_bytes, limits)
    if encoding_note:
        card.notes.append(encoding_note)
    if not text.strip():
        raise SourceProfileError(source.path, "empty file (no header, no rows)")
    sep = "\t" if source.kind == "tsv" else _guess_delimiter(text)
    frame = _parse_delimited(source, text, sep, card)
    if sep != ",":
        card.notes.append(f"delimiter {sep!r}")
    table = TableProfile(name=Path(source.name).stem, rows=len(frame))
    if not complete:
        table.rows = _estimate_rows(len(frame), len(text.encode("utf-8", "replace")), card.size_bytes)
        table.rows_approx = True
        card.notes.append(f"large file: profiled its first {_mib(limits.head_bytes)}; row count estimated")
    fill_table(table, frame.head(limits.max_stats_rows), limits)
    card.tables.append(table)


def _parse_delimited(source: DiscoveredFile, text: str, sep: str, card: DataCard) -> Any:
    """Parse with pandas; on failure retry the dialects seen in real exports before giving up."""
    import pandas as pd

    errors = (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError)
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, low_memory=False)
    except errors as err:
        first_error = err
    try:  # backslash-escaped quotes (\"), e.g. WikiTableQuestions tables
        frame = pd.read_csv(io.StringIO(text), sep=sep, low_memory=False, escapechar="\\")
        card.notes.append("backslash-escaped quotes")
        return frame
    except errors:
        pass
    skipped: list[list[str]] = []
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, engine="python", on_bad_lines=skipped.append)
    except errors:
        frame = None
    # Accept a few ragged lines, not a file that only "parses" by dropping most of it.
    if frame is not None and len(frame) and len(skipped) <= max(1, len(frame) // 20):
        card.notes.append(f"{len(skipped)} malformed line(s) skipped")
        return frame
    raise SourceProfileError(source.path, f"cannot parse as {source.kind.upper()}: {_one_line(first_error)}")


def _profile_excel(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    import pandas as pd

    try:
        engine = "xlrd" if source.path.suffix.lower() == ".xls" else "openpyxl"
        workbook = pd.ExcelFile(source.path, engine=engine)
    except Exception as err:  # openpyxl/xlrd raise many types (BadZipFile, XLRDError, KeyError, ...)
        raise SourceProfileError(source.path, f"not a readable Excel workbook: {_one_line(err)}") from None
    with workbook:
        for sheet in workbook.sheet_names:
            try:
                frame = pd.read_excel(workbook, sheet_name=sheet, nrows=limits.max_stats_rows)
            except Exception as err:
                raise SourceProfileError(source.path, f"cannot read sheet {sheet!r}: {_one_line(err)}") from None
            table = TableProfile(name=str(sheet), rows=len(frame))
            if len(frame) >= limits.max_stats_rows:
                table.rows, table.rows_approx = _excel_sheet_rows(workbook, sheet, len(frame))
            fill_table(table, frame, limits)
            card.tables.append(table)


def _excel_sheet_rows(workbook: Any, sheet: str, sampled: int) -> tuple[int, bool]:
    book = workbook.book
    try:
        if hasattr(book, "sheet_by_name"):  # xlrd
            return max(book.sheet_by_name(sheet).nrows - 1, sampled), False
        # openpyxl read-only: the sheet's declared dimension, minus the header row
        return max((book[sheet].max_row or 0) - 1, sampled), True
    except Exception:
        return sampled, True


def _profile_parquet(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
        batch = next(parquet.iter_batches(batch_size=limits.max_stats_rows), None)
    except (pa.ArrowException, OSError) as err:
        raise SourceProfileError(source.path, f"not a readable Parquet file: {_one_line(err)}") from None
    schema = parquet.schema_arrow
    frame = (batch if batch is not None else schema.empty_table()).to_pandas()
    table = TableProfile(name=Path(source.name).stem, rows=parquet.metadata.num_rows)
    fill_table(table, frame, limits, declared_types={f.name: str(f.type) for f in schema})
    card.tables.append(table)


def _profile_json(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    if card.size_bytes > limits.full_read_bytes:
        raise SourceProfileError(
            source.path,
            f"JSON document of {_mib(card.size_bytes)} exceeds the {_mib(limits.full_read_bytes)} profiling limit; "
            "convert it to JSON Lines to profile a sample",
        )
    text, _, encoding_note = _read_text_head(source.path, card.size_bytes, limits)
    if encoding_note:
        card.notes.append(encoding_note)
    if not text.strip():
        raise SourceProfileError(source.path, "empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SourceProfileError(source.path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    tables = _json_tables(data, Path(source.name).stem)
    if not tables:
        card.notes.append("JSON is not tabular; kept as a document")
        card.documents.append(_document(source.name, text, True, limits, "utf-8"))
    for name, frame in tables:
        table = TableProfile(name=name, rows=len(frame))
        fill_table(table, frame.head(limits.max_stats_rows), limits)
        card.tables.append(table)


def _json_tables(data: Any, stem: str) -> list[tuple[str, Any]]:
    import pandas as pd

    def is_scalar(v: Any) -> bool:
        return not isinstance(v, (dict, list))

    if isinstance(data, list):
        if data and all(isinstance(r, dict) for r in data):
            return [(stem, pd.DataFrame.from_records(data))]
        if data and all(isinstance(r, list) for r in data):
            header = data[0]
            if all(isinstance(h, str) for h in header) and all(len(r) == len(header) for r in data[1:]):
                return [(stem, pd.DataFrame(data[1:], columns=header))]
            return [(stem, pd.DataFrame(data).rename(columns=str))]
        if all(is_scalar(v) for v in data):
            return [(stem, pd.DataFrame({"value": data}))]
        return []
    if isinstance(data, dict) and data:
        values = list(data.values())
        if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
            return [(stem, pd.DataFrame(data))]  # column-oriented
        record_lists = [(k, v) for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if record_lists:  # e.g. {"meta": ..., "items": [{...}, ...]}
            return [(f"{stem}.{k}", pd.DataFrame.from_records(v)) for k, v in record_lists]
        if all(isinstance(v, dict) for v in values):
            frame = pd.DataFrame.from_dict(data, orient="index")
            frame.insert(0, "key", list(data.keys()))
            return [(stem, frame.reset_index(drop=True))]
        if all(is_scalar(v) for v in values):
            return [(stem, pd.DataFrame({"key": list(data.keys()), "value": values}))]
    return []


def _profile_jsonl(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    import pandas as pd

    text, complete, encoding_note = _read_text_head(source.path, card.size_bytes, limits)
    if encoding_note:
        card.notes.append(encoding_note)
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SourceProfileError(source.path, f"line {number}: invalid JSON ({err.msg})") from None
    if not records:
        raise SourceProfileError(source.path, "empty file (no JSON records)")
    if all(isinstance(r, dict) for r in records):
        frame = pd.DataFrame.from_records(records)
    else:
        frame = pd.DataFrame({"value": [json.dumps(r) if not is_plain(r) else r for r in records]})
    table = TableProfile(name=Path(source.name).stem, rows=len(frame))
    if not complete:
        table.rows = _estimate_rows(len(frame), len(text.encode("utf-8", "replace")), card.size_bytes)
        table.rows_approx = True
        card.notes.append(f"large file: profiled its first {_mib(limits.head_bytes)}; row count estimated")
    fill_table(table, frame.head(limits.max_stats_rows), limits)
    card.tables.append(table)


def _profile_text(source: DiscoveredFile, limits: ProfileLimits, card: DataCard) -> None:
    text, complete, encoding_note = _read_text_head(source.path, card.size_bytes, limits)
    if encoding_note:
        card.notes.append(encoding_note)
    if not text.strip():
        raise SourceProfileError(source.path, "empty document")
    if not complete:
        card.notes.append(f"large file: counts cover its first {_mib(limits.head_bytes)}")
    card.documents.append(_document(source.name, text, complete, limits, "latin-1" if encoding_note else "utf-8"))


def _document(name: str, text: str, complete: bool, limits: ProfileLimits, encoding: str) -> Document:
    return Document(
        name=name,
        chars=len(text),
        lines=text.count("\n") + (0 if text.endswith("\n") else 1),
        encoding=encoding,
        excerpt=text[: limits.excerpt_chars],
        truncated=len(text) > limits.excerpt_chars or not complete,
    )


_PROFILERS: dict[str, Callable[[DiscoveredFile, ProfileLimits, DataCard], None]] = {
    "sqlite": _profile_sqlite,
    "duckdb": _profile_duckdb,
    "csv": _profile_delimited,
    "tsv": _profile_delimited,
    "excel": _profile_excel,
    "parquet": _profile_parquet,
    "json": _profile_json,
    "jsonl": _profile_jsonl,
    "text": _profile_text,
}


# --------------------------------------------------------------------------------------------- reading text files


def _read_text_head(path: Path, size: int, limits: ProfileLimits) -> tuple[str, bool, Optional[str]]:
    """(text, whether it is the whole file, note about the encoding). Reads at most full_read_bytes."""
    complete = size <= limits.full_read_bytes
    try:
        with open(path, "rb") as handle:
            raw = handle.read(size if complete else limits.head_bytes)
    except OSError as err:
        raise SourceProfileError(path, _unreadable_reason(path, err)) from None
    if not raw:
        raise SourceProfileError(path, "empty file (0 bytes)")
    if not complete:
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut > 0 else raw
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # e.g. Excel's "Unicode Text" export
        try:
            return raw.decode("utf-16"), complete, "decoded as UTF-16 (byte-order mark)"
        except UnicodeDecodeError:
            pass
    _reject_binary(path, raw)
    try:
        return raw.decode("utf-8-sig"), complete, None
    except UnicodeDecodeError as err:
        if not complete and err.start >= len(raw) - 4:  # a multi-byte character cut by the head limit
            return raw[: err.start].decode("utf-8-sig"), complete, None
        note = f"not valid UTF-8 (byte {err.start}); decoded as latin-1"
        return raw.decode("latin-1"), complete, note


def _reject_binary(path: Path, raw: bytes) -> None:
    head = raw[:65536]
    if b"\x00" in head:
        raise SourceProfileError(path, "binary content (NUL bytes), not text; is the file misnamed?")
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if control > len(head) * 0.05:
        raise SourceProfileError(path, f"binary content ({control} control bytes in the first {len(head)}), not text")


def _guess_delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {sep: first.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > counts[","] else ","


def _estimate_rows(parsed_rows: int, parsed_bytes: int, size: int) -> int:
    return int(round(parsed_rows * size / max(parsed_bytes, 1)))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MB" if size >= MiB else f"{size} bytes"
