"""Workspace state: file hashes, database row counts (read-only), and cheap stat-based change detection."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from synth.hashing import file_sha256
from synth.sandbox.base import FileInfo, SandboxState

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DUCKDB_MAGIC = b"DUCK"  # at byte offset 8 of a DuckDB database file

StatSignature = dict[str, tuple[int, int]]


def _walk_files(workspace: Path):
    for root, dirs, files in os.walk(workspace):
        dirs.sort()
        for name in sorted(files):
            full = Path(root, name)
            if full.is_symlink() or not full.is_file():
                continue  # a link could point outside the workspace; never follow it
            yield full, full.relative_to(workspace).as_posix()


def stat_signature(workspace: Path) -> StatSignature:
    """Path -> (size, mtime_ns) for every regular file: enough to tell what a cell touched, without reading."""
    signature = {}
    for full, rel in _walk_files(workspace):
        try:
            st = full.stat()
        except OSError:
            continue
        signature[rel] = (st.st_size, st.st_mtime_ns)
    return signature


def changed_paths(before: StatSignature, after: StatSignature) -> list[str]:
    """Paths added or modified between two signatures (deletions are visible in snapshots, not here)."""
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


def _sqlite_rows(path: Path) -> dict[str, int]:
    uri = f"file:{path}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error:
        return {}
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {n: con.execute(f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"').fetchone()[0] for n in names}
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def _duckdb_rows(path: Path) -> dict[str, int]:
    try:
        import duckdb
    except ImportError:
        return {}
    try:
        con = duckdb.connect(str(path), read_only=True)
    except Exception:  # locked by a live session, or written by another DuckDB version
        return {}
    try:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY schema_name, table_name"
        ).fetchall()
        rows = {}
        for schema, table in tables:
            quoted = '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))
            key = table if schema == "main" else f"{schema}.{table}"
            rows[key] = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
        return rows
    except Exception:
        return {}
    finally:
        con.close()


def _database_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head[8:12] == _DUCKDB_MAGIC:
        return "duckdb"
    return None


def take_snapshot(workspace: Path) -> SandboxState:
    """Every workspace file with size and sha256; row counts per table of each SQLite/DuckDB file."""
    state = SandboxState()
    for full, rel in _walk_files(Path(workspace)):
        try:
            state.files[rel] = FileInfo(path=rel, size=full.stat().st_size, sha256=file_sha256(full))
        except OSError:
            continue
        kind = _database_kind(full)
        if kind == "sqlite":
            state.db_rows[rel] = _sqlite_rows(full)
        elif kind == "duckdb":
            state.db_rows[rel] = _duckdb_rows(full)
    return state
