"""`synth filter RUN… --out FILE`: selection, near-duplicate removal and benchmark decontamination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer
from pydantic import ValidationError

from synth.commands import print_error


def filter_runs(paths: Sequence[Path], out: Path, options: dict[str, Any]) -> int:
    """Filter the records of runs into `out` (records JSONL); print the report and write it to
    `<out>.report.json`."""
    from synth.dataset.export import load_runs
    from synth.dataset.filters import FilterConfig, FilterError, filter_records
    from synth.dataset.record import write_records
    from synth.errors import SynthError

    try:
        config = FilterConfig.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        print_error(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
        return 1
    try:
        if out.suffix.lower() != ".jsonl":
            raise FilterError(f"--out {out}: the filtered records are written as JSON lines; use a .jsonl path")
        runs = load_runs(paths)
        for run in runs:
            source = run.origin / "records.jsonl" if run.origin.is_dir() else run.origin
            if source.resolve() == out.resolve():
                raise FilterError(f"--out {out} is an input records file; source data is never modified")
        records = [r for run in runs for r in run.records]
        kept, report = filter_records(records, config)
    except SynthError as exc:
        print_error(exc)
        return 1
    partial = out.with_name(out.name + ".part")
    partial.unlink(missing_ok=True)
    write_records(partial, kept, append=False)
    partial.replace(out)
    report_path = out.with_name(out.name.removesuffix(".jsonl") + ".report.json")
    report_path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    _copy_config(runs, out)
    print(report.summary())
    print(f"records: {out}  report: {report_path}")
    return 0


def _copy_config(runs: list[Any], out: Path) -> None:
    """Keep the rl export working on the filtered file: it finds sources through a config.yaml beside it."""
    configs = {(r.origin if r.origin.is_dir() else r.origin.parent) / "config.yaml" for r in runs}
    configs = {c for c in configs if c.is_file()}
    target = out.parent / "config.yaml"
    if len(configs) == 1 and not target.exists():
        target.write_bytes(next(iter(configs)).read_bytes())


def command(
    runs: List[Path] = typer.Argument(..., help="Run directories (or records .jsonl files)."),
    out: Path = typer.Option(..., "--out", help="Filtered records (.jsonl); the report goes to <out>.report.json."),
    dedup: bool = typer.Option(False, "--dedup", help="Remove exact and near-duplicate instructions."),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard similarity counted as near-duplicate."),
    decontaminate: Optional[List[Path]] = typer.Option(None, "--decontaminate", help="Benchmark question file (JSONL/TSV/CSV/JSON); repeatable."),
    ngram: int = typer.Option(8, "--ngram", help="Word n-gram size for decontamination."),
    category: Optional[List[str]] = typer.Option(None, "--category", help="Keep only these categories (repeat or comma-separate)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Keep only interaction or reasoning records."),
    min_turns: Optional[int] = typer.Option(None, "--min-turns", help="Fewest model turns."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help="Most model turns."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most (estimated) tokens per conversation."),
    verdict: Optional[str] = typer.Option(None, "--verdict", help="accept: keep only records whose verdict accepted them."),
) -> None:
    """Filter records: selection, dedup, decontamination; prints and saves what was removed and why."""
    from synth.commands.options import given_options

    categories = given_options({"c": category}).get("c")
    options = dict(dedup=dedup, near_dup_threshold=near_dup_threshold, decontaminate=decontaminate or None,
                   ngram=ngram, categories=categories, kind=kind, min_turns=min_turns,
                   max_turns=max_turns, max_tokens=max_tokens, verdict=verdict)
    raise typer.Exit(filter_runs(list(runs), out, options))
