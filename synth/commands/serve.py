"""`synth serve`: the agent behind an OpenAI-compatible API and a web page (the work is in serve/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError

_FLAGS = {"cell_timeout_s": "--cell-timeout", "thread_ttl_s": "--thread-ttl"}


def serve(options: dict[str, Any]) -> int:
    """Check the options, then run the app with uvicorn until interrupted. Exit code."""
    from serve.config import ServeConfig

    try:
        config = ServeConfig(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else ""
        where = _FLAGS.get(name, "--" + name.replace("_", "-")) if name else "options"
        print(f"error: {where}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        from synth.llm import parse_spec

        spec = parse_spec(config.model)
        if config.base_url and spec.backend != "openai":
            raise ValueError(f"--base-url is only for openai:… model specs, not {spec.text!r}")
        import uvicorn

        from serve.app import create_app as _create_app
    except ImportError as exc:
        print(f"error: {exc.name or exc} is not installed; install the serve extra: pip install 'ds-synth[serve]'",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.api_key is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {config.host} without --api-key: anyone who can reach it can run code",
              file=sys.stderr)
    print(f"ds-synth agent on http://{config.host}:{config.port}/  (API: /v1, model: {spec.text})", file=sys.stderr)
    uvicorn.run(_create_app(config), host=config.host, port=config.port, log_level="info")
    return 0


def command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8200, "--port", help="TCP port."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for openai:… specs (e.g. vLLM)."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    max_rounds: int = typer.Option(30, "--max-rounds", help="Model turns per request at most."),
    max_tokens_per_turn: int = typer.Option(2048, "--max-tokens-per-turn", help="Tokens the model may write per "
                                            "turn at most (a request's max_tokens can only lower it)."),
    cell_timeout: float = typer.Option(60.0, "--cell-timeout", help="Wall-clock seconds per code cell."),
    workspace_root: Optional[Path] = typer.Option(None, "--workspace-root", help="Where files and thread workspaces live (default: a temp dir)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="DS_SYNTH_SERVE_API_KEY", help="Require `Authorization: Bearer KEY` on /v1."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest request body / upload, in MB."),
    max_concurrent: int = typer.Option(4, "--max-concurrent", help="Agent episodes running at once."),
    max_queued: int = typer.Option(64, "--max-queued", help="Episodes waiting for a slot before 429."),
    thread_ttl: float = typer.Option(3600.0, "--thread-ttl", help="Idle seconds before a thread's workspace is removed."),
) -> None:
    """Serve the agent: OpenAI-compatible API (/v1/chat/completions, /v1/files) and a web page at /."""
    raise typer.Exit(serve(dict(
        host=host, port=port, model=model, base_url=base_url, mode=mode, max_rounds=max_rounds,
        max_tokens_per_turn=max_tokens_per_turn, cell_timeout_s=cell_timeout, workspace_root=workspace_root, api_key=api_key, max_upload_mb=max_upload_mb,
        max_concurrent=max_concurrent, max_queued=max_queued, thread_ttl_s=thread_ttl,
    )))
