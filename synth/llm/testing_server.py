"""A tiny local OpenAI-compatible HTTP server for tests and benchmarks — never a product default.

It serves `POST /v1/chat/completions` (plain JSON and `stream: true` SSE) and `GET /v1/models` on 127.0.0.1 with
scripted replies, a fixed latency, injected failures and an optional API key, and it records what it saw (request
bodies, arrival times, the maximum number of requests in flight) so tests can check client behaviour from the
server's side.

    with FakeOpenAIServer(reply="hello", latency_s=0.05, failures=[429, 500]) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union

Reply = Union[str, Callable[[dict[str, Any]], str]]


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    arrived: float  # time.monotonic() when the request was read
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class RoleScript:
    """A deterministic questioner / solver / inspector for `synth generate` over a FakeOpenAIServer.

    The role is recognised from the request alone: the questioner writes `task(category, difficulty, file)` about
    the file its prompt names, the inspector passes every judged item, the verifier replies `program` (a Python
    program printing `ANSWER: …`; default OPEN: nothing to verify), the solver sends `code` and, once an
    <Execute> came back, `answer`. Use it as the server's reply: `FakeOpenAIServer(reply=RoleScript(...))`.
    """

    def __init__(self, task: Callable[[str, str, str], str], code: str, answer: str,
                 program: str | None = None) -> None:
        self.task = task
        self.code = code
        self.answer = answer
        self.program = program

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        last = messages[-1]["content"]
        if "You write data-science tasks" in system:
            asked = next(m["content"] for m in reversed(messages) if m["content"].startswith("Category: "))
            kind = re.search(r"Category: (\w+)\. Difficulty: (\w+)\.", asked)  # the request, also on a repair
            file = re.search(r"^File: (\S+)", asked, re.MULTILINE)
            name = file.group(1) if file else ""
            return json.dumps({"instruction": self.task(kind.group(1), kind.group(2), name), "files": [name],
                               "deliverables": [], "reference_answer": None, "checklist": []})
        if "You check data-science tasks by computing" in system:
            return f"```python\n{self.program}\n```" if self.program else "OPEN"
        if "You review the work" in system:
            ids = re.findall(r"- id (\S+):", last)
            answer = re.search(r"<Answer>(.*?)</Answer>", " ".join(m["content"] for m in messages), re.S)
            quote = answer.group(1).strip().splitlines()[0] if answer and answer.group(1).strip() else ""
            return json.dumps({"answers": [{"id": i, "quote": quote, "pass": True, "reason": f"{quote} is printed"}
                                           for i in ids]})
        return self.answer if "<Execute>" in last else self.code


class FakeOpenAIServer:
    """OpenAI-compatible chat server on a free loopback port, run in a background thread.

    reply:          the assistant text, or a function of the request body returning it.
    latency_s:      seconds every request sleeps before answering (after failure injection is decided).
    failures:       HTTP statuses answered to the first len(failures) requests, in order (e.g. [429, 500]).
    retry_after:    value of the Retry-After header sent with injected 429/503 answers (seconds), if any.
    api_key:        when set, requests without `Authorization: Bearer <api_key>` get 401.
    models:         when set, requests for any other model get 404.
    include_stop:   mimic llama.cpp's server, which leaves the matched stop string inside the content.
    """

    def __init__(
        self,
        *,
        reply: Reply = "ok",
        latency_s: float = 0.0,
        failures: Iterable[int] = (),
        retry_after: float | None = None,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        include_stop: bool = False,
    ) -> None:
        self.reply = reply
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.api_key = api_key
        self.models = set(models) if models is not None else None
        self.include_stop = include_stop
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures = list(failures)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "FakeOpenAIServer":
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # Benchmarks open many connections at once; the default backlog of 5 would make clients wait on SYNs.
        self._httpd.request_queue_size = 1024
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; use it as a context manager or call start()")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- behaviour -------------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Requests received on the chat endpoint, failed ones included."""
        return len(self.requests)

    def add_failures(self, *statuses: int) -> None:
        with self._lock:
            self._failures.extend(statuses)

    def _admit(self, body: dict[str, Any], headers: dict[str, str]) -> RecordedRequest:
        with self._lock:
            record = RecordedRequest(body=body, arrived=time.monotonic(), headers=headers)
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self._failures:
                record.status = self._failures.pop(0)
        return record

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _reply_text(self, body: dict[str, Any]) -> tuple[str, str]:
        text = self.reply(body) if callable(self.reply) else self.reply
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        cuts = [(text.find(s), s) for s in stop if s and text.find(s) != -1]
        if cuts:
            at, matched = min(cuts)
            return (text[: at + len(matched)] if self.include_stop else text[:at]), "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        # Tokens are whitespace-separated words (as in the usage counts); a cut keeps the text up to the last one.
        words = list(re.finditer(r"\S+", text))
        if max_tokens is not None and len(words) > int(max_tokens):
            return text[: words[int(max_tokens) - 1].end()] if int(max_tokens) > 0 else "", "length"
        return text, "stop"


def _count_tokens(text: str) -> int:
    # Whitespace words stand in for tokens: deterministic and easy to assert on.
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            names = sorted(self.fake.models or {"fake-model"})
            self._send_json(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
        else:
            self._send_error(404, f"no route {self.path}", "not_found_error")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route {self.path}", "not_found_error")
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_error(400, "request body is not JSON", "invalid_request_error")
            return
        fake = self.fake
        record = fake._admit(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            if fake.latency_s:
                time.sleep(fake.latency_s)
            if record.status != 200:
                headers = {}
                if fake.retry_after is not None and record.status in (429, 503):
                    headers["Retry-After"] = str(fake.retry_after)
                self._send_error(record.status, f"injected failure {record.status}", "server_error", headers)
                return
            if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                record.status = 401
                self._send_error(401, "Incorrect API key provided", "invalid_api_key")
                return
            model = body.get("model", "")
            if fake.models is not None and model not in fake.models:
                record.status = 404
                self._send_error(404, f"The model `{model}` does not exist", "model_not_found")
                return
            messages = body.get("messages")
            if not isinstance(messages, list):
                record.status = 400
                self._send_error(400, "'messages' must be an array", "invalid_request_error")
                return
            text, finish = fake._reply_text(body)
            prompt_tokens = sum(_count_tokens(str(m.get("content", ""))) for m in messages)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _count_tokens(text),
                     "total_tokens": prompt_tokens + _count_tokens(text)}
            if body.get("stream"):
                self._send_stream(model, text, finish, usage)
            else:
                self._send_json(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish}],
                    "usage": usage,
                })
        finally:
            fake._release()

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": code, "code": code}}, headers)

    def _send_stream(self, model: str, text: str, finish: str, usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        pieces = [p + " " for p in text.split(" ")]
        if pieces:
            pieces[-1] = pieces[-1][:-1]
        for index, piece in enumerate(pieces):
            delta = {"content": piece} if index else {"role": "assistant", "content": piece}
            self._send_event({"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
                              "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._send_event({"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
                          "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                          "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _send_event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
