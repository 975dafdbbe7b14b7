"""`synth demo-sources DIR`: a small multi-format example source folder (from data scikit-learn ships)."""

from __future__ import annotations

from pathlib import Path

import typer

from synth.commands import print_error


def command(
    directory: Path = typer.Argument(..., help="Where to write the example sources (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite demo files that already exist."),
) -> None:
    """Write a small multi-format example source folder built from data bundled with scikit-learn."""
    from synth.sources.demo import write_demo_sources

    try:
        written = write_demo_sources(directory, force=force)
    except (FileExistsError, NotADirectoryError) as err:
        print_error(err)
        raise typer.Exit(1)
    for path in written:
        typer.echo(str(path))
