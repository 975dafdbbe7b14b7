"""`synth publish RUN… (--to DIR | --repo-id ORG/NAME)`: a Hugging Face dataset with its card."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from synth.commands import print_error


def publish(run_dirs: Sequence[Path], *, to: Path | None = None, repo_id: str | None = None,
            private: bool = False, dedup: bool = False, decontaminate: Sequence[Path] = (),
            license: str = "apache-2.0") -> int:
    from synth.errors import SynthError

    if (to is None) == (repo_id is None):
        print_error("give exactly one of --to DIR or --repo-id ORG/NAME")
        return 1
    from synth.dataset.publish import publish_hub, publish_local

    options = dict(dedup=dedup, decontaminate=list(decontaminate), license=license)
    try:
        if to is not None:
            result = publish_local(run_dirs, to, **options)
            where = str(to)
        else:
            result = publish_hub(run_dirs, repo_id, private=private, log=lambda m: print(m, file=sys.stderr),
                                 **options)
            where = f"https://huggingface.co/datasets/{repo_id}"
    except SynthError as exc:
        print_error(exc)
        return 1
    if result.filter_summary:
        print(result.filter_summary)
    print(", ".join(f"{name}: {n} rows" for name, n in result.rows.items()) + f" -> {where}")
    return 0


def command(
    runs: List[Path] = typer.Argument(..., help="Run directories (generate and/or refine runs)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Write the dataset (data/<config>/*.parquet + README.md) here."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Push to this Hub dataset repo (token from HF_TOKEN)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
    dedup: bool = typer.Option(False, "--dedup", help="Remove exact and near-duplicate instructions first."),
    decontaminate: Optional[List[Path]] = typer.Option(None, "--decontaminate", help="Benchmark question file; repeatable."),
    license: str = typer.Option("apache-2.0", "--license", help="License for the card (an existing card's wins)."),
) -> None:
    """Publish runs as a Hugging Face dataset with configs interaction, reasoning and rl, and a dataset card."""
    raise typer.Exit(publish(list(runs), to=to, repo_id=repo_id, private=private, dedup=dedup,
                             decontaminate=decontaminate or [], license=license))
