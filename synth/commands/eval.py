"""`synth eval --bench NAME --data PATH --model SPEC`: benchmark items through the agent loop, official scoring."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError


def evaluate(options: dict[str, Any], *, model: Any = None, sandbox: Any = None) -> int:
    """0 when every item was scored, 1 when some failed (rerun to retry them), 2 on bad input."""
    from rich.console import Console
    from rich.markup import escape

    from synth.errors import SynthError
    from train.eval.runner import EvalConfig, run_eval

    err = Console(stderr=True, soft_wrap=True)
    try:
        config = EvalConfig(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        err.print(f"[red]error:[/red] --{'-'.join(str(p) for p in first['loc']).replace('_', '-')}: "
                  f"{escape(first['msg'])}")
        return 2
    if not config.data.exists():
        err.print(f"[red]error:[/red] --data {escape(str(config.data))}: no such file or directory")
        return 2
    try:
        summary = asyncio.run(run_eval(config, model=model, sandbox=sandbox))
    except (SynthError, ValueError, ImportError) as exc:  # bad data, spec or backend: one line
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        return 130
    return 1 if summary["overall"]["errors"] else 0


def command(
    bench: str = typer.Option(..., "--bench", help="infiagent | wikitq | tablebench | ds1000"),
    data: Path = typer.Option(..., "--data", help="The benchmark's file or folder; only read."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate the first N items."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Items run at once (default 2)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder; rerun with the same --out to resume."),
    mode: Optional[str] = typer.Option(None, "--mode", help="script | session"),
    max_rounds: Optional[int] = typer.Option(None, "--max-rounds", help="Agent rounds per item (default 20)."),
    max_tokens_per_turn: Optional[int] = typer.Option(None, "--max-tokens-per-turn",
                                                      help="Tokens the model may write per round (default 1024)."),
    cell_timeout: Optional[float] = typer.Option(None, "--cell-timeout", help="Wall-clock seconds per code cell."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Run the agent on benchmark items and score them with the benchmark's official rules."""
    raise typer.Exit(evaluate(dict(
        bench=bench, data=data, model=model, base_url=base_url, limit=limit, concurrency=concurrency, out=out,
        mode=mode, max_rounds=max_rounds, max_tokens_per_turn=max_tokens_per_turn, cell_timeout_s=cell_timeout,
        backend=backend,
    )))
