"""Column statistics and type inference for profiles, within the work bounds of `ProfileLimits`."""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ConfigDict

from synth.sources.card import ColumnProfile, Scalar, TableProfile, ValueCount

MiB = 1024 * 1024


class ProfileLimits(BaseModel):
    """Bounds on the work spent per source (so a 10 GB file costs about as much as a 64 MB one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_stats_rows: int = 100_000  # rows per table the column statistics are computed over
    full_read_bytes: int = 64 * MiB  # text files up to this size are read whole (exact row count)
    head_bytes: int = 16 * MiB  # how much of a larger text file is read (row count then estimated)
    full_hash_bytes: int = 2048 * MiB  # larger files are fingerprinted from size + head/middle/tail blocks
    sample_rows: int = 5
    top_values: int = 5
    excerpt_chars: int = 2000



def fill_table(
    table: TableProfile,
    frame: Any,
    limits: ProfileLimits,
    declared_types: Optional[dict[str, str]] = None,
    primary_key: Iterable[str] = (),
) -> None:
    declared_types = declared_types or {}
    pk = set(primary_key)
    table.stats_rows = len(frame)
    columns = []
    for i, name in enumerate(frame.columns):
        series = frame.iloc[:, i]
        column = _profile_column(str(name), series, limits, declared_types.get(name, ""))
        column.primary_key = name in pk
        columns.append(column)
    table.columns = columns
    table.sample_rows = [
        {str(k): _cell(v) for k, v in zip(frame.columns, row)}
        for row in frame.head(limits.sample_rows).itertuples(index=False, name=None)
    ]


def _profile_column(name: str, series: Any, limits: ProfileLimits, declared: str) -> ColumnProfile:
    import pandas as pd
    from pandas.api import types as ptypes

    total = len(series)
    values = series.dropna()
    if ptypes.is_object_dtype(values.dtype) and any(isinstance(v, (dict, list)) for v in values.head(1000)):
        values = values.map(lambda v: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
    nulls = int(total - len(values))
    column = ColumnProfile(
        name=name,
        type=declared or _infer_type(values),
        nulls=nulls,
        null_rate=round(nulls / total, 4) if total else 0.0,
        distinct=int(values.nunique()),
    )
    numeric = _as_numeric(values)
    if numeric is not None and len(numeric):
        column.min, column.max = _cell(numeric.min()), _cell(numeric.max())
        mean = float(numeric.mean())
        column.mean = mean if math.isfinite(mean) else None
    elif ptypes.is_datetime64_any_dtype(values.dtype) and len(values):
        column.min, column.max = _cell(values.min()), _cell(values.max())
    elif len(values) and _looks_like_dates(values):
        as_text = values.astype(str)
        column.min, column.max = str(as_text.min()), str(as_text.max())
        if not declared:
            column.type = "datetime" if as_text.str.contains(r"\d:\d").any() else "date"
    if len(values) and column.distinct < len(values):
        counts = values.value_counts().head(limits.top_values)
        column.top_values = [ValueCount(value=_cell(v), count=int(c)) for v, c in counts.items()]
    column.examples = [_cell(v) for v in pd.unique(values.head(1000))[:3]] if len(values) else []
    return column


def _infer_type(values: Any) -> str:
    from pandas.api import types as ptypes

    dtype = values.dtype
    if len(values) == 0:
        return "unknown (all null)"
    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        # pandas reads an integer column with gaps as float; report what the data is
        integral = len(values) > 0 and bool((values == values.round()).all())
        return "integer" if integral else "float"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime"
    kinds = {_py_kind(v) for v in values.head(1000)}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"integer", "float"}:
        return "float"
    return "mixed" if kinds else "string"


def _py_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, decimal.Decimal)):
        return "float"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "blob"
    if isinstance(value, _dt.datetime):
        return "datetime"
    if isinstance(value, _dt.date):
        return "date"
    if isinstance(value, _dt.time):
        return "time"
    return "string"


def _as_numeric(values: Any) -> Optional[Any]:
    from pandas.api import types as ptypes

    if ptypes.is_bool_dtype(values.dtype):
        return None
    if ptypes.is_numeric_dtype(values.dtype):
        return values
    if ptypes.is_object_dtype(values.dtype) and len(values) and all(
        isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool) for v in values
    ):
        return values.astype(float)
    return None


def _looks_like_dates(values: Any) -> bool:
    import pandas as pd

    head = values.head(200)
    if not all(isinstance(v, str) for v in head):
        return False
    if not all(8 <= len(v) <= 32 and v[:4].isdigit() and v[4:5] in "-/" for v in head):
        return False
    parsed = pd.to_datetime(head, errors="coerce", format="ISO8601")
    return bool(parsed.notna().all())


def _cell(value: Any) -> Scalar:
    """Any cell from pandas/numpy/sqlite/duckdb as a JSON-safe scalar."""
    if value is None:
        return None
    if isinstance(value, (bool, str)):
        return value if not isinstance(value, str) or len(value) <= 200 else value[:199] + "…"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):  # before .item(): pd.Timestamp has one too
        if value is _NaT():
            return None
        if isinstance(value, _dt.datetime) and value.tzinfo is None and value.time() == _dt.time(0):
            return value.date().isoformat()  # DATE columns arrive as midnight timestamps
        return value.isoformat()
    if type(value).__name__ in ("datetime64", "timedelta64"):
        import pandas as pd

        return _cell(pd.Timestamp(value) if type(value).__name__ == "datetime64" else pd.Timedelta(value))
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        try:
            value = value.item()  # numpy scalar → Python
        except (ValueError, AttributeError):
            pass
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (float, decimal.Decimal)):
        f = float(value)
        if math.isnan(f):
            return None
        return f if math.isfinite(f) else str(f)
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, (list, dict)) and pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return _cell(json.dumps(value, default=str))
    return _cell(str(value))


def _NaT() -> Any:
    import pandas as pd

    return pd.NaT


def is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
