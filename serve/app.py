"""The agent as an OpenAI-compatible HTTP service (DESIGN §12).

    app = create_app(ServeConfig(model="openai:NAME", base_url="http://127.0.0.1:8000/v1"))

`POST /v1/chat/completions` runs the five-action agent loop server-side in the thread's sandbox workspace. Besides
the OpenAI request fields it takes `file_ids` (uploaded files copied into the workspace) and `thread_id` (continue
an earlier conversation in the same workspace). The reply's `choices[0].message.content` is the whole tagged
trajectory; extra fields carry `answer`, `thread_id`, the generated `files`, a `trajectory` summary and `usage`.
With `stream: true` each action is sent as it happens (SSE `chat.completion.chunk`s, then `[DONE]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.config import ServeConfig
from serve.files import FileNotFound, FileObject, FileStore, FileTooLarge, safe_filename
from serve.threads import Thread, ThreadBusy, ThreadNotFound, ThreadStore
from synth import protocol
from synth.errors import SynthError
from synth.llm.base import ChatModel, Message
from synth.sandbox.base import Limits, Sandbox
from synth.trajectory import Trajectory

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"


# --- errors -------------------------------------------------------------------------------------------------------


class APIError(SynthError):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, code: str, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


def _error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            parts.append(f"request body is not valid JSON ({ctx.get('error', err.get('msg'))})")
        else:
            parts.append(f"{where}: {err.get('msg')}")
    return "malformed request: " + "; ".join(parts)


class _BodyLimit:
    """ASGI middleware: 413 for any request body over the limit, told by Content-Length or counted as it arrives."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = APIError(413, f"request body is larger than the limit of {self.max_bytes} bytes "
                                  f"(--max-upload-mb)", "request_too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await _error_response(too_large, {"connection": "close"})(scope, receive, send)
        seen = 0
        started = False
        refused = False

        async def counted_receive():
            # Past the limit we answer 413 ourselves and tell the app the client left: whatever it does next
            # (FastAPI turns a failed body read into 400) is dropped.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if not started and not refused:
                        refused = True
                        await _error_response(too_large, {"connection": "close"})(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)


# --- request shapes -----------------------------------------------------------------------------------------------


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class ChatRequest(BaseModel):
    # OpenAI clients send fields an agent has no use for (n, seed, user, …): ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    file_ids: list[str] = Field(default_factory=list)
    thread_id: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_rounds: int | None = Field(None, ge=1, description="Lower the server's round cap for this request.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens per model turn for this request (capped by the "
                                                          "server's max_tokens_per_turn).")


# --- the service --------------------------------------------------------------------------------------------------


@dataclass
class _Episode:
    """One request's agent run, streamed or not."""

    thread: Thread
    instruction: str
    history: list[Message]
    temperature: float | None
    max_rounds: int
    max_tokens_per_turn: int
    completion_id: str
    created: int


