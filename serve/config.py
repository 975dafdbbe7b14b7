"""Settings of `synth serve` (one pydantic model; the CLI flags map onto it one to one)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8200, ge=0, le=65535)
    model: str | None = Field(None, description="Model spec (default: $DS_SYNTH_MODEL, else embedded).")
    base_url: str | None = Field(None, description="Base URL for openai:… specs (e.g. a vLLM server).")
    mode: Literal["script", "session"] = "script"
    max_rounds: int = Field(30, ge=1, description="Model turns per request at most.")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per code cell.")
    max_tokens_per_turn: int = Field(2048, ge=16, description="Tokens the model may write per turn at most.")
    workspace_root: Path | None = Field(
        None, description="Where uploaded files and thread workspaces live (default: a temporary directory)."
    )
    api_key: str | None = Field(None, description="When set, /v1/* needs `Authorization: Bearer <key>`.")
    max_upload_mb: float = Field(100.0, gt=0, description="Largest request body (uploads included), in MB.")
    max_concurrent: int = Field(4, ge=1, description="Agent episodes running at once.")
    max_queued: int = Field(64, ge=0, description="Episodes waiting for a slot; past this a request gets 429.")
    thread_ttl_s: float = Field(3600.0, gt=0, description="Idle seconds before a thread's workspace is removed.")
    cleanup_interval_s: float = Field(30.0, gt=0, description="How often expired threads are looked for.")
    max_history_chars: int = Field(24_000, ge=1_000, description="Earlier conversation shown to the model, at most.")
    sandbox: Literal["local", "docker"] = "local"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
