"""In-process vLLM for GPU batch throughput (extra "vllm"; not installable on CPU-only machines).

Uses vLLM's async engine so that every concurrent `chat` joins vLLM's continuous batch: the engine is built from
AsyncEngineArgs on first use, the prompt is rendered with the model's own chat template, and stop strings, seed
and JSON output map onto SamplingParams. vllm is imported lazily; a missing install is a ModelError naming the
pip command.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import uuid
from pathlib import Path
from typing import Any

from synth.llm._util import check_family, cut_at_stop, family_from_name
from synth.llm.base import Completion, Message, ModelError, Usage
from synth.llm.transformers_backend import tokenizer_family

_INSTALL = "pip install 'ds-synth[vllm]'"


class VLLMChatModel:
    """ChatModel on vllm's AsyncLLMEngine (= vllm.v1 AsyncLLM in current vLLM). Options: gpu_memory_utilization,
    max_model_len, tensor_parallel_size, dtype, seed, default_max_tokens, family, and for batch throughput
    max_num_seqs (sequences batched per engine step) and enable_prefix_caching (reuse the KV cache of the shared
    system prompt / few-shot prefix across episodes; on by default in vLLM V1)."""

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int | None = None,
        default_max_tokens: int = 2048,
        family: str | None = None,
        max_num_seqs: int | None = None,
        enable_prefix_caching: bool | None = None,
    ) -> None:
        self.name = name or f"vllm:{path}"
        if importlib.util.find_spec("vllm") is None:
            raise ModelError(f"{self.name}: the vllm backend needs vLLM (GPU only); install it with: {_INSTALL}")
        folder = Path(path).expanduser()
        self.path = str(folder) if folder.exists() else path  # a local folder, or a name vLLM resolves itself
        self.model = folder.name or path
        if family:
            self.family = check_family(family, self.name)
        elif folder.is_dir():
            self.family = tokenizer_family(folder)
        else:
            self.family = family_from_name(path)
        self.seed = seed
        self.default_max_tokens = int(default_max_tokens)
        self._engine_args = {
            "model": self.path, "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "max_num_seqs": max_num_seqs,
            "enable_prefix_caching": enable_prefix_caching,
        }
        self._engine: Any = None
        self._tokenizer: Any = None
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count()

    async def _start(self) -> tuple[Any, Any]:
        async with self._start_lock:
            if self._engine is None:
                from vllm import AsyncEngineArgs, AsyncLLMEngine

                args = AsyncEngineArgs(**{k: v for k, v in self._engine_args.items() if v is not None})
                self._engine = AsyncLLMEngine.from_engine_args(args)
                tokenizer = self._engine.get_tokenizer()
                self._tokenizer = await tokenizer if asyncio.iscoroutine(tokenizer) else tokenizer
        return self._engine, self._tokenizer

    def _sampling_params(self, stop: list[str] | None, max_tokens: int | None, temperature: float | None,
                         response_format: dict[str, Any] | None) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            "max_tokens": int(max_tokens if max_tokens is not None else self.default_max_tokens),
            "temperature": 0.0 if temperature is None else float(temperature),
            "stop": list(stop) if stop else None,
            "seed": self.seed,
        }
        if response_format is not None:
            kwargs.update(_structured_output(response_format))
        try:  # only the finished output is needed: no per-token streaming objects through the asyncio loop
            from vllm.sampling_params import RequestOutputKind

            kwargs["output_kind"] = RequestOutputKind.FINAL_ONLY
        except ImportError:  # older vLLM streams cumulative outputs; the last one is used below either way
            pass
        return SamplingParams(**kwargs)

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        engine, tokenizer = await self._start()
        prompt = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                               add_generation_prompt=True)
        params = self._sampling_params(stop, max_tokens, temperature, response_format)
        request_id = f"{uuid.uuid4().hex}-{next(self._ids)}"
        final = None
        async for output in engine.generate(prompt, params, request_id):
            final = output
        if final is None or not final.outputs:
            raise ModelError(f"{self.name}: vLLM returned no output for request {request_id}")
        choice = final.outputs[0]
        text, cut = cut_at_stop(choice.text, stop)
        finish = "stop" if cut or choice.finish_reason != "length" else "length"
        prompt_tokens = len(final.prompt_token_ids or [])
        return Completion(text=text, usage=Usage(prompt_tokens, len(choice.token_ids or [])),
                          finish_reason=finish, model=self.model)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()


def _structured_output(response_format: dict[str, Any]) -> dict[str, Any]:
    """Map an OpenAI response_format onto vLLM's guided decoding (renamed structured outputs in newer vLLM)."""
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        spec: dict[str, Any] = {"json": schema}
    elif kind == "json_object":
        spec = {"json_object": True}
    else:
        return {}
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(**spec)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**spec)}
