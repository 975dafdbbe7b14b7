"""Exports of run records (DESIGN §10): `sft` (TRL `messages` + Execute spans), `swift` (ms-swift messages),
`rl` (GRPO prompts + workspace archives + reward spec) and `raw` (the full records).

Inputs are run directories (their `records.jsonl`) or records JSONL files (e.g. the output of `synth filter`).
The rl export needs the sources a task ran on: they are found under the `sources` path of the run's
`config.yaml` (or of `config.yaml` beside a records file), or under `sources_root` when given, and are checked
against the sha256 the record carries before being archived.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import yaml

from synth.dataset.record import Record, read_records
from synth.errors import SynthError
from synth.protocol import execute_spans

ExportFormat = Literal["sft", "swift", "rl", "raw"]
FORMATS: tuple[str, ...] = ("sft", "swift", "rl", "raw")
DEFAULT_MAX_TURNS = 30  # upstream's round cap, used when the run's config does not say
WORKSPACES_DIR = "workspaces"
# Files past this size are fingerprinted (size + head/middle/tail) by the profiler, so a full hash cannot match.
_FULL_HASH_LIMIT = 2048 * 1024 * 1024


class ExportError(SynthError, ValueError):
    """Bad export input (missing run, unknown format, source not found …); the message says what and where."""


@dataclass
class RunRecords:
    """Records read from one run directory or records file, with what the rl export needs to find sources."""

    origin: Path
    records: list[Record]
    sources_root: Path | None
    max_turns: int


def load_runs(paths: Sequence[Path | str], *, kind: str | None = None,
              sources_root: Path | str | None = None) -> list[RunRecords]:
    """Read each run directory (its records.jsonl) or records JSONL file; keep only `kind` records when given."""
    if not paths:
        raise ExportError("no run directory or records file given")
    if kind is not None and kind not in ("interaction", "reasoning"):
        raise ExportError(f"--kind {kind!r}: expected interaction or reasoning")
    runs = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            records_path, config_path = path / "records.jsonl", path / "config.yaml"
        elif path.is_file():
            records_path, config_path = path, path.parent / "config.yaml"
        else:
            raise ExportError(f"{path}: no such run directory or records file")
        if not records_path.is_file():
            raise ExportError(f"{path}: not a run directory (no records.jsonl)")
        try:
            records = read_records(records_path)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        if kind is not None:
            records = [r for r in records if r.kind == kind]
        config = _read_config(config_path)
        root = Path(sources_root) if sources_root is not None else (
            Path(config["sources"]) if config.get("sources") else None)
        max_turns = int(config.get("max_rounds") or DEFAULT_MAX_TURNS)
        runs.append(RunRecords(origin=path, records=records, sources_root=root, max_turns=max_turns))
    return runs


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ExportError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:160]})") from None
    return data if isinstance(data, dict) else {}


# --- rows ------------------------------------------------------------------------------------------------------


def sft_row(record: Record) -> dict[str, Any]:
    """A TRL conversational row. `execute_spans` are `[start, end)` character spans of the LAST (assistant)
    message that hold harness output (`<Execute>…</Execute>`): trainers mask them out of the loss."""
    return {
        "id": record.id,
        "kind": record.kind,
        "category": record.category,
        "messages": [{"role": m["role"], "content": m["content"]} for m in record.messages],
        "execute_spans": [[start, end] for start, end in execute_spans(record.completion)],
    }


def swift_row(record: Record) -> dict[str, Any]:
    """The ms-swift / DataScience-Instruct layout: `{"messages": [...]}` with Execute inline."""
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in record.messages]}


def rl_row(record: Record, *, workspace: str | None, max_turns: int) -> dict[str, Any]:
    """A GRPO prompt. `reward_spec.ground_truth` and `reward_spec.checklist` are JSON strings (their shapes vary
    per task, which Parquet columns cannot hold); `workspace` is relative to the Parquet file's folder."""
    spec = record.reward_spec
    return {
        "id": record.id,
        "data_source": f"ds-synth/{record.kind}/{record.category}",
        "prompt": [{"role": m["role"], "content": m["content"]} for m in record.messages[:-1]],
        "input_seq": record.prompt,
        "reward_spec": {
            "method": spec.method,
            "ground_truth": json.dumps(spec.ground_truth, ensure_ascii=False),
            "checklist": json.dumps([item.model_dump(mode="json") for item in spec.checklist], ensure_ascii=False),
        },
        "workspace": workspace,
        "max_turns": max_turns,
        "category": record.category,
        "difficulty": record.difficulty,
    }


def decode_reward_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """An rl row's reward_spec with its JSON fields decoded (the inverse of what `rl_row` stores)."""
    return {"method": spec["method"], "ground_truth": json.loads(spec["ground_truth"]),
            "checklist": json.loads(spec["checklist"])}


