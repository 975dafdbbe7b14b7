"""Language-model backends behind one async ChatModel protocol (DESIGN §6).

    model = load_model("embedded:0.5b")                 # llama.cpp in-process, the default family
    model = load_model("openai:gpt-4o-mini", rpm=500)   # any OpenAI-compatible endpoint
    model = load_model("hf:./checkpoints/sft?family=deepanalyze", cache_path="runs/cache.sqlite")

A spec is `backend[:model][?key=value&…]`; the query options and keyword options are merged (keywords win,
None values are ignored so a CLI can pass its unset flags straight through).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from synth.llm.base import ChatModel, Completion, Message, ModelError, ModelFamily, Usage

__all__ = [
    "ChatModel", "Completion", "Message", "ModelError", "ModelFamily", "Usage", "ModelSpec", "DEFAULT_SPEC",
    "parse_spec", "load_model", "default_spec", "load_role_models",
]

DEFAULT_SPEC = "embedded"
_BACKENDS = ("embedded", "openai", "hf", "vllm")
_ALIASES = {"transformers": "hf", "llamacpp": "embedded"}


@dataclass(frozen=True)
class ModelSpec:
    backend: str  # "embedded" | "openai" | "hf" | "vllm"
    model: str  # size or GGUF path (embedded), model name (openai), local folder (hf, vllm)
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the spec as written, without its options: becomes ChatModel.name


def default_spec() -> str:
    """The spec used when nothing is configured: $DS_SYNTH_MODEL, else the embedded model."""
    return os.environ.get("DS_SYNTH_MODEL") or DEFAULT_SPEC


def parse_spec(spec: str | None) -> ModelSpec:
    """Parse `backend[:model][?key=value&…]`; ValueError naming the spec when it is malformed."""
    raw = (spec or "").strip() or default_spec()
    head, _, query = raw.partition("?")
    options: dict[str, Any] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"model spec {raw!r}: options after '?' must look like key=value&key=value") from None
        options = {key: _coerce(value) for key, value in pairs}
    backend, _, model = head.partition(":")
    backend = _ALIASES.get(backend.strip().lower(), backend.strip().lower())
    model = model.strip()
    if backend not in _BACKENDS:
        raise ValueError(
            f"model spec {raw!r}: unknown backend {backend!r}; expected one of {', '.join(_BACKENDS)} "
            f"(e.g. embedded, embedded:0.5b, openai:gpt-4o-mini, hf:./model, vllm:./model)"
        )
    if backend != "embedded" and not model:
        raise ValueError(f"model spec {raw!r}: backend {backend!r} needs a model after ':', e.g. {backend}:NAME")
    return ModelSpec(backend=backend, model=model, options=options, text=head.strip())


def load_model(spec: str | None = None, *, cache_path: str | Path | None = None, **options: Any) -> ChatModel:
    """Build the ChatModel a spec names; wrap it in the SQLite response cache when cache_path is given."""
    parsed = parse_spec(spec)
    merged = {**parsed.options, **{k: v for k, v in options.items() if v is not None}}
    cache_path = merged.pop("cache_path", None) or cache_path
    merged.setdefault("name", parsed.text)
    if parsed.backend == "embedded":
        from synth.llm.embedded import EmbeddedChatModel as backend_class
    elif parsed.backend == "openai":
        from synth.llm.openai_compat import OpenAIChatModel as backend_class
    elif parsed.backend == "hf":
        from synth.llm.transformers_backend import TransformersChatModel as backend_class
    else:
        from synth.llm.vllm_backend import VLLMChatModel as backend_class
    _check_options(backend_class, merged, parsed.text)
    model: ChatModel = backend_class(parsed.model, **merged) if parsed.model else backend_class(**merged)
    if cache_path:
        from synth.llm.cache import CachedChatModel

        model = CachedChatModel(model, cache_path)
    return model


def load_role_models(
    specs: dict[str, str],
    *,
    base_url: str | None = None,
    cache_path: str | Path | None = None,
    wrap: Any = None,
) -> dict[str, ChatModel]:
    """One model per role (role -> spec); roles naming the same spec share one instance. `base_url` goes to the
    openai:… specs, every model gets the response cache at `cache_path`, and `wrap(model, spec)` (when given)
    wraps a backend before the cache (e.g. a cluster-wide concurrency limit)."""
    from synth.llm.cache import CachedChatModel

    by_spec: dict[str, ChatModel] = {}
    models: dict[str, ChatModel] = {}
    for role, spec in specs.items():
        if spec not in by_spec:
            options = {"base_url": base_url} if base_url and spec.startswith("openai:") else {}
            model = load_model(spec, **options)
            if wrap is not None:
                model = wrap(model, spec)
            by_spec[spec] = CachedChatModel(model, cache_path) if cache_path else model
        models[role] = by_spec[spec]
    return models


def _check_options(backend_class: type, options: dict[str, Any], spec: str) -> None:
    accepted = {
        name for name, p in inspect.signature(backend_class.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"model spec {spec!r}: unknown option(s) {', '.join(unknown)}; "
            f"this backend accepts {', '.join(sorted(accepted - {'name'}))}"
        )


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value