class _Service:
    def __init__(self, config: ServeConfig, model: ChatModel | None, sandbox: Sandbox | None):
        self.config = config
        self.model = model
        self.owns_model = model is None
        self.sandbox = sandbox
        self.root: Path | None = None
        self.owns_root = config.workspace_root is None
        self.files: FileStore | None = None
        self.threads: ThreadStore | None = None
        self.slots = asyncio.Semaphore(config.max_concurrent)
        self.admitted = 0  # requests running or waiting for a slot
        self.running = 0
        self.background: set[asyncio.Task] = set()
        self._cleanup_task: asyncio.Task | None = None
        self.executor = None

    async def start(self) -> None:
        cfg = self.config
        if self.owns_root:
            self.root = Path(tempfile.mkdtemp(prefix="ds-synth-serve-"))
        else:
            self.root = Path(cfg.workspace_root).resolve()  # type: ignore[arg-type]
            self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        # Every running cell holds a worker thread (run_agent uses asyncio.to_thread) for up to --cell-timeout;
        # the default pool (cores + 4) would silently cap episodes and starve uploads behind long cells.
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(max_workers=cfg.max_concurrent + 16, thread_name_prefix="ds-synth-serve")
        asyncio.get_running_loop().set_default_executor(self.executor)
        if self.model is None:
            from synth.llm import load_model

            self.model = load_model(cfg.model, **({"base_url": cfg.base_url} if cfg.base_url else {}))
        if self.sandbox is None:
            from synth.sandbox import get_sandbox

            self.sandbox = get_sandbox(cfg.sandbox)
        self.files = FileStore(self.root / "files")
        self.threads = ThreadStore(self.root / "threads", self.sandbox, mode=cfg.mode,
                                   limits=Limits(timeout_s=cfg.cell_timeout_s), ttl_s=cfg.thread_ttl_s)
        self._cleanup_task = asyncio.create_task(self._cleanup_loop())

    async def stop(self) -> None:
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.threads is not None:
            await self.threads.close_all()
        if self.owns_model and self.model is not None:
            with contextlib.suppress(Exception):
                await self.model.aclose()
        if self.owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        if self.executor is not None:
            self.executor.shutdown(wait=False)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval_s)
            await self.expire()

    async def expire(self) -> int:
        """Close idle threads past their TTL; how many went."""
        assert self.threads is not None and self.files is not None
        gone = 0
        for thread_id in self.threads.expired():
            with contextlib.suppress(ThreadNotFound):
                await self.delete_thread(thread_id)
                gone += 1
        return gone

    async def delete_thread(self, thread_id: str) -> Thread:
        assert self.threads is not None and self.files is not None
        thread = self.threads.get(thread_id)
        if thread.busy:
            raise APIError(409, f"thread {thread_id!r} is answering a message; delete it when that is done",
                           "thread_busy")
        await self.threads.close(thread_id)
        await asyncio.to_thread(self.files.delete_thread_outputs, thread_id)
        return thread

    # --- chat ---------------------------------------------------------------------------------------------------

    async def prepare(self, req: ChatRequest) -> _Episode:
        """Check the request, admit it, claim (or create) its thread. Every refusal happens here, before any output."""
        assert self.threads is not None and self.files is not None
        last = req.messages[-1]
        if last.role != "user" or not last.text().strip():
            raise APIError(422, "malformed request: messages: the last message must be a user message with text "
                                "(the question for the agent)", "invalid_messages")
        inputs: list[tuple[Path, str]] = []
        for index, file_id in enumerate(req.file_ids):
            try:
                obj = self.files.get(file_id)
            except FileNotFound:
                raise APIError(404, f"file_ids[{index}]: no file with id {file_id!r}", "file_not_found") from None
            if any(name == obj.filename for _, name in inputs):
                raise APIError(422, f"file_ids[{index}]: two files are named {obj.filename!r}; rename one",
                               "duplicate_file_name")
            inputs.append((self.files.path(file_id), obj.filename))
        thread: Thread | None = None
        if req.thread_id is not None:
            try:
                thread = self.threads.get(req.thread_id)
            except ThreadNotFound as exc:
                raise APIError(404, f"thread_id: {exc}", "thread_not_found") from None
            if thread.busy:
                raise APIError(429, f"thread {thread.id!r} is still answering an earlier message; "
                                    "retry when it is done", "thread_busy")
        if self.admitted >= self.config.max_concurrent + self.config.max_queued:
            raise APIError(429, f"server busy: {self.admitted} requests running or queued "
                                f"(--max-concurrent {self.config.max_concurrent})", "server_busy")

        self.admitted += 1
        try:
            if thread is None:
                thread = await self.threads.create([p for p, _ in inputs])
                thread.history = _history_from_request(req.messages[:-1])
            elif inputs:
                await self.threads.add_files(thread, inputs)
            self.threads.claim(thread)
        except ThreadBusy as exc:
            self.admitted -= 1
            raise APIError(429, str(exc), "thread_busy") from None
        except BaseException:
            self.admitted -= 1
            raise
        system = "\n\n".join(m.text() for m in req.messages[:-1] if m.role in ("system", "developer") and m.text())
        instruction = f"{system}\n\n{last.text()}" if system else last.text()
        rounds = min(req.max_rounds or self.config.max_rounds, self.config.max_rounds)
        tokens = min(req.max_tokens or self.config.max_tokens_per_turn, self.config.max_tokens_per_turn)
        return _Episode(thread, instruction.strip(), list(thread.history), req.temperature, rounds, tokens,
                        "chatcmpl-" + secrets.token_hex(12), int(time.time()))

    async def run(self, ep: _Episode, emit: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> dict:
        """Run the admitted episode; return the final extra fields. Releases the thread and the admission."""
        from synth.agent import AgentConfig, run_agent

        assert self.threads is not None and self.model is not None
        published: dict[str, FileObject] = {}
        try:
            async with self.slots:
                self.running += 1
                try:
                    async def on_event(kind: str, payload: dict[str, Any]) -> None:
                        new_files: list[FileObject] = []
                        if kind == "Execute":
                            new_files = await self._publish(ep.thread, payload["result"].files_changed)
                            published.update({f.filename: f for f in new_files})
                        if emit is not None:
                            await emit(_event_chunk(kind, payload, new_files))

                    cfg = AgentConfig(max_rounds=ep.max_rounds, cell_timeout_s=self.config.cell_timeout_s,
                                      max_tokens_per_turn=ep.max_tokens_per_turn,
                                      temperature=ep.temperature)
                    traj = await run_agent(self.model, ep.thread.session, ep.instruction, config=cfg,
                                           history=ep.history, on_event=on_event)
                finally:
                    self.running -= 1
            self._remember(ep.thread, traj)
            report = await asyncio.to_thread(
                self.files.add_bytes, _report(ep.instruction, traj).encode(), "report.md",  # type: ignore[union-attr]
                purpose="assistants_output", thread_id=ep.thread.id,
            )
            return {"trajectory": traj, "files": list(published.values()), "report_file": report}
        finally:
            self.threads.release(ep.thread)
            self.admitted -= 1

    async def _publish(self, thread: Thread, changed: list[str]) -> list[FileObject]:
        """Copy files the agent wrote into the file store (once per version) so clients can download them."""
        assert self.files is not None

        def _copy() -> list[FileObject]:
            out = []
            for rel in changed:
                path = thread.workspace / rel
                try:
                    st = path.stat()
                except OSError:
                    continue
                if not path.is_file() or any(part.startswith(".") for part in Path(rel).parts):
                    continue
                known = thread.published.get(rel)
                if known and known[:2] == (st.st_size, st.st_mtime_ns):
                    continue
                try:
                    obj = self.files.add_path(path, filename=Path(rel).name, thread_id=thread.id)  # type: ignore[union-attr]
                except (OSError, ValueError) as exc:
                    log.warning("could not publish %s of %s: %s", rel, thread.id, exc)
                    continue
                thread.published[rel] = (st.st_size, st.st_mtime_ns, obj.id)
                out.append(obj)
            return out

        return await asyncio.to_thread(_copy)

    def _remember(self, thread: Thread, traj: Trajectory) -> None:
        """Add the exchange to the thread's history, keeping it under max_history_chars (oldest shortened first)."""
        thread.history += [{"role": "user", "content": traj.prompt},
                           {"role": "assistant", "content": traj.assistant_text()}]
        thread.answers.append(traj.answer)
        limit = self.config.max_history_chars
        pair = 0
        while sum(len(m["content"]) for m in thread.history) > limit and pair < len(thread.answers) - 1:
            answer = thread.answers[pair]
            short = f"<Answer>\n{answer}\n</Answer>" if answer else "<Answer>\n(no answer was reached)\n</Answer>"
            thread.history[2 * pair + 1] = {"role": "assistant", "content": short}
            pair += 1
        while sum(len(m["content"]) for m in thread.history) > limit and len(thread.answers) > 1:
            del thread.history[:2]
            del thread.answers[0]


def _history_from_request(messages: list[ChatMessageIn]) -> list[Message]:
    return [{"role": m.role, "content": m.text()} for m in messages if m.role in ("user", "assistant") and m.text()]


def _report(question: str, traj: Trajectory) -> str:
    answer = traj.answer if traj.answer is not None else f"_No answer: the analysis stopped ({traj.stop_reason})._"
    return f"# {question.strip()}\n\n{answer.strip()}\n"


def _summary(traj: Trajectory) -> dict[str, Any]:
    results = traj.results()
    return {
        "rounds": len(traj.turns),
        "code_cells": len(traj.code_cells()),
        "failed_cells": sum(1 for r in results if not r.ok),
        "stop_reason": traj.stop_reason,
        "mode": traj.mode,
        "model": traj.model,
        "duration_s": round(traj.duration_s, 4),
        "execution_s": round(sum(r.duration_s for r in results), 4),
        "model_s": round(max(traj.duration_s - sum(t.duration_s for t in traj.turns), 0.0), 4),
        "notes": [n for t in traj.turns for n in t.notes],
        "error": traj.error,
    }


def _usage(traj: Trajectory) -> dict[str, int]:
    u = traj.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _finish_reason(traj: Trajectory) -> str:
    return "stop" if traj.stop_reason == "answer" else "length"


def _event_chunk(kind: str, payload: dict[str, Any], files: list[FileObject]) -> dict[str, Any]:
    """The extra fields and content delta of one streamed action (ids are filled in by the streamer)."""
    chunk: dict[str, Any] = {"action": {"kind": kind, "round": payload.get("round")}}
    if kind in ("Analyze", "Understand", "Code", "Answer"):
        chunk["content"] = protocol.wrap(kind, payload.get("content", "")) + "\n"
    elif kind == "Execute":
        result = payload["result"]
        chunk["content"] = f"\n<Execute>\n{payload.get('content', '')}\n</Execute>\n"
        chunk["execution"] = {"ok": result.ok, "timed_out": result.timed_out,
                              "duration_s": result.duration_s, "files_changed": result.files_changed}
        chunk["files"] = [f.to_dict() for f in files]
    elif kind == "note":
        chunk["note"] = payload.get("note")
    elif kind == "stop":
        chunk["stop"] = {k: payload.get(k) for k in ("stop_reason", "error")}
    return chunk


# --- the app ------------------------------------------------------------------------------------------------------


def create_app(config: ServeConfig | None = None, *, model: ChatModel | None = None,
               sandbox: Sandbox | None = None) -> FastAPI:
    """The FastAPI app. `model` replaces loading `config.model` (tests inject a double); `sandbox` the backend."""
    config = config or ServeConfig()
    service = _Service(config, model, sandbox)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="ds-synth agent", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error_response(APIError(422, _validation_message(exc), "invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error_response(APIError(exc.status_code, message, code), getattr(exc, "headers", None))

    async def check_auth(request: Request) -> None:
        if not config.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), config.api_key):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", "invalid_api_key")

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_auth)])

    @api.get("/models")
    async def list_models():
        name = service.model.name if service.model else (config.model or "embedded")
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ds-synth"}]}

    @api.post("/files")
    async def upload_file(request: Request):
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile) and not hasattr(upload, "filename"):
                raise APIError(422, "malformed request: multipart field 'file' is missing", "invalid_request")
            purpose = form.get("purpose") or "assistants"
            if not isinstance(purpose, str):
                raise APIError(422, "malformed request: 'purpose' must be text", "invalid_request")
            try:
                safe_filename(upload.filename)
            except ValueError as exc:
                raise APIError(422, f"file: {exc}", "invalid_file_name") from None
            try:
                obj = await asyncio.to_thread(service.files.add_stream, upload.file, upload.filename,
                                              purpose=purpose, max_bytes=config.max_body_bytes)
            except FileTooLarge as exc:
                raise APIError(413, f"{exc} (--max-upload-mb)", "file_too_large") from None
        finally:
            await form.close()
        return obj.to_dict()

    @api.get("/files")
    async def list_files(purpose: str | None = None):
        return {"object": "list", "data": [o.to_dict() for o in service.files.list(purpose)], "has_more": False}

    def _file(file_id: str) -> FileObject:
        try:
            return service.files.get(file_id)
        except FileNotFound:
            raise APIError(404, f"no file with id {file_id!r}", "file_not_found") from None

    @api.get("/files/{file_id}")
    async def get_file(file_id: str):
        return _file(file_id).to_dict()

    @api.get("/files/{file_id}/content")
    async def file_content(file_id: str):
        obj = _file(file_id)
        return FileResponse(service.files.path(file_id), filename=obj.filename, content_disposition_type="inline")

    @api.delete("/files/{file_id}")
    async def delete_file(file_id: str):
        _file(file_id)
        with contextlib.suppress(FileNotFound):
            service.files.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @api.get("/threads/{thread_id}")
    async def get_thread(thread_id: str):
        try:
            return service.threads.get(thread_id).summary()
        except ThreadNotFound as exc:
            raise APIError(404, str(exc), "thread_not_found") from None

    @api.delete("/threads/{thread_id}")
    async def delete_thread(thread_id: str):
        try:
            await service.delete_thread(thread_id)
        except ThreadNotFound as exc:
            raise APIError(404, str(exc), "thread_not_found") from None
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    @api.post("/chat/completions")
    async def chat_completions(req: ChatRequest):
        ep = await service.prepare(req)
        model_name = service.model.name
        if req.stream:
            return _stream(service, ep, model_name, include_usage=bool((req.stream_options or {}).get("include_usage")))
        outcome = await service.run(ep)
        traj: Trajectory = outcome["trajectory"]
        if traj.stop_reason == "model_error":
            raise APIError(502, f"the model backend failed: {traj.error}", "model_error", type="server_error")
        return {
            "id": ep.completion_id, "object": "chat.completion", "created": ep.created, "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": traj.assistant_text()},
                         "finish_reason": _finish_reason(traj), "logprobs": None}],
            "usage": _usage(traj),
            **_final_extras(ep, outcome),
        }

    app.include_router(api)

    @app.get("/health")
    async def health():
        threads = len(service.threads) if service.threads is not None else 0
        return {"status": "ok", "model": service.model.name if service.model else None, "threads": threads,
                "running": service.running, "queued": max(service.admitted - service.running, 0)}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _final_extras(ep: _Episode, outcome: dict) -> dict[str, Any]:
    traj: Trajectory = outcome["trajectory"]
    return {"answer": traj.answer, "thread_id": ep.thread.id, "files": [f.to_dict() for f in outcome["files"]],
            "report_file": outcome["report_file"].to_dict(), "trajectory": _summary(traj)}


