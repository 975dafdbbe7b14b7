"""`synth report RUN [--html OUT]`: what a run produced and why episodes were rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.commands import print_error


def report(run_dir: Path, *, html: Path | None = None) -> int:
    from synth.dataset.report import ReportError, build_report, print_summary, write_html

    try:
        built = build_report(run_dir)
    except ReportError as exc:
        print_error(exc)
        return 1
    print_summary(built)
    if html is not None:
        print(f"html report: {write_html(built, html)}")
    return 0


def command(
    run: Path = typer.Argument(..., help="Run directory."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
) -> None:
    """Summarise a run: acceptance, failed checklist items, revisions, tokens, cost, histograms, examples."""
    raise typer.Exit(report(run, html=html))
