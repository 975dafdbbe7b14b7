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

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig | None = None, **kwargs: Any) -> "FastAPI":
    from serve.app import create_app as _create_app

    return _create_app(config, **kwargs)
