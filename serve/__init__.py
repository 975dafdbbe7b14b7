"""The agent as a service: an OpenAI-compatible HTTP API with file upload, streaming and a web page (DESIGN §12).

    from serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="openai:NAME", base_url="http://127.0.0.1:8000/v1"))

`synth serve` runs it with uvicorn. FastAPI and friends come with the `serve` extra and are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serve.config import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServeConfig", "create_app", "serve_command"]

_FLAGS = {"cell_timeout_s": "--cell-timeout", "thread_ttl_s": "--thread-ttl"}


def create_app(config: ServeConfig | None = None, **kwargs: Any) -> "FastAPI":
    from serve.app import create_app as _create_app

    return _create_app(config, **kwargs)


def serve_command(options: dict[str, Any]) -> int:
    """`synth serve`: check the options, then run the app with uvicorn until interrupted. Exit code."""
    import sys

    from pydantic import ValidationError

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
