"""`synth publish`: runs → a Hugging Face dataset with configs `interaction`, `reasoning` and `rl` and a card.

The dataset is staged in the Hub's folder layout (data/<config>/train-*.parquet, rl workspace archives under
data/rl/workspaces/, README.md), which is what `--to DIR` writes and what `--repo-id` uploads, so
`datasets.load_dataset(DIR_OR_REPO, config)` reads each config. Hub calls are retried on transient failures
(connection errors, timeouts, 408/429/5xx) with exponential backoff.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from synth.dataset.card import build_card
from synth.dataset.export import ExportError, load_runs, rl_rows, sft_row
from synth.dataset.filters import FilterConfig, FilterError, filter_records
from synth.errors import SynthError

CONFIGS = ("interaction", "reasoning", "rl")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
T = TypeVar("T")


class PublishError(SynthError, RuntimeError):
    """Publishing failed (bad input, or the Hub refused for a non-transient reason); one line saying why."""


@dataclass
class PublishedDataset:
    folder: Path
    rows: dict[str, int]
    card: str
    filter_summary: str = ""
    datasets: dict[str, Any] = field(default_factory=dict)  # config -> datasets.DatasetDict


def _record_row(record: Any) -> dict[str, Any]:
    row = sft_row(record)
    row.update(difficulty=record.difficulty, variant=record.variant,
               sources=[s.name for s in record.sources], revisions=record.revisions)
    return row


def build_dataset(run_dirs: Sequence[Path | str], folder: Path, *, dedup: bool = False,
                  decontaminate: Sequence[Path] = (), license: str = "apache-2.0",
                  existing_card: str | None = None) -> PublishedDataset:
    """Stage the dataset in `folder` (Hub layout) and return a `datasets.DatasetDict` per non-empty config."""
    from datasets import Dataset, DatasetDict

    runs = load_runs(run_dirs)
    pairs = [(run, r) for run in runs for r in run.records]
    summary = ""
    if dedup or decontaminate:
        kept, report = filter_records([r for _, r in pairs], FilterConfig(dedup=dedup,
                                                                           decontaminate=list(decontaminate)))
        keep = {id(r) for r in kept}
        pairs = [(run, r) for run, r in pairs if id(r) in keep]
        summary = report.summary()
    data = folder / "data"
    for name in CONFIGS:
        shutil.rmtree(data / name, ignore_errors=True)  # a previous publish's files would mix in
    rows: dict[str, list[dict[str, Any]]] = {
        "interaction": [_record_row(r) for _, r in pairs if r.kind == "interaction"],
        "reasoning": [_record_row(r) for _, r in pairs if r.kind == "reasoning"],
    }
    rows["rl"] = rl_rows(pairs, data / "rl")[0] if pairs else []
    datasets: dict[str, Any] = {}
    for name, config_rows in rows.items():
        if not config_rows:
            continue
        dataset_dict = DatasetDict({"train": Dataset.from_list(config_rows)})
        (data / name).mkdir(parents=True, exist_ok=True)
        dataset_dict["train"].to_parquet(str(data / name / "train-00000-of-00001.parquet"))
        datasets[name] = dataset_dict
    counts = {name: len(datasets[name]["train"]) for name in CONFIGS if name in datasets}
    if not counts:
        raise PublishError("no records to publish (the runs are empty, or every record was filtered out)")
    stats = _stats(pairs, counts)
    run_configs = []
    for run in runs:
        config_path = (run.origin if run.origin.is_dir() else run.origin.parent) / "config.yaml"
        if config_path.is_file():
            run_configs.append((run.origin.name, config_path.read_text(encoding="utf-8")))
    try:
        card = build_card(counts, stats=stats, run_configs=run_configs, existing=existing_card, license=license,
                          filter_summary=summary)
    except ValueError as exc:
        raise PublishError(str(exc)) from None
    (folder / "README.md").write_text(card, encoding="utf-8")
    return PublishedDataset(folder=folder, rows=counts, card=card, filter_summary=summary, datasets=datasets)


def _stats(pairs: list[tuple[Any, Any]], counts: dict[str, int]) -> dict[str, Any]:
    from collections import Counter

    records = [r for _, r in pairs]
    usage: Counter = Counter()
    for r in records:
        for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
            if isinstance(r.usage.get(key), (int, float)):
                usage[key] += r.usage[key]
    return {
        "rows per config": counts,
        "records by category": dict(Counter(r.category for r in records).most_common()),
        "records by difficulty": dict(Counter(r.difficulty or "-" for r in records).most_common()),
        "reasoning variants": dict(Counter(r.variant for r in records if r.kind == "reasoning").most_common()),
        "generation tokens": f"{int(usage['prompt_tokens']):,} prompt + {int(usage['completion_tokens']):,} completion",
        "generation cost (USD)": round(usage["cost_usd"], 4),
    }


# --- local -----------------------------------------------------------------------------------------------------


def publish_local(run_dirs: Sequence[Path | str], to: Path | str, **options: Any) -> PublishedDataset:
    """Write the dataset to `to`; an existing README.md there is merged, not clobbered."""
    to = Path(to)
    for raw in run_dirs:
        run = Path(raw)
        if to.resolve() == run.resolve() or run.resolve() in to.resolve().parents:
            raise PublishError(f"--to {to} is inside the run {run}; choose a folder outside it")
    readme = to / "README.md"
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else None
    to.mkdir(parents=True, exist_ok=True)
    return build_dataset(run_dirs, to, existing_card=existing, **options)


# --- Hub -------------------------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: dropped connections, timeouts, 408/425/429/5xx answers."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None) -> T:
    """Call `fn`, retrying transient failures with exponential backoff (base_delay · 2^k); others raise at once."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            if log:
                log(f"{what}: transient failure ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
                    f"retry {attempt}/{attempts - 1} in {delay:.0f}s")
            sleep(delay)
    raise AssertionError("unreachable")


