"""serve: the official `openai` client against a real uvicorn server on 127.0.0.1, a real local sandbox, and a
scripted chat model (the test double) injected through create_app."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from doubles import ScriptedChatModel

from serve.app import create_app
from serve.config import ServeConfig
from synth.llm.testing_server import FakeOpenAIServer

_FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def agent_reply(messages) -> str:
    """A scripted data scientist: runs the ```python block of the question (if any), then answers with its output."""
    start = max(i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("# Instruction"))
    question = messages[start]["content"]
    if start == len(messages) - 1:
        code = _FENCE.search(question)
        if code is None:
            return "<Analyze>\nNothing to run.\n</Analyze>\n<Answer>\nno code needed\n</Answer>"
        return f"<Analyze>\nI run the given code.\n</Analyze>\n<Code>\n```python\n{code.group(1)}```\n</Code>"
    last = messages[-1]["content"]
    output = last.split("<Execute>\n", 1)[-1].split("\n</Execute>", 1)[0]
    return f"<Understand>\nThe code ran.\n</Understand>\n<Answer>\nResult:\n{output}\n</Answer>"


class LiveServer:
    """uvicorn serving `app` in a background thread on a free loopback port."""

    def __init__(self, app):
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    @property
    def service(self):
        return self.app.state.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    model = ScriptedChatModel([agent_reply])
    root = tmp_path_factory.mktemp("serve-root")
    server = LiveServer(create_app(ServeConfig(workspace_root=root, cell_timeout_s=60), model=model))
    server.model = model
    server.root = root
    yield server
    server.stop()


@pytest.fixture
def data_csv(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1,a\n2,b\n3,c\n4,d\n")
    return path


def _upload(client: openai.OpenAI, path: Path):
    with open(path, "rb") as fh:
        return client.files.create(file=fh, purpose="assistants")


ANALYSIS = """Compute the mean of x and save a summary and a plot.
```python
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("data.csv")
print("mean", df["x"].mean())
df.describe().to_csv("summary.csv")
df["x"].plot()
```"""

FOLLOW_UP = """Which files are in the workspace now?
```python
import os
print("files", sorted(os.listdir(".")))
```"""


def test_files_upload_list_get_download_delete(live, data_csv):
    client = live.client()
    obj = _upload(client, data_csv)
    assert obj.id.startswith("file-") and obj.filename == "data.csv" and obj.bytes == data_csv.stat().st_size
    assert obj.object == "file" and obj.purpose == "assistants"
    assert obj.id in [f.id for f in client.files.list().data]
    assert client.files.retrieve(obj.id).filename == "data.csv"
    assert client.files.content(obj.id).content == data_csv.read_bytes()
    deleted = client.files.delete(obj.id)
    assert deleted.deleted and deleted.id == obj.id
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(obj.id)
    assert err.value.status_code == 404
    body = httpx.get(f"{live.url}/v1/files/file-nope/content").json()
    assert body["error"]["code"] == "file_not_found" and "file-nope" in body["error"]["message"]


def test_chat_runs_agent_in_sandbox_and_returns_generated_files(live, data_csv):
    client = live.client()
    source_hash = hashlib.sha256(data_csv.read_bytes()).hexdigest()
    upload = _upload(client, data_csv)
    reply = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": ANALYSIS}], extra_body={"file_ids": [upload.id]}
    )
    extra = reply.model_extra
    content = reply.choices[0].message.content
    for tag in ("<Analyze>", "<Code>", "<Execute>", "<Answer>"):
        assert tag in content
    assert "mean 2.5" in content.split("<Execute>", 1)[1]  # real execution output, inline
    assert reply.choices[0].finish_reason == "stop"
    assert "mean 2.5" in extra["answer"]
    assert extra["thread_id"].startswith("thread_")
    assert extra["trajectory"]["code_cells"] == 1 and extra["trajectory"]["stop_reason"] == "answer"
    assert reply.usage.completion_tokens > 0
    files = {f["filename"]: f for f in extra["files"]}
    assert {"summary.csv", "figure_1.png"} <= set(files)
    summary = client.files.content(files["summary.csv"]["id"]).content.decode()
    assert summary.startswith(",x") and "mean" in summary
    assert client.files.content(files["figure_1.png"]["id"]).content[:4] == b"\x89PNG"
    report = client.files.content(extra["report_file"]["id"]).content.decode()
    assert "mean 2.5" in report
    # the uploaded original is untouched; the agent worked on a copy in the thread's workspace
    assert hashlib.sha256(client.files.content(upload.id).content).hexdigest() == source_hash
    assert (live.root / "threads" / extra["thread_id"] / "summary.csv").is_file()

    # Follow-up on the same thread: same workspace (summary.csv is still there), and the model sees the earlier turn.
    calls_before = len(live.model.calls)
    again = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": FOLLOW_UP}],
        extra_body={"thread_id": extra["thread_id"]},
    )
    assert again.model_extra["thread_id"] == extra["thread_id"]
    assert "summary.csv" in again.model_extra["answer"] and "figure_1.png" in again.model_extra["answer"]
    first_call = live.model.calls[calls_before]["messages"]
    assert any("Compute the mean of x" in m["content"] for m in first_call[:-1])
    assert any(m["role"] == "assistant" and "mean 2.5" in m["content"] for m in first_call)


def test_request_max_tokens_caps_each_turn_within_the_servers_limit(live):
    client = live.client()
    for asked, sent in ((64, 64), (10**6, live.service.config.max_tokens_per_turn), (None, 2048)):
        before = len(live.model.calls)
        extra = {"max_tokens": asked} if asked else {}
        client.chat.completions.create(model="anything", messages=[{"role": "user", "content": FOLLOW_UP}], **extra)
        assert {c["max_tokens"] for c in live.model.calls[before:]} == {sent}


def test_stream_sends_each_action_as_it_happens(live, data_csv):
    client = live.client()
    upload = _upload(client, data_csv)
    stream = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": ANALYSIS}], stream=True,
        extra_body={"file_ids": [upload.id]},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    kinds = [c.model_extra["action"]["kind"] for c in chunks if c.model_extra.get("action")]
    assert kinds[:3] == ["Analyze", "Code", "Execute"] and kinds[-1] == "Answer"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.index("<Code>") < text.index("<Execute>") < text.index("mean 2.5") < text.index("<Answer>")
    execute = next(c for c in chunks if (c.model_extra.get("action") or {}).get("kind") == "Execute")
    assert {f["filename"] for f in execute.model_extra["files"]} >= {"summary.csv", "figure_1.png"}
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert "mean 2.5" in final.model_extra["answer"] and final.model_extra["thread_id"] == chunks[0].model_extra["thread_id"]
    # the raw stream ends with the SSE [DONE] marker
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_bad_ids_and_malformed_bodies_get_clear_errors(live):
    client = live.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"file_ids": ["file-missing"]})
    assert "file-missing" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"thread_id": "thread_gone"})
    assert err.value.body["code"] == "thread_not_found"

    url = f"{live.url}/v1/chat/completions"
    r = httpx.post(url, json={"messages": "hello"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request" and "messages" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(url, json={"messages": [{"role": "assistant", "content": "hi"}]})
    assert r.status_code == 422 and "last message must be a user message" in r.json()["error"]["message"]
    r = httpx.post(f"{live.url}/v1/files", files={"nofile": ("a.csv", b"1")})
    assert r.status_code == 422 and "'file'" in r.json()["error"]["message"]


def test_api_key_required_when_configured(tmp_path):
    server = LiveServer(create_app(ServeConfig(workspace_root=tmp_path, api_key="s3cret"),
                                   model=ScriptedChatModel([agent_reply])))
    try:
        with pytest.raises(openai.AuthenticationError) as err:
            server.client("wrong").models.list()
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert [m.id for m in server.client("s3cret").models.list().data] == ["scripted"]
        assert httpx.get(server.url + "/health").json()["status"] == "ok"  # health and the page stay open
        assert httpx.get(server.url + "/").status_code == 200
    finally:
        server.stop()


def test_oversize_upload_gets_413(tmp_path):
    server = LiveServer(create_app(ServeConfig(workspace_root=tmp_path, max_upload_mb=0.01),
                                   model=ScriptedChatModel([agent_reply])))
    try:
        big = tmp_path / "big.csv"
        big.write_bytes(b"x\n" + b"1\n" * 20_000)
        with pytest.raises(openai.APIStatusError) as err:
            _upload(server.client(), big)
        assert err.value.status_code == 413 and "larger than the limit" in err.value.body["message"]
        assert list((tmp_path / "files").iterdir()) == []
        # a body sent without Content-Length (chunked) is counted as it arrives
        r = httpx.post(server.url + "/v1/chat/completions", content=iter([b"{" + b" " * 6000, b" " * 6000 + b"}"]),
                       headers={"content-type": "application/json"})
        assert r.status_code == 413
    finally:
        server.stop()


class _GatedModel(ScriptedChatModel):
    """Blocks every call until the test opens the gate: keeps episodes running while the test probes limits."""

    def __init__(self):
        super().__init__([agent_reply])
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    async def chat(self, messages, **kwargs):
        import asyncio

        self.waiting.set()
        await asyncio.to_thread(self.gate.wait, 30)
        return await super().chat(messages, **kwargs)


def test_busy_thread_and_full_queue_get_429(tmp_path):
    model = _GatedModel()
    server = LiveServer(create_app(ServeConfig(workspace_root=tmp_path, max_concurrent=1, max_queued=0), model=model))
    try:
        client = server.client()
        first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q1"}])
        thread_id = first.model_extra["thread_id"]
        model.gate.clear()
        model.waiting.clear()
        results: dict = {}
        worker = threading.Thread(target=lambda: results.setdefault("r", client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q2"}], extra_body={"thread_id": thread_id})))
        worker.start()
        assert model.waiting.wait(10)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q3"}],
                                           extra_body={"thread_id": thread_id})
        assert err.value.body["code"] == "thread_busy"
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "other thread"}])
        assert err.value.body["code"] == "server_busy"
        model.gate.set()
        worker.join(30)
        assert results["r"].model_extra["answer"] == "no code needed"
    finally:
        model.gate.set()
        server.stop()


def test_idle_threads_expire_closing_sessions_and_workspaces(tmp_path):
    config = ServeConfig(workspace_root=tmp_path, mode="session", thread_ttl_s=0.3, cleanup_interval_s=0.1)
    server = LiveServer(create_app(config, model=ScriptedChatModel([agent_reply])))
    try:
        client = server.client()
        q1 = "Set a variable.\n```python\nanswer = 6 * 7\nopen('out.txt', 'w').write('x')\n```"
        first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q1}])
        thread_id = first.model_extra["thread_id"]
        # session mode: the follow-up's cell sees the variable the first cell set
        q2 = "Print it.\n```python\nprint('value', answer)\n```"
        second = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q2}],
                                                extra_body={"thread_id": thread_id})
        assert "value 42" in second.model_extra["answer"]
        out_file = second.model_extra["report_file"]["id"]
        workspace = tmp_path / "threads" / thread_id
        assert workspace.is_dir()
        deadline = time.monotonic() + 15
        while workspace.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not workspace.exists()
        assert httpx.get(f"{server.url}/v1/threads/{thread_id}").status_code == 404
        assert httpx.get(f"{server.url}/v1/files/{out_file}").status_code == 404  # outputs go with their thread
        assert httpx.get(server.url + "/health").json()["threads"] == 0
    finally:
        server.stop()


def test_openai_spec_model_loaded_from_config(tmp_path):
    with FakeOpenAIServer(reply="<Analyze>\nEasy.\n</Analyze>\n<Answer>\n42\n</Answer>") as fake:
        config = ServeConfig(workspace_root=tmp_path, model="openai:fake-model", base_url=fake.base_url)
        server = LiveServer(create_app(config))
        try:
            client = server.client()
            assert [m.id for m in client.models.list().data] == ["openai:fake-model"]
            reply = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "six times seven?"}])
            assert reply.model_extra["answer"] == "42"
            assert fake.count >= 1
        finally:
            server.stop()


def test_serve_command_refuses_bad_options_in_one_line():
    from typer.testing import CliRunner

    from synth.cli import app

    runner = CliRunner()
    bad_mode = runner.invoke(app, ["serve", "--mode", "notebook"])
    assert bad_mode.exit_code == 2 and "--mode" in bad_mode.output and "Traceback" not in bad_mode.output
    bad_spec = runner.invoke(app, ["serve", "--model", "embedded", "--base-url", "http://127.0.0.1:1/v1"])
    assert bad_spec.exit_code == 2 and "--base-url is only for openai" in bad_spec.output
