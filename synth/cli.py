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
    force: bool = typer.Option(False, "--force", help="Overwrite demo files that already exist."),
) -> None:
    """Write a small multi-format example source folder built from data bundled with scikit-learn."""
    from synth.sources.demo import write_demo_sources

    try:
        written = write_demo_sources(directory, force=force)
    except (FileExistsError, NotADirectoryError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
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


@app.command("generate")
def generate(
    sources: Optional[Path] = typer.Option(None, "--sources", help="Directory (or file) of data sources; never written to."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/run-<time>)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Episodes to run (default: sources × categories × difficulties)."),
    categories: Optional[List[str]] = typer.Option(None, "--categories", help="Task categories (repeat or comma-separate)."),
    difficulties: Optional[List[str]] = typer.Option(None, "--difficulties", help="easy, medium, hard (repeat or comma-separate)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec for every role (default: embedded)."),
    questioner_model: Optional[str] = typer.Option(None, "--questioner-model", help="Model spec for the questioner."),
    solver_model: Optional[str] = typer.Option(None, "--solver-model", help="Model spec for the solver."),
    inspector_model: Optional[str] = typer.Option(None, "--inspector-model", help="Model spec for the inspector."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Episodes run at once."),
    mode: Optional[str] = typer.Option(None, "--mode", help="script | session"),
    max_revisions: Optional[int] = typer.Option(None, "--max-revisions", help="Solver revisions after inspector feedback."),
    max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="Agent rounds per solve attempt."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the episode plan."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (e.g. a run's config.yaml); options given here win."),
    roles: Optional[Path] = typer.Option(None, "--roles", help="Directory of role YAML overriding the built-ins."),
    checklists: Optional[Path] = typer.Option(None, "--checklists", help="Directory of checklist YAML overriding the built-ins."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Synthesize interaction trajectories from the sources: propose → solve → inspect → accept/revise/reject."""
    from synth.run import generate_command

    options = dict(
        sources=sources, out=out, limit=limit, categories=_split_list(categories),
        difficulties=_split_list(difficulties), model=model, questioner_model=questioner_model,
        solver_model=solver_model, inspector_model=inspector_model, base_url=base_url, concurrency=concurrency,
        mode=mode, max_revisions=max_revisions, max_rounds=max_rounds, resume=resume or None, seed=seed,
        roles=roles, checklists=checklists, backend=backend,
    )
    raise typer.Exit(generate_command(options, config_path=config))


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command("analyze")
def analyze(
    question: str = typer.Argument(..., help="What to find out, in plain words."),
    data: List[Path] = typer.Option([], "--data", help="Data file or directory (repeatable); copied into the workspace."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    max_rounds: int = typer.Option(30, "--max-rounds", min=1, help="Model turns at most."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per code cell."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write report.md, trajectory.json and created files here."),
    as_json: bool = typer.Option(False, "--json", help="Print {answer, turns, stop_reason, trajectory, usage}."),
    backend: str = typer.Option("local", "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Answer QUESTION about the --data files with the five-action agent in a fresh sandbox."""
    from synth.agent import analyze_command

    raise typer.Exit(
        analyze_command(question, list(data), model_spec=model, mode=mode, max_rounds=max_rounds,
                        cell_timeout_s=timeout, out=out, as_json=as_json, backend=backend)
    )


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
