"""The `synth` command line. Each command is a thin shell over the engine; heavy imports happen inside."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="synth",
    help="Synthesize agentic data-science training data from real sources, train on it, serve the agent.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sources_app = typer.Typer(help="Discover and profile data sources.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run code in the sandbox the agents use.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(sandbox_app, name="sandbox")


@sources_app.command("profile")
def sources_profile(
    directory: Path = typer.Argument(..., help="Directory (or single file) of data sources."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ignore the profile cache."),
) -> None:
    """Profile every data source under DIRECTORY into DataCards."""
    from synth.sources.commands import profile_command

    raise typer.Exit(profile_command(directory, as_json=as_json, use_cache=not no_cache))


@app.command("demo-sources")
def demo_sources(
    directory: Path = typer.Argument(..., help="Where to write the example sources (created if missing)."),
) -> None:
    """Write a small multi-format example source folder built from data bundled with scikit-learn."""
    from synth.sources.demo import write_demo_sources

    written = write_demo_sources(directory)
    for path in written:
        typer.echo(str(path))


@sandbox_app.command("exec")
def sandbox_exec(
    files: List[Path] = typer.Argument(..., help="Python files, each run as one cell, in order."),
    workspace: Path = typer.Option(..., "--workspace", help="Directory copied into a fresh sandbox workspace."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per cell."),
    backend: str = typer.Option("local", "--backend", help="local | docker"),
) -> None:
    """Run FILES as cells in one sandbox session; print one JSON line per cell."""
    from synth.sandbox.commands import exec_command

    raise typer.Exit(exec_command(files, workspace=workspace, mode=mode, timeout=timeout, backend=backend))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
