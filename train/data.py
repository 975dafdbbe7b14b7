"""Training data from wherever ds-synth put it: run directories, export files, published dataset folders,
`datasets.save_to_disk` folders, or Hub dataset ids.

    load_sft_rows(["runs/r1", "exports/sft.parquet", "user/ds-synth-data"])  -> [{"id","kind","category",
                                                                                  "messages","execute_spans"}]
    load_rl_rows("exports/rl.parquet")  -> rl rows with `workspace` as an absolute archive path (or None)

Source data is only read, never modified.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from synth.protocol import execute_spans
from train.errors import TrainError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_SFT_CONFIGS = ("reasoning", "interaction")


class DataError(TrainError):
    """Training data that cannot be read; the message names the path or id and the problem."""


# --- sft ---------------------------------------------------------------------------------------------------------


def load_sft_rows(sources: Sequence[str | Path], *, kind: str | None = None) -> list[dict[str, Any]]:
    """Every SFT row of `sources`, normalised to `id, kind, category, messages, execute_spans`.

    A row without `kind` (e.g. an ms-swift export) is `interaction` when its assistant message holds an
    `<Execute>` block, else `reasoning`. `kind` keeps only rows of that kind.
    """
    if not sources:
        raise DataError("no training data given (--data PATH)")
    rows: list[dict[str, Any]] = []
    for source in sources:
        for index, raw in enumerate(_sft_raw_rows(source)):
            rows.append(_normalise_sft(raw, f"{source}: row {index + 1}"))
    if kind is not None:
        rows = [r for r in rows if r["kind"] == kind]
    return rows


def _sft_raw_rows(source: str | Path) -> Iterable[dict[str, Any]]:
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "records.jsonl").is_file():  # a run directory
            return _read_records_file(path / "records.jsonl")
        if _is_saved_dataset(path):
            return _rows_from_saved(path, _SFT_CONFIGS)
        if (path / "data").is_dir():  # a published (Hub-layout) dataset folder
            return _rows_from_published(path, _SFT_CONFIGS)
        raise DataError(f"{path}: not a run directory, a published dataset or a `datasets` folder "
                        "(no records.jsonl, data/ or dataset_info.json)")
    if path.is_file():
        return _read_file(path)
    if _HUB_ID.match(str(source)):
        return _rows_from_published(_hub_snapshot(str(source), _SFT_CONFIGS), _SFT_CONFIGS)
    raise DataError(f"{source}: no such file or directory, and not a Hub dataset id (owner/name)")


def _normalise_sft(raw: dict[str, Any], where: str) -> dict[str, Any]:
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: no `messages` list")
    messages = [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in messages]
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message is {messages[-1]['role']!r}, not the assistant's")
    text = messages[-1]["content"]
    spans = raw.get("execute_spans")
    spans = [[int(s), int(e)] for s, e in spans] if spans is not None else [list(s) for s in execute_spans(text)]
    kind = raw.get("kind") or ("interaction" if spans else "reasoning")
    if kind not in _SFT_CONFIGS:
        raise DataError(f"{where}: kind {kind!r} is neither reasoning nor interaction")
    return {"id": str(raw.get("id") or ""), "kind": kind, "category": str(raw.get("category") or ""),
            "messages": messages, "execute_spans": spans}


# --- rl ----------------------------------------------------------------------------------------------------------


def load_rl_rows(source: str | Path) -> list[dict[str, Any]]:
    """The rows of an rl export (`synth export --format rl`), a published dataset's `rl` config, a `datasets`
    folder, or a Hub id; `workspace` becomes an absolute path to an existing archive (None when the task has
    no files) and `reward_spec` a dict with decoded `ground_truth` and `checklist`."""
    path = Path(source).expanduser()
    if path.is_file():
        rows, base = list(_read_file(path)), path.parent
    elif path.is_dir() and _is_saved_dataset(path):
        rows, base = list(_rows_from_saved(path, ("rl",))), path
    elif path.is_dir() and (path / "data" / "rl").is_dir():
        rows, base = list(_rows_from_published(path, ("rl",))), path / "data" / "rl"
    elif not path.exists() and _HUB_ID.match(str(source)):
        folder = _hub_snapshot(str(source), ("rl",))
        rows, base = list(_rows_from_published(folder, ("rl",))), folder / "data" / "rl"
    else:
        raise DataError(f"{source}: not an rl export file, a published dataset with an rl config, or a Hub id")
    if not rows:
        raise DataError(f"{source}: no rl rows")
    return [_normalise_rl(row, base, f"{source}: row {i + 1}") for i, row in enumerate(rows)]


def _normalise_rl(row: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not isinstance(prompt[-1], dict):
        raise DataError(f"{where}: `prompt` must be a list of messages")
    spec = row.get("reward_spec")
    if not isinstance(spec, dict) or spec.get("method") not in ("qa", "datatask", "openresearch"):
        raise DataError(f"{where}: `reward_spec.method` must be qa, datatask or openresearch")
    try:
        ground_truth = json.loads(spec["ground_truth"]) if isinstance(spec.get("ground_truth"), str) else spec.get(
            "ground_truth")
        checklist = json.loads(spec["checklist"]) if isinstance(spec.get("checklist"), str) else (
            spec.get("checklist") or [])
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: reward_spec holds invalid JSON ({exc})") from None
    workspace = row.get("workspace")
    if workspace:
        archive = (base / workspace) if not Path(workspace).is_absolute() else Path(workspace)
        if not archive.is_file():
            raise DataError(f"{where}: workspace archive {archive} not found")
        workspace = str(archive.resolve())
    return {
        "id": str(row.get("id") or ""),
        "prompt": [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt],
        "reward_spec": {"method": spec["method"], "ground_truth": ground_truth, "checklist": checklist},
        "workspace": workspace or None,
        "max_turns": int(row.get("max_turns") or 30),
        "category": str(row.get("category") or ""),
    }


# --- readers -----------------------------------------------------------------------------------------------------


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; expected .parquet, .jsonl or .json")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON array of rows")
            return data
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except DataError:
        raise
    except Exception as exc:  # a torn or foreign file: one line naming it
        raise DataError(f"{path}: cannot read rows ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None


def _read_records_file(path: Path) -> list[dict[str, Any]]:
    from synth.dataset.export import sft_row
    from synth.dataset.record import read_records

    try:
        return [sft_row(r) for r in read_records(path)]
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _rows_from_saved(path: Path, configs: Sequence[str]) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = [n for n in configs if n in loaded] or list(loaded)
        return [row for name in names for row in loaded[name]]
    return list(loaded)


def _rows_from_published(folder: Path, configs: Sequence[str]) -> list[dict[str, Any]]:
    files = [f for name in configs for f in sorted((folder / "data" / name).glob("*.parquet"))]
    if not files:
        raise DataError(f"{folder}: no parquet files under data/{{{','.join(configs)}}}/")
    return [row for f in files for row in _read_file(f)]


def _hub_snapshot(repo: str, configs: Sequence[str]) -> Path:
    """Download the needed configs of a Hub dataset (ds-synth's publish layout) into the HF cache."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition(":")
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision or None,
                                   allow_patterns=[f"data/{name}/*" for name in configs])
    except Exception as exc:  # network, auth, missing repo: one line
        raise DataError(f"{repo}: cannot download the Hub dataset ({type(exc).__name__}: {exc})") from None
    return Path(folder)


__all__ = ["DataError", "load_sft_rows", "load_rl_rows"]