# --- workspaces ------------------------------------------------------------------------------------------------


def build_workspace(record: Record, sources_root: Path | None, folder: Path) -> Path | None:
    """The tar.gz of the record's sources under `folder`, named by their hashes (tasks on the same sources share
    one archive). None for a record without sources on disk (reasoning records carry their table in the prompt)."""
    if not record.sources or record.kind == "reasoning":
        return None
    if sources_root is None:
        raise ExportError(f"record {record.id}: cannot find its sources (no config.yaml with `sources` beside the "
                          "records; pass --sources DIR)")
    files = [(ref.name, _source_path(sources_root, ref.name, ref.sha256, record.id)) for ref in record.sources]
    key = hashlib.sha256("\n".join(sorted(ref.sha256 for ref in record.sources)).encode()).hexdigest()[:20]
    archive = folder / f"{key}.tar.gz"
    if archive.is_file():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".part")
    with tarfile.open(partial, "w:gz") as tar:
        for name, path in files:
            tar.add(path, arcname=name, recursive=True)
    partial.replace(archive)
    return archive


def _source_path(root: Path, name: str, sha256: str, record_id: str) -> Path:
    root = root.expanduser()
    if root.is_file():
        candidate = root if root.name == name else None
    else:
        candidate = root / name
    if candidate is None or not candidate.exists():
        raise ExportError(f"record {record_id}: source {name!r} not found under {root}")
    if candidate.is_file() and candidate.stat().st_size <= _FULL_HASH_LIMIT:
        from synth.hashing import path_sha256

        if path_sha256(candidate) != sha256:
            raise ExportError(f"record {record_id}: source {candidate} changed since the run (sha256 differs); "
                              "the task's reference answer may no longer hold")
    return candidate


# --- writing ---------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    out: Path
    format: str
    rows: int
    workspaces: int = 0


def export(paths: Sequence[Path | str], fmt: str, out: Path | str, *, kind: str | None = None,
           sources_root: Path | str | None = None) -> ExportResult:
    """Export the records of run directories / records files to `out` in format `fmt`."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    runs = load_runs(paths, kind=kind, sources_root=sources_root)
    for run in runs:
        if _inside(out, run.origin if run.origin.is_dir() else run.origin.parent) and out.name in (
                "records.jsonl", "rejected.jsonl", "config.yaml", "stats.json"):
            raise ExportError(f"--out {out} would overwrite a run file; choose another path")
    records = [(run, r) for run in runs for r in run.records]
    if fmt == "sft":
        rows = [sft_row(r) for _, r in records]
        write_rows(rows, out, default="parquet")
        return ExportResult(out, fmt, len(rows))
    if fmt == "swift":
        rows = [swift_row(r) for _, r in records]
        write_rows(rows, out, default="jsonl", allowed=("jsonl", "json"))
        return ExportResult(out, fmt, len(rows))
    if fmt == "raw":
        rows = [r.model_dump(mode="json") for _, r in records]
        write_rows(rows, out, default="jsonl")
        return ExportResult(out, fmt, len(rows))
    rows, archives = rl_rows(records, out.parent)
    write_rows(rows, out, default="parquet", allowed=("parquet",))
    return ExportResult(out, fmt, len(rows), workspaces=len(archives))


def rl_rows(records: Iterable[tuple[RunRecords, Record]], folder: Path) -> tuple[list[dict[str, Any]], set[Path]]:
    """rl rows for (run, record) pairs; workspace archives go to `folder/workspaces/`."""
    rows, archives = [], set()
    for run, record in records:
        archive = build_workspace(record, run.sources_root, folder / WORKSPACES_DIR)
        if archive is not None:
            archives.add(archive)
        workspace = archive.relative_to(folder).as_posix() if archive is not None else None
        rows.append(rl_row(record, workspace=workspace, max_turns=run.max_turns))
    return rows, archives


def write_rows(rows: list[dict[str, Any]], out: Path, *, default: str,
               allowed: tuple[str, ...] = ("parquet", "jsonl", "json")) -> None:
    """Write rows as Parquet (.parquet), JSON lines (.jsonl) or one JSON array (.json), chosen by extension."""
    suffix = out.suffix.lower().lstrip(".") or default
    if suffix not in allowed:
        raise ExportError(f"--out {out}: unsupported extension .{suffix}; use one of "
                          + ", ".join(f".{a}" for a in allowed))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    if suffix == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows) if rows else pa.table({})
        pq.write_table(table, partial)
    elif suffix == "jsonl":
        with open(partial, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        partial.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    partial.replace(out)


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """Read back rows written by `write_rows`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


__all__ = [
    "ExportError", "ExportResult", "RunRecords", "FORMATS", "load_runs", "sft_row", "swift_row", "rl_row",
    "rl_rows", "decode_reward_spec", "build_workspace", "export", "write_rows", "read_rows",
]
