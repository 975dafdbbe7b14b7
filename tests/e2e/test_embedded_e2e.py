"""The real embedded model (Qwen2.5-Coder-0.5B via llama.cpp in-process): answers, stop strings, usage, JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from synth.llm import load_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model():
    return load_model("embedded:0.5b", n_ctx=4096, seed=0)


async def test_answers_a_chat_with_usage(model):
    completion = await model.chat(
        [{"role": "user", "content": "What is the capital of France? Answer with one word."}],
        max_tokens=16, temperature=0.0,
    )
    assert "paris" in completion.text.lower()
    assert completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.finish_reason in ("stop", "length")


async def test_stop_string_is_honoured_and_not_returned(model):
    messages = [
        {"role": "system", "content": "You write Python inside <Code> and </Code> tags, nothing else."},
        {"role": "user", "content": "Print the sum of 2 and 3. Reply exactly in the form <Code>\n...\n</Code>"},
    ]
    free = await model.chat(messages, max_tokens=60, temperature=0.0)
    stopped = await model.chat(messages, stop=["</Code>"], max_tokens=60, temperature=0.0)
    assert "</Code>" in free.text  # the model does write the tag when not stopped...
    assert "</Code>" not in stopped.text  # ...and the stop string is cut, never returned
    assert stopped.text == free.text[: free.text.index("</Code>")]
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens < free.usage.completion_tokens or free.text.endswith("</Code>")


async def test_json_response_format_gives_json(model):
    completion = await model.chat(
        [{"role": "user", "content": "Give a JSON object with key \"n\" set to the number 4."}],
        max_tokens=30, temperature=0.0, response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(completion.text), dict)


async def test_concurrent_callers_share_the_one_loaded_model(model):
    other = load_model("embedded:0.5b", n_ctx=4096, seed=0)
    assert other.raw_server() is model.raw_server()
    prompt = [{"role": "user", "content": "Say hello."}]
    a, b = await asyncio.gather(model.chat(prompt, max_tokens=8, temperature=0.0),
                                other.chat(prompt, max_tokens=8, temperature=0.0))
    assert a.text == b.text and a.text
