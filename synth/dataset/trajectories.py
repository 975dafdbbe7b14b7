"""Where audited trajectories come from: our run dirs and records, ms-swift / TRL `messages`, rl parquet rows.

`read_trajectories(DATA)` turns any of these into `AuditRow`s — one per trajectory, with the user prompt (the
`# Instruction / # Data` format), the ONE assistant message with `<Execute>` inline, and what the row says about
how to check it (execution mode, category, checklist, reference answer, source hashes, its workspace). A row
that cannot be read (not JSON, not UTF-8, no assistant message, too large …) is still yielded, with `error` saying
why, so one bad row never stops an audit.

Accepted inputs:
- a run directory (its records.jsonl; sources from its config.yaml) or a records / rejected JSONL of ours;
- JSONL, JSON (an array or one object) or Parquet rows with `messages` (ms-swift, TRL, our sft/swift exports);
- rows with `prompt` (a string or a message list) and `completion` / `response` (a string or messages);
- our rl parquet: `prompt`, `reward_spec`, `workspace` (an archive beside the parquet) or `workspace_id`;
- a `synth analyze` trajectory.json (`prompt` + `turns`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from synth.errors import SynthError

DEFAULT_MAX_CHARS = 2_000_000  # a row longer than this (prompt + assistant message) is reported, not inspected


class AuditInputError(SynthError, ValueError):
    """The audited data cannot be read at all (no such file, unknown format …); rows that cannot be read are
    reported one by one instead."""


@dataclass
class AuditRow:
    """One trajectory to audit, as read from the input (nothing checked yet)."""

    id: str
    where: str  # "file:line" or "file#row"
    format: str  # record | messages | prompt_completion | rl | trajectory
    prompt: str = ""
    assistant: str | None = None  # None: the row holds no trajectory (e.g. an rl prompt)
    mode: str | None = None  # the execution mode the row records
    category: str | None = None
    checklist: list[dict[str, Any]] | None = None  # the items the row was checked with (ours, rl)
    reference: Any = None
    sources: list[dict[str, str]] = field(default_factory=list)  # recorded {name, sha256} (ours)
    workspace: Path | None = None  # this row's workspace: an archive or a folder (rl)
    workspace_id: str | None = None  # a folder name under --workspaces (upstream rl)
    sources_root: Path | None = None  # where the run that made it found its sources (its config.yaml)
    error: str | None = None  # why this row cannot be inspected


def read_trajectories(data: Path | str, *, max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[AuditRow]:
    """Every row of `data`, in order; see the module docstring for the formats."""
    path = Path(data)
    if not path.exists():
        raise AuditInputError(f"{path}: no such file or directory")
    sources_root = None
    if path.is_dir():
        records = path / "records.jsonl"
        if not records.is_file():
            raise AuditInputError(f"{path}: a directory to inspect must be a run directory (with records.jsonl)")
        sources_root = _run_sources(path / "config.yaml")
        path = records
    elif (path.parent / "config.yaml").is_file() and path.suffix == ".jsonl":
        sources_root = _run_sources(path.parent / "config.yaml")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".json":
        rows = _json_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise AuditInputError(f"{path}: unsupported input {suffix or 'without extension'}; expected a run "
                              "directory, .jsonl, .json or .parquet")
    for where, value, problem in rows:
        if problem is not None:
            yield AuditRow(id=where.rsplit("/", 1)[-1], where=where, format="unknown", error=problem)
            continue
        row = row_to_audit(value, where, base=path.parent, max_chars=max_chars)
        if row.sources_root is None:
            row.sources_root = sources_root
        yield row


def _run_sources(config: Path) -> Path | None:
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    root = data.get("sources") if isinstance(data, dict) else None
    return (config.parent / Path(root).expanduser()) if root else None  # a relative path is the run dir's


# --- files -------------------------------------------------------------------------------------------------------


Raw = tuple[str, Any, str | None]  # (where, decoded value, problem)


def _jsonl_rows(path: Path) -> Iterator[Raw]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path.name}:{number}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, None, f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                torn = "" if raw.endswith(b"\n") else " (a torn last line?)"
                yield where, None, f"not valid JSON ({exc.msg} at column {exc.colno}){torn}"
                continue
            yield where, value, None


def _json_rows(path: Path) -> Iterator[Raw]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AuditInputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                              "one trajectory per line belongs in a .jsonl file") from None
    items = value if isinstance(value, list) else [value]
    for number, item in enumerate(items, start=1):
        yield f"{path.name}#{number}", item, None


def _parquet_rows(path: Path) -> Iterator[Raw]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise AuditInputError(f"{path}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in table.iter_batches(batch_size=256):
        for value in batch.to_pylist():
            number += 1
            yield f"{path.name}#{number}", value, None


# --- rows --------------------------------------------------------------------------------------------------------


def row_to_audit(value: Any, where: str, *, base: Path, max_chars: int = DEFAULT_MAX_CHARS) -> AuditRow:
    """One decoded row as an AuditRow (with `error` when it is not a trajectory we can read)."""
    row_id = where
    if not isinstance(value, dict):
        return AuditRow(id=row_id, where=where, format="unknown",
                        error=f"expected a JSON object, got {type(value).__name__}")
    try:
        audit = _read_row(value, where, base)
    except _RowError as exc:
        return AuditRow(id=str(value.get("id") or row_id), where=where, format="unknown", error=str(exc))
    size = len(audit.prompt) + len(audit.assistant or "")
    if size > max_chars:
        return AuditRow(id=audit.id, where=where, format=audit.format,
                        error=f"row too large: {size:,} characters (limit {max_chars:,}; see --max-chars)")
    return audit


class _RowError(ValueError):
    pass


def _read_row(value: dict[str, Any], where: str, base: Path) -> AuditRow:
    row_id = str(value.get("id") or value.get("episode_id") or where)
    if "reward_spec" in value and "kind" in value and "messages" in value:
        return _record_row(value, where)
    if "trajectory" in value and value["trajectory"] is None and "episode_id" in value:
        raise _RowError(f"a rejected episode that never produced a trajectory ({str(value.get('reason'))[:120]})")
    if isinstance(value.get("trajectory"), dict):  # a rejected row of ours
        row = _trajectory_row(value["trajectory"], where, row_id)
        row.category = value.get("category")
        return row
    if "turns" in value and "prompt" in value:
        return _trajectory_row(value, where, row_id)
    if "messages" in value:
        prompt, assistant = _conversation(value["messages"])
        return AuditRow(id=row_id, where=where, format="messages", prompt=prompt, assistant=assistant,
                        mode=_mode(value.get("mode")), category=value.get("category"))
    if "prompt" in value:
        return _prompt_row(value, where, row_id, base)
    raise _RowError(f"no trajectory here: expected `messages`, `prompt` (+ `completion`) or `turns`, got keys "
                    f"{', '.join(sorted(map(str, value))[:8]) or 'none'}")


def _mode(value: Any) -> str | None:
    return value if value in ("script", "session") else None


def _record_row(value: dict[str, Any], where: str) -> AuditRow:
    from pydantic import ValidationError

    from synth.dataset.record import Record

    try:
        record = Record.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(x) for x in first["loc"]) or "record"
        raise _RowError(f"not a valid record ({at}: {first['msg']})") from None
    return AuditRow(
        id=record.id, where=where, format="record", prompt=record.prompt, assistant=record.completion,
        mode=record.mode, category=record.category,
        checklist=[item.model_dump(mode="json") for item in record.checklist] or None,
        reference=record.reference, sources=[{"name": s.name, "sha256": s.sha256} for s in record.sources],
    )


def _trajectory_row(value: dict[str, Any], where: str, row_id: str) -> AuditRow:
    from synth.trajectory import Trajectory

    try:
        trajectory = Trajectory.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise _RowError(f"not a readable trajectory ({type(exc).__name__}: {exc})") from None
    return AuditRow(id=row_id, where=where, format="trajectory", prompt=trajectory.prompt,
                    assistant=trajectory.assistant_text(), mode=trajectory.mode)


def _content(message: Any, at: str) -> str:
    if not isinstance(message, dict) or "role" not in message:
        raise _RowError(f"{at}: a message must be an object with `role` and `content`")
    content = message.get("content")
    if isinstance(content, list):  # OpenAI-style content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise _RowError(f"{at}: `content` must be text, got {type(content).__name__}")
    return content


def _conversation(messages: Any) -> tuple[str, str | None]:
    """(user prompt, the one assistant message) of a conversation; system messages are skipped."""
    if not isinstance(messages, list) or not messages:
        raise _RowError("`messages` must be a non-empty list")
    turns = [(m.get("role") if isinstance(m, dict) else None, _content(m, f"message {n}"))
             for n, m in enumerate(messages, start=1)]
    turns = [(role, text) for role, text in turns if role != "system"]
    roles = [role for role, _ in turns]
    if roles == ["user"]:
        return turns[0][1], None
    if roles != ["user", "assistant"]:
        raise _RowError(f"expected one user prompt and ONE assistant message (Execute inline), got roles "
                        f"{roles}; multi-turn logs must be assembled into one assistant message first")
    return turns[0][1], turns[1][1]


def _prompt_row(value: dict[str, Any], where: str, row_id: str, base: Path) -> AuditRow:
    raw_prompt = value["prompt"]
    if isinstance(raw_prompt, list):
        prompt, assistant = _conversation(raw_prompt)
    elif isinstance(raw_prompt, str):
        prompt, assistant = raw_prompt, None
    else:
        raise _RowError(f"`prompt` must be text or a message list, got {type(raw_prompt).__name__}")
    completion = value.get("completion", value.get("response"))
    if completion is not None:
        if isinstance(completion, list):
            texts = [_content(m, "completion") for m in completion
                     if isinstance(m, dict) and m.get("role") == "assistant"]
            if len(texts) != 1:
                raise _RowError(f"`completion` must hold ONE assistant message, got {len(texts)}")
            assistant = texts[0]
        elif isinstance(completion, str):
            assistant = completion
        else:
            raise _RowError(f"`completion` must be text or a message list, got {type(completion).__name__}")
    spec = value.get("reward_spec") if isinstance(value.get("reward_spec"), dict) else None
    workspace = value.get("workspace")
    return AuditRow(
        id=row_id, where=where, format="rl" if spec is not None or workspace else "prompt_completion",
        prompt=prompt, assistant=assistant, mode=_mode(value.get("mode")), category=value.get("category"),
        checklist=_items_or_none(_json_field(spec, "checklist")) if spec else None,
        reference=_json_field(spec, "ground_truth") if spec else None,
        workspace=(base / workspace) if isinstance(workspace, str) and workspace else None,
        workspace_id=str(value["workspace_id"]) if value.get("workspace_id") not in (None, "") else None,
    )


def _items_or_none(value: Any) -> list[dict[str, Any]] | None:
    return value if isinstance(value, list) and all(isinstance(v, dict) for v in value) else None


def _json_field(spec: dict[str, Any], key: str) -> Any:
    """A reward_spec field: ours are JSON strings (see synth.dataset.export.rl_row), upstream's plain values."""
    raw = spec.get(key)
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


__all__ = ["AuditRow", "AuditInputError", "DEFAULT_MAX_CHARS", "read_trajectories", "row_to_audit"]
