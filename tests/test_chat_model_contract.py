"""The ChatModel contract (synth/llm/base.py), one suite run against every backend.

Backends: `openai` against the local fake server (as an OpenAI-style server that drops the stop string, and as a
llama.cpp-style one that returns it), `embedded:0.5b` (the real llama.cpp model: few, short calls), `hf:` on the
tiny random model train/tiny.py builds, and `vllm` (skipped, with the reason, where vLLM or a GPU is missing).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from synth.errors import SynthError
from synth.llm import ChatModel, Completion, ModelError, load_model
from synth.llm.base import ModelUnavailableError
from synth.llm.cache import CachedChatModel
from synth.llm.testing_server import FakeOpenAIServer

BACKENDS = ["openai", "openai-echo-stop", "embedded", "transformers", "vllm"]

CODE_PROMPT = [
    {"role": "system", "content": "You write Python inside <Code> and </Code> tags, nothing else."},
    {"role": "user", "content": "Print the sum of 2 and 3. Reply exactly in the form <Code>\n...\n</Code>"},
]
SHORT_PROMPT = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
LONG_PROMPT = [{"role": "user", "content": "Count from 1 to 200, separated by spaces."}]
FAKE_REPLY = ("<Analyze>\nAdd the two numbers first.\n</Analyze>\n<Code>\nprint(2 + 3)\n</Code>\n"
              "<Answer>The sum is 5, as the code printed.</Answer>")


@dataclass
class Case:
    """One backend under test."""

    model: ChatModel
    spec: str  # the name the model must carry
    calls: Callable[[], int]  # backend requests so far
    make: Callable[[], ChatModel]  # a fresh instance (for aclose)
    failure: Callable[[], Awaitable[Any]]  # a request the backend must refuse with ModelError
    stop_temperature: float = 0.0  # sampling used to find a stop string in the free output (seeded where > 0)


def _counting(model: Any) -> Callable[[], int]:
    """Count `chat` calls reaching the backend (a CachedChatModel wrapping it calls this attribute)."""
    inner = model.chat
    count = {"n": 0}

    async def chat(*args: Any, **kwargs: Any) -> Completion:
        count["n"] += 1
        return await inner(*args, **kwargs)

    model.chat = chat
    return lambda: count["n"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="the transformers backend needs torch (extra 'train')")
    pytest.importorskip("transformers", reason="the transformers backend needs transformers (extra 'train')")
    from train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module", params=BACKENDS)
def case(request, tmp_path_factory):
    kind = request.param
    if kind.startswith("openai"):
        with FakeOpenAIServer(reply=FAKE_REPLY, include_stop=kind == "openai-echo-stop") as server:
            def make() -> ChatModel:
                return load_model("openai:fake-model", base_url=server.base_url, api_key="k", backoff_base_s=0.01)

            async def failure() -> None:
                with FakeOpenAIServer(failures=[500] * 10) as failing:  # transient, retried, then reported
                    model = load_model("openai:fake-model", base_url=failing.base_url, max_retries=1,
                                       backoff_base_s=0.01)
                    try:
                        with pytest.raises(ModelUnavailableError, match="after 2 attempts") as info:
                            await model.chat(SHORT_PROMPT)
                        assert isinstance(info.value, SynthError) and failing.count == 2
                    finally:
                        await model.aclose()
                with FakeOpenAIServer(api_key="right-key") as locked:  # permanent: ModelError, not retried
                    model = load_model("openai:fake-model", base_url=locked.base_url, api_key="wrong-key")
                    try:
                        await model.chat(SHORT_PROMPT)
                    finally:
                        await model.aclose()
                        assert locked.count == 1

            model = make()
            yield Case(model, "openai:fake-model", lambda: server.count, make, failure)
            asyncio.run(model.aclose())
        return
    if kind == "embedded":
        if importlib.util.find_spec("xllamacpp") is None:
            pytest.skip("the embedded backend needs xllamacpp (extra 'embedded')")

        def make() -> ChatModel:
            return load_model("embedded:0.5b", n_ctx=4096, seed=0)

        async def failure() -> None:
            await model.chat([{"role": "user", "content": "word " * 5000}], max_tokens=4)  # longer than n_ctx

        model = make()
        yield Case(model, "embedded:0.5b", _counting(model), make, failure)
        return
    if kind == "transformers":
        folder = request.getfixturevalue("tiny_model_dir")

        def make() -> ChatModel:
            return load_model(f"hf:{folder}", device="cpu", seed=0)

        broken = tmp_path_factory.mktemp("no-template") / "model"
        shutil.copytree(folder, broken)
        (broken / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((broken / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (broken / "tokenizer_config.json").write_text(json.dumps(config))

        async def failure() -> None:
            without_template = load_model(f"hf:{broken}", device="cpu")
            try:
                await without_template.chat(SHORT_PROMPT, max_tokens=2)
            finally:
                await without_template.aclose()

        model = make()
        yield Case(model, f"hf:{folder}", _counting(model), make, failure, stop_temperature=1.0)
        asyncio.run(model.aclose())
        return
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            pytest.skip("vLLM is not installed (extra 'vllm', GPU only)")
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("vLLM needs a GPU and none is visible")
        folder = request.getfixturevalue("tiny_model_dir")

        def make() -> ChatModel:
            return load_model(f"vllm:{folder}", seed=0, gpu_memory_utilization=0.2, max_model_len=1024)

        async def failure() -> None:
            await model.chat([{"role": "user", "content": "word " * 5000}], max_tokens=4)  # longer than the model

        model = make()
        yield Case(model, f"vllm:{folder}", _counting(model), make, failure, stop_temperature=1.0)
        asyncio.run(model.aclose())
        return
    raise ValueError(kind)


def _pick_stop(text: str) -> str:
    """A stop string the free generation really produced, first met after its start: `</Code>` when written."""
    if "</Code>" in text:
        return "</Code>"
    for size in (4, 3, 2, 1):
        for start in range(len(text) // 3, len(text) - size + 1):
            piece = text[start : start + size]
            if piece.strip() and text.find(piece) > 0:
                return piece
    pytest.fail(f"the free generation gave nothing to stop at: {text!r}")


# --- the contract ----------------------------------------------------------------------------------------------


def test_name_family_and_protocol(case):
    assert isinstance(case.model, ChatModel)
    assert case.model.name == case.spec
    assert case.model.family in ("instruct", "deepanalyze")
    assert issubclass(ModelError, SynthError) and issubclass(ModelUnavailableError, SynthError)


async def test_a_completion_has_text_usage_and_a_finish_reason(case):
    before = case.calls()
    completion = await case.model.chat(SHORT_PROMPT, max_tokens=16, temperature=0.0)
    assert case.calls() == before + 1
    assert isinstance(completion, Completion) and isinstance(completion.text, str) and completion.text
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.usage.cost_usd >= 0 and not completion.usage.cached


async def test_max_tokens_bounds_the_completion(case):
    completion = await case.model.chat(LONG_PROMPT, max_tokens=4, temperature=0.0)
    assert 0 < completion.usage.completion_tokens <= 4
    assert completion.finish_reason == "length"


async def test_temperature_zero_repeats_itself(case):
    first = await case.model.chat(CODE_PROMPT, max_tokens=12, temperature=0.0)
    second = await case.model.chat(CODE_PROMPT, max_tokens=12, temperature=0.0)
    assert first.text == second.text
    assert first.usage.completion_tokens == second.usage.completion_tokens


async def test_a_stop_string_ends_generation_and_is_never_returned(case):
    free = await case.model.chat(CODE_PROMPT, max_tokens=40, temperature=case.stop_temperature)
    stop = _pick_stop(free.text)
    stopped = await case.model.chat(CODE_PROMPT, stop=[stop], max_tokens=40, temperature=case.stop_temperature)
    assert stop not in stopped.text
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens <= free.usage.completion_tokens
    # What the agent loop relies on: re-appending the stop string closes the block exactly once.
    assert (stopped.text + stop).count(stop) == 1
    if stop == "</Code>":
        assert stopped.text.count("<Code>") == 1


async def test_a_cached_model_answers_again_without_calling_the_backend(case, tmp_path):
    cached = CachedChatModel(case.model, tmp_path / "cache.sqlite")
    assert (cached.name, cached.family) == (case.model.name, case.model.family)
    try:
        before = case.calls()
        first = await cached.chat(SHORT_PROMPT, max_tokens=8, temperature=0.0)
        again = await cached.chat(SHORT_PROMPT, max_tokens=8, temperature=0.0)
        assert case.calls() == before + 1
        assert again.text == first.text and again.finish_reason == first.finish_reason
        assert (cached.hits, cached.misses) == (1, 1)
        assert not first.usage.cached and again.usage.cached and again.usage.cost_usd == 0.0
        assert (again.usage.prompt_tokens, again.usage.completion_tokens) == (
            first.usage.prompt_tokens, first.usage.completion_tokens)
        other = await cached.chat(SHORT_PROMPT, max_tokens=9, temperature=0.0)  # another request: asked again
        assert case.calls() == before + 2 and not other.usage.cached
    finally:
        cached.cache.close()  # the backend itself belongs to the fixture


async def test_a_backend_failure_is_the_documented_error(case):
    with pytest.raises(ModelError) as info:
        await case.failure()
    assert isinstance(info.value, SynthError)
    assert str(info.value)


async def test_aclose_can_be_called_twice(case):
    model = case.make()
    completion = await model.chat(SHORT_PROMPT, max_tokens=2, temperature=0.0)
    assert completion.usage.completion_tokens <= 2
    await model.aclose()
    await model.aclose()
