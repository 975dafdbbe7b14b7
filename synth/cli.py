"""The `synth` command line: the Typer app. Each command lives in a module of its own under synth/commands/."""

from __future__ import annotations

import typer

from synth.commands import (
    analyze,
    demo,
    eval,
    experiment,
    export,
    filter,
    generate,
    inspect,
    publish,
    refine,
    report,
    sandbox,
    serve,
    sources,
    train,
)

app = typer.Typer(
    name="synth",
    help="Synthesize agentic data-science training data from real sources, train on it, serve the agent.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sources_app = typer.Typer(help="Discover and profile data sources.", no_args_is_help=True)
sources_app.command("profile")(sources.command)
sandbox_app = typer.Typer(help="Run code in the sandbox the agents use.", no_args_is_help=True)
sandbox_app.command("exec")(sandbox.command)
app.add_typer(sources_app, name="sources")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(train.app, name="train")

app.command("demo-sources")(demo.command)
app.command("generate")(generate.command)
app.command("refine")(refine.command)
app.command("analyze")(analyze.command)
app.command("serve")(serve.command)
app.command("export")(export.command)
app.command("filter")(filter.command)
app.command("report")(report.command)
app.command("publish")(publish.command)
app.command("eval")(eval.command)
app.command("experiment")(experiment.command)
app.command("inspect")(inspect.command)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