def _stream(service: _Service, ep: _Episode, model_name: str, *, include_usage: bool) -> StreamingResponse:
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": ep.completion_id, "object": "chat.completion.chunk", "created": ep.created,
                "model": model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "thread_id": ep.thread.id, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def emit(event: dict[str, Any]) -> None:
        if event["action"]["kind"] == "stop":
            return  # the final chunk below says how it ended, with the answer and files
        content = event.pop("content", None)
        await queue.put(chunk({"content": content} if content is not None else {}, **event))

    async def produce() -> None:
        # Runs as its own task: a client that disconnects does not cut the episode short, so the thread's
        # workspace and history stay consistent for a follow-up.
        try:
            outcome = await service.run(ep, emit)
            traj: Trajectory = outcome["trajectory"]
            if traj.stop_reason == "model_error":
                err = APIError(502, f"the model backend failed: {traj.error}", "model_error", type="server_error")
                await queue.put(f"data: {json.dumps(err.body())}\n\n")
            else:
                await queue.put(chunk({}, _finish_reason(traj), usage=_usage(traj), **_final_extras(ep, outcome)))
                if include_usage:
                    body = {"id": ep.completion_id, "object": "chat.completion.chunk", "created": ep.created,
                            "model": model_name, "choices": [], "usage": _usage(traj)}
                    await queue.put(f"data: {json.dumps(body)}\n\n")
        except Exception as exc:  # an internal failure still ends the stream with an error event, never a hang
            log.exception("episode on %s failed", ep.thread.id)
            err = APIError(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error", type="server_error")
            await queue.put(f"data: {json.dumps(err.body())}\n\n")
        finally:
            await queue.put(done)

    task = asyncio.create_task(produce())
    service.background.add(task)
    task.add_done_callback(service.background.discard)

    async def body():
        yield chunk({"role": "assistant", "content": ""})
        while True:
            item = await queue.get()
            if item is done:
                break
            yield item
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
