"""The openai backend against a real local OpenAI-compatible HTTP server (FakeOpenAIServer) on 127.0.0.1: what is
particular to it (retries, rate limits, concurrency, cost, options). The ChatModel contract itself (stop strings,
max_tokens, usage, the documented errors, the cache) runs in tests/test_chat_model_contract.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from synth.llm import ModelError, load_model
from synth.llm.openai_compat import ModelUnavailableError, OpenAIChatModel, _TokenBucket
from synth.llm.testing_server import FakeOpenAIServer

USER = [{"role": "user", "content": "what is two plus two"}]


def _model(server: FakeOpenAIServer, **options) -> OpenAIChatModel:
    options.setdefault("backoff_base_s", 0.01)
    return OpenAIChatModel("fake-model", base_url=server.base_url, api_key="test-key", **options)


async def test_answer_usage_and_cost():
    with FakeOpenAIServer(reply="four is the answer") as server:
        model = _model(server, input_price_per_m=2.0, output_price_per_m=10.0)
        completion = await model.chat(USER, max_tokens=50, temperature=0.0)
        await model.aclose()
    assert completion.text == "four is the answer"
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert completion.usage.cost_usd == pytest.approx((5 * 2.0 + 4 * 10.0) / 1e6)
    body = server.requests[0].body
    assert body["model"] == "fake-model" and body["max_tokens"] == 50 and body["temperature"] == 0.0
    assert server.requests[0].headers["authorization"] == "Bearer test-key"
    assert model.total_usage.total_tokens == 9


async def test_429_and_500_are_retried_then_succeed():
    with FakeOpenAIServer(reply="done", failures=[429, 500, 503]) as server:
        model = _model(server)
        completion = await model.chat(USER)
        await model.aclose()
    assert completion.text == "done"
    assert server.count == 4
    assert [r.status for r in server.requests] == [429, 500, 503, 200]
    assert model.attempts == 4 and model.retries == 3


async def test_retry_after_header_is_respected():
    with FakeOpenAIServer(reply="ok", failures=[429], retry_after=0.4) as server:
        model = _model(server, backoff_base_s=0.0)
        await model.chat(USER)
        await model.aclose()
    gap = server.requests[1].arrived - server.requests[0].arrived
    assert gap >= 0.4  # with backoff_base_s=0 only the server's Retry-After can produce this wait


async def test_unknown_model_404_is_model_error_and_not_retried():
    with FakeOpenAIServer(models=["real-model"]) as server:
        model = _model(server)
        with pytest.raises(ModelError, match="'fake-model' not found"):
            await model.chat(USER)
        await model.aclose()
    assert server.count == 1


async def test_slow_response_times_out_and_is_retried():
    with FakeOpenAIServer(latency_s=1.5) as server:
        model = _model(server, timeout_s=0.2, max_retries=1)
        with pytest.raises(ModelUnavailableError, match="APITimeoutError"):
            await model.chat(USER)
        await model.aclose()
    assert server.count == 2


async def test_connection_refused_is_retried_then_reported():
    with FakeOpenAIServer() as server:
        base_url = server.base_url
    model = OpenAIChatModel("m", base_url=base_url, max_retries=1, backoff_base_s=0.01)
    with pytest.raises(ModelUnavailableError, match="APIConnectionError"):
        await model.chat(USER)
    assert model.attempts == 2
    await model.aclose()


async def test_more_than_four_stop_strings_apply_client_side():
    with FakeOpenAIServer(reply="a b c STOP5 d") as server:
        completion = await _model(server).chat(USER, stop=["S1", "S2", "S3", "S4", "STOP5"])
    assert server.requests[0].body["stop"] == ["S1", "S2", "S3", "S4"]
    assert completion.text == "a b c "


async def test_concurrency_bound_holds():
    with FakeOpenAIServer(latency_s=0.1) as server:
        model = _model(server, max_concurrency=3)
        await asyncio.gather(*(model.chat(USER) for _ in range(12)))
        await model.aclose()
    assert server.count == 12
    assert server.max_in_flight == 3


async def test_rpm_limit_holds():
    # 2400 RPM = 40 per second with a bucket of one second's worth: in any 0.5 s window at most 40 + 20 start.
    # The window is checked on the moments the limiter lets requests go: arrivals at the server can bunch up when
    # a loaded machine delays delivery, which is not the limiter's doing.
    with FakeOpenAIServer() as server:
        model = _model(server, rpm=2400, max_concurrency=128)
        granted: list[float] = []
        acquire = model._rpm.acquire

        async def recording_acquire(amount: float) -> None:
            await acquire(amount)
            granted.append(time.monotonic())

        model._rpm.acquire = recording_acquire
        await asyncio.gather(*(model.chat(USER) for _ in range(80)))
        await model.aclose()
    assert server.count == 80
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + 0.5) for start in granted)
    assert busiest <= 61
    assert granted[-1] - granted[0] >= (80 - 40) / 40 * 0.95
    assert all(r.arrived >= granted[0] for r in server.requests)  # nothing went out before the limiter let it


async def test_tpm_limit_charges_real_usage():
    bucket = _TokenBucket(per_minute=1200)  # 20 tokens/s, bucket of 20
    await bucket.acquire(20)
    bucket.adjust(10)  # the request really used 30 tokens: the next caller waits for the debt too
    loop = asyncio.get_running_loop()
    start = loop.time()
    await bucket.acquire(1)
    assert loop.time() - start >= 0.5


async def test_json_response_format_and_seed_are_sent():
    with FakeOpenAIServer(reply='{"a": 1}') as server:
        model = _model(server, seed=7)
        completion = await model.chat(USER, response_format={"type": "json_object"})
    assert server.requests[0].body["response_format"] == {"type": "json_object"}
    assert server.requests[0].body["seed"] == 7
    assert completion.text == '{"a": 1}'


async def test_load_model_openai_spec_uses_options_and_env(monkeypatch):
    with FakeOpenAIServer(reply="hi") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "env-key")
        model = load_model("openai:fake-model?max_concurrency=2&family=deepanalyze")
        assert model.name == "openai:fake-model"
        assert model.family == "deepanalyze"
        assert model.max_concurrency == 2
        completion = await model.chat(USER)
        await model.aclose()
    assert completion.text == "hi"
    assert server.requests[0].headers["authorization"] == "Bearer env-key"


def test_missing_key_for_openai_com_is_clear(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4o-mini")


def test_family_guessed_from_model_name():
    assert OpenAIChatModel("RUC-DataLab/DeepAnalyze-8B", base_url="http://127.0.0.1:9/v1").family == "deepanalyze"
    assert OpenAIChatModel("gpt-4o-mini", base_url="http://127.0.0.1:9/v1").family == "instruct"
