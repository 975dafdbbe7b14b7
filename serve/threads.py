"""Conversation threads: each owns one sandbox session (its workspace) and the conversation so far.

A follow-up on the same thread runs in the same workspace, so files written earlier are still there, and the model
sees the earlier questions and answers. Idle threads expire: their session is closed (processes killed) and the
workspace removed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from synth.errors import SynthError
from synth.llm.base import Message
from synth.sandbox.base import ExecutionMode, Limits, Sandbox, SandboxSession


class ThreadNotFound(SynthError, KeyError):
    def __str__(self) -> str:
        return f"thread {self.args[0]!r} not found (it expired, was deleted, or never existed)"


class ThreadBusy(SynthError):
    """A request is already running on this thread."""


@dataclass
class Thread:
    id: str
    workspace: Path
    session: SandboxSession
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    history: list[Message] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    # workspace path -> (size, mtime_ns, file id): a generated file is registered again only when it changed
    published: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    busy: bool = False

    def summary(self) -> dict:
        return {"id": self.id, "object": "thread", "created_at": int(self.created_at),
                "messages": len(self.history), "busy": self.busy}


class ThreadStore:
    def __init__(self, root: Path, sandbox: Sandbox, *, mode: ExecutionMode, limits: Limits, ttl_s: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # without bubblewrap the sandbox uid must be able to walk down to its workspace
        self.sandbox = sandbox
        self.mode = mode
        self.limits = limits
        self.ttl_s = ttl_s
        self._threads: dict[str, Thread] = {}

    def __len__(self) -> int:
        return len(self._threads)

    async def create(self, files: Sequence[Path] = ()) -> Thread:
        thread_id = "thread_" + secrets.token_hex(12)
        workspace = self.root / thread_id
        session = await asyncio.to_thread(
            self.sandbox.open, list(files), mode=self.mode, limits=self.limits, workspace=workspace
        )
        thread = Thread(thread_id, Path(session.workspace), session)
        self._threads[thread_id] = thread
        return thread

    def get(self, thread_id: str) -> Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise ThreadNotFound(thread_id)
        return thread

    def claim(self, thread: Thread) -> None:
        """Mark the thread as running a request; ThreadBusy when another one already is (one at a time)."""
        if thread.busy:
            raise ThreadBusy(f"thread {thread.id!r} is still answering an earlier message; retry when it is done")
        thread.busy = True
        thread.last_used = time.monotonic()

    def release(self, thread: Thread) -> None:
        thread.busy = False
        thread.last_used = time.monotonic()

    async def add_files(self, thread: Thread, files: Sequence[tuple[Path, str]]) -> None:
        """Copy (source, name) pairs into the thread's workspace; the sandbox user can read them."""

        def _copy() -> None:
            owner = thread.workspace.stat()
            for source, name in files:
                target = thread.workspace / name
                shutil.copyfile(source, target)
                target.chmod(0o644)
                try:
                    os.chown(target, owner.st_uid, owner.st_gid)
                except PermissionError:
                    pass

        await asyncio.to_thread(_copy)

    async def close(self, thread_id: str) -> Thread:
        thread = self._threads.pop(thread_id, None)
        if thread is None:
            raise ThreadNotFound(thread_id)
        await asyncio.to_thread(self._dispose, thread)
        return thread

    @staticmethod
    def _dispose(thread: Thread) -> None:
        try:
            thread.session.close()
        finally:
            shutil.rmtree(thread.workspace, ignore_errors=True)

    def expired(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [t.id for t in self._threads.values() if not t.busy and now - t.last_used > self.ttl_s]

    async def close_all(self) -> None:
        for thread_id in list(self._threads):
            try:
                await self.close(thread_id)
            except ThreadNotFound:
                pass
