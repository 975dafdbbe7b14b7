"""`synth sources profile DIR`: print DataCards as a rich summary or as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Union

import typer

from synth.sources.card import DataCard, SourceError


def profile(directory: Path, as_json: bool = False, use_cache: bool = True) -> int:
    """Exit code: 0 if at least one source was profiled, 1 if none could be (reason on stderr), 2 if DIR is missing."""
    from synth.sources.profile import profile_all

    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        print(f"error: no such directory or file: {directory}", file=sys.stderr)
        return 2
    try:
        results = profile_all(directory, use_cache=use_cache)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    cards = [r for r in results if isinstance(r, DataCard)]
    if as_json:
        print(json.dumps([r.summary_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        _print_summary(directory, results)
    if not cards:
        reason = "no data sources found" if not results else f"all {len(results)} source(s) failed to profile"
        print(f"error: {reason} in {directory}", file=sys.stderr)
        return 1
    return 0


def _print_summary(directory: Path, results: list[Union[DataCard, SourceError]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(title=f"Sources in {directory}", show_lines=False)
    for header, justify in (("source", "left"), ("kind", "left"), ("table", "left"), ("rows", "right"),
                            ("cols", "right"), ("notes", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for result in results:
        if isinstance(result, SourceError):
            table.add_row(Path(result.path).name, "[red]error[/red]", "", "", "", f"[red]{result.message}[/red]")
            continue
        if not result.tables:
            docs = ", ".join(f"{d.lines} lines" for d in result.documents)
            table.add_row(result.name, result.kind, "", "", "", "; ".join([docs] + result.notes))
        for i, t in enumerate(result.tables):
            rows = f"~{t.rows:,}" if t.rows_approx else f"{t.rows:,}"
            notes = ["view" if t.is_view else ""] + [f"{len(t.foreign_keys)} FK" if t.foreign_keys else ""]
            notes += ["approx stats" if t.stats_approx else ""] + t.notes + (result.notes if i == 0 else [])
            table.add_row(
                result.name if i == 0 else "",
                result.kind if i == 0 else "",
                t.name,
                rows,
                str(len(t.columns)),
                "; ".join(n for n in notes if n),
            )
    console.print(table)
    n_ok = sum(isinstance(r, DataCard) for r in results)
    console.print(f"{n_ok} source(s) profiled, {len(results) - n_ok} failed")


def command(
    directory: Path = typer.Argument(..., help="Directory (or single file) of data sources."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ignore the profile cache."),
) -> None:
    """Profile every data source under DIRECTORY into DataCards."""
    raise typer.Exit(profile(directory, as_json=as_json, use_cache=not no_cache))
