"""The fake OpenAI-compatible server itself: the behaviours other tests and benchmarks rely on."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import AsyncOpenAI

from synth.llm.testing_server import FakeOpenAIServer, RoleScript


def test_plain_http_answer_records_and_counts():
    with FakeOpenAIServer(reply=lambda body: "echo " + body["messages"][-1]["content"]) as server:
        response = httpx.post(f"{server.base_url}/chat/completions",
                              json={"model": "m", "messages": [{"role": "user", "content": "hi there"}]})
        missing = httpx.get(f"{server.base_url}/nothing")
        models = httpx.get(f"{server.base_url}/models").json()
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "echo hi there"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert missing.status_code == 404
    assert models["data"][0]["id"] == "fake-model"
    assert server.count == 1 and server.max_in_flight == 1 and server.in_flight == 0


def test_bad_body_and_failure_injection():
    with FakeOpenAIServer(failures=[503], retry_after=2) as server:
        failed = httpx.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": []})
        bad = httpx.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": "x"})
        not_json = httpx.post(f"{server.base_url}/chat/completions", content=b"{nope")
    assert failed.status_code == 503 and failed.headers["retry-after"] == "2"
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    assert not_json.status_code == 400


async def test_streaming_through_the_sdk():
    with FakeOpenAIServer(reply="one two three") as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}], stream=True)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await client.close()
    assert "".join(pieces) == "one two three"


def test_base_url_needs_a_running_server():
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not running"):
        server.base_url


def test_role_script_answers_each_role_from_the_request_alone():
    script = RoleScript(lambda category, difficulty, file: f"{category}/{difficulty} task on {file}", "CODE", "ANSWER")
    task = json.loads(script({"messages": [
        {"role": "system", "content": "You write data-science tasks for a data scientist."},
        {"role": "user", "content": "Category: data_cleaning. Difficulty: hard.\nFile: shop.csv\n# Data"}]}))
    assert task["instruction"] == "data_cleaning/hard task on shop.csv" and task["files"] == ["shop.csv"]
    verdict = json.loads(script({"messages": [
        {"role": "system", "content": "You review the work of a data scientist."},
        {"role": "user", "content": "Items:\n- id supported: Is it?\n- id clear: Is it clear?"}]}))
    assert [a["id"] for a in verdict["answers"]] == ["supported", "clear"] and all(a["pass"] for a in verdict["answers"])
    assert script({"messages": [{"role": "user", "content": "# Instruction\nCount"}]}) == "CODE"
    assert script({"messages": [{"role": "assistant", "content": "<Execute>\n4\n</Execute>"}]}) == "ANSWER"


def test_max_tokens_cuts_at_whitespace_words_like_the_usage_count():
    with FakeOpenAIServer(reply="<Code>\nprint(1)\n</Code> more words here") as server:
        response = httpx.post(f"{server.base_url}/chat/completions",
                              json={"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]})
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "<Code>\nprint(1)"
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 2
