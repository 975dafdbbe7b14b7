"""SQLite response cache shared by all backends: re-runs are free and interrupted runs resume.

The key is a sha256 over everything that determines an answer (backend spec, model, messages, stop, max_tokens,
temperature, response_format, seed). The database runs in WAL mode with a busy timeout and one short transaction
per read or write, so many coroutines and several processes can share one file. Identical requests that arrive
while the first is still being generated wait for it instead of asking the model twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from synth.llm.base import ChatModel, Completion, Message, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(
    inner: Any,
    messages: list[Message],
    *,
    stop: list[str] | None,
    max_tokens: int | None,
    temperature: float | None,
    response_format: dict[str, Any] | None,
) -> str:
    payload = {
        "backend": getattr(inner, "name", type(inner).__name__),
        "model": getattr(inner, "model", None),
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "stop": list(stop) if stop else None,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "response_format": response_format,
        "seed": getattr(inner, "seed", None),
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class ResponseCache:
    """The SQLite file: get/put completions by key. Thread-safe; several processes may open the same file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Switching a fresh file to WAL needs an exclusive lock and SQLite does not always wait for it through the
        # busy timeout, so two processes opening one new cache at once can see "database is locked": retry that.
        deadline = time.monotonic() + 60.0
        delay = 0.01
        while True:
            db = None
            try:
                db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                return db
            except sqlite3.OperationalError as error:
                if db is not None:
                    db.close()
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise ValueError(f"response cache {self.path}: not a usable SQLite database ({error})") from None
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as error:
                if db is not None:
                    db.close()
                raise ValueError(f"response cache {self.path}: not a usable SQLite database ({error})") from None

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, model, prompt_tokens, completion_tokens FROM responses WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        text, finish, model, prompt_tokens, completion_tokens = row
        # A hit costs nothing now; the token counts stay for statistics.
        return Completion(text=text, usage=Usage(prompt_tokens, completion_tokens, 0.0, cached=True),
                          finish_reason=finish, model=model)

    def put(self, key: str, backend: str, completion: Completion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, backend, completion.model, completion.text, completion.finish_reason,
                 completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.cost_usd,
                 time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedChatModel:
    """Wraps any ChatModel with the response cache. `hits` / `misses` count this wrapper's lookups."""

    def __init__(self, inner: ChatModel, path: str | Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.family = inner.family
        self.cache = ResponseCache(path)
        self.hits = 0
        self.misses = 0
        self._pending: dict[str, asyncio.Future[Completion]] = {}

    def __getattr__(self, attribute: str) -> Any:
        # Backend-specific attributes (model, seed, attempts …) stay reachable through the wrapper.
        return getattr(self.inner, attribute)

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        key = cache_key(self.inner, messages, stop=stop, max_tokens=max_tokens, temperature=temperature,
                        response_format=response_format)
        # WAL readers never wait for writers, so a lookup is a few microseconds: done inline, no thread hop.
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        pending = self._pending.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            self.hits += 1
            done = await asyncio.shield(pending)
            return Completion(done.text, Usage(done.usage.prompt_tokens, done.usage.completion_tokens, 0.0, True),
                              done.finish_reason, done.model)
        self.misses += 1
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            completion = await self.inner.chat(messages, stop=stop, max_tokens=max_tokens, temperature=temperature,
                                               response_format=response_format)
            if completion.finish_reason != "error":
                await asyncio.to_thread(self.cache.put, key, self.inner.name, completion)
            future.set_result(completion)
            return completion
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it, and no "never retrieved" warning otherwise
            raise
        finally:
            self._pending.pop(key, None)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.cache.close()
