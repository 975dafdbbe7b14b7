"""A local Hugging Face model (a folder: what `train` writes) via transformers, on CPU or GPU.

torch/transformers are imported lazily (extra "train"). The weights load on the first chat, in the backend's own
worker thread; generations run one at a time on that thread, so asyncio callers simply queue. The family is read
from the tokenizer files without importing transformers: DeepAnalyze checkpoints carry the action tags as added
tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from synth.llm._util import check_family, cut_at_stop, family_from_vocab
from synth.llm.base import Completion, Message, ModelError, Usage

_INSTALL = "pip install 'ds-synth[train]'"


def tokenizer_family(folder: Path) -> str:
    """'deepanalyze' when the folder's tokenizer has the action tags as added tokens, else 'instruct'."""
    tokens: list[str] = []
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            tokens += [t.get("content", "") for t in json.loads(tokenizer_json.read_text()).get("added_tokens", [])]
        except (OSError, ValueError):
            pass
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            decoder = json.loads(config.read_text()).get("added_tokens_decoder", {}) or {}
            tokens += [t.get("content", "") for t in decoder.values() if isinstance(t, dict)]
        except (OSError, ValueError):
            pass
    return family_from_vocab(tokens)


class TransformersChatModel:
    """ChatModel over AutoModelForCausalLM + AutoTokenizer loaded from a local folder.

    Options: device ("cpu", "cuda", "cuda:1", "auto"; default cuda when available), dtype ("auto", "float32",
    "bfloat16", "float16"), seed, default_max_tokens, family. response_format is not enforced (no constrained
    decoding here): callers validate JSON themselves.
    """

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        seed: int | None = None,
        default_max_tokens: int = 1024,
        family: str | None = None,
    ) -> None:
        self.name = name or f"hf:{path}"
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(f"{self.name}: {folder} is not a local model folder (no config.json there)")
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            raise ModelError(f"{self.name}: the transformers backend needs {' and '.join(missing)}; "
                             f"install them with: {_INSTALL}")
        self.path = folder
        self.model = folder.name
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.default_max_tokens = int(default_max_tokens)
        self.family = check_family(family, self.name) if family else tokenizer_family(folder)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-generate")
        self._loaded: tuple[Any, Any] | None = None
        self._load_lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._loaded is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
                model.to(device)
                model.eval()
                if tokenizer.chat_template is None:
                    raise ModelError(f"{self.name}: the tokenizer in {self.path} has no chat template")
                self._loaded = (model, tokenizer)
            return self._loaded

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._generate, [dict(m) for m in messages], list(stop or []),
            int(max_tokens if max_tokens is not None else self.default_max_tokens), temperature,
        )

    def _generate(self, messages: list[dict], stop: list[str], max_tokens: int,
                  temperature: float | None) -> Completion:
        import torch

        model, tokenizer = self._load()
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
        input_ids = encoded["input_ids"].to(model.device)
        attention_mask = encoded["attention_mask"].to(model.device)
        sample = temperature is not None and temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sample}
        if sample:
            kwargs["temperature"] = float(temperature)
        else:  # silence generation_config sampling defaults that greedy decoding ignores
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs["stopping_criteria"] = _stop_on_strings(tokenizer, stop, input_ids.shape[1])
        if tokenizer.pad_token_id is None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id
        if self.seed is not None:
            torch.manual_seed(int(self.seed))
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[0, input_ids.shape[1]:]
        eos_ids = _as_set(getattr(model.generation_config, "eos_token_id", None)) | _as_set(tokenizer.eos_token_id)
        ended = len(new_tokens) > 0 and int(new_tokens[-1]) in eos_ids
        # Not skip_special_tokens: DeepAnalyze tokenizers make the action tags special, and they are the output.
        hidden = eos_ids | _as_set(tokenizer.pad_token_id) | _as_set(tokenizer.bos_token_id)
        raw_text = tokenizer.decode([int(t) for t in new_tokens if int(t) not in hidden], skip_special_tokens=False)
        text, cut = cut_at_stop(raw_text, stop)
        finish = "stop" if cut or ended or len(new_tokens) < max_tokens else "length"
        return Completion(text=text, usage=Usage(int(input_ids.shape[1]), int(len(new_tokens))),
                          finish_reason=finish, model=self.model)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True)
        self._loaded = None


def _stop_on_strings(tokenizer: Any, stop: list[str], prompt_length: int) -> Any:
    """A StoppingCriteria that decodes the newest tokens and stops once any stop string appears.

    Decoding the tail works with any tokenizer (transformers' own stop_strings needs a vocabulary it can map
    back to text piece by piece, which word-level and some custom tokenizers cannot give).
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max(len(s) for s in stop) + 8  # a token is at least one character, except special/empty ones

    class _StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            start = max(prompt_length, input_ids.shape[1] - window)
            done = [any(s in tokenizer.decode(row[start:], skip_special_tokens=False) for s in stop)
                    for row in input_ids]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopOnStrings()])


def _as_set(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}