def _existing_card(api: Any, repo_id: str, retry: Callable[..., Any]) -> str | None:
    def fetch() -> str | None:
        try:
            path = api.hf_hub_download(repo_id=repo_id, filename="README.md", repo_type="dataset")
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 404 or type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError",
                                                       "RepositoryNotFoundError"):
                return None
            raise
        return Path(path).read_text(encoding="utf-8")

    return retry(fetch, what="download the existing dataset card")


def publish_hub(run_dirs: Sequence[Path | str], repo_id: str, *, private: bool = False, api: Any = None,
                token: str | None = None, sleep: Callable[[float], None] = time.sleep,
                log: Callable[[str], None] | None = None, attempts: int = 5, **options: Any) -> PublishedDataset:
    """Build the dataset and upload it to the Hub dataset repo `repo_id` (token: `token`, else HF_TOKEN).
    `api` replaces `huggingface_hub.HfApi` (tests inject one)."""
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))

    def retry(fn: Callable[[], T], *, what: str) -> T:
        return with_retries(fn, what=what, attempts=attempts, sleep=sleep, log=log)

    try:
        retry(lambda: api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True),
              what=f"create {repo_id}")
        existing = _existing_card(api, repo_id, retry)
        with tempfile.TemporaryDirectory(prefix="ds-synth-publish-") as tmp:
            published = build_dataset(run_dirs, Path(tmp), existing_card=existing, **options)
            retry(lambda: api.upload_folder(folder_path=tmp, repo_id=repo_id, repo_type="dataset",
                                            commit_message="Publish ds-synth dataset"),
                  what=f"upload to {repo_id}")
    except (PublishError, ExportError, FilterError):
        raise
    except Exception as exc:
        raise PublishError(f"Hub {repo_id}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    return published


__all__ = ["CONFIGS", "PublishError", "PublishedDataset", "build_dataset", "publish_local", "publish_hub",
           "is_transient", "with_retries"]
