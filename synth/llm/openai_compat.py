"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, SGLang, llama.cpp server, Ollama …) via the openai SDK.

What it adds over the bare SDK: bounded concurrency, RPM/TPM limits (token buckets), retries with exponential
backoff + full jitter on 429/5xx/timeouts/connection errors (honouring Retry-After), OpenAI stop semantics even on
servers that echo the stop string, and usage/cost accounting. Auth (401/403), unknown model (404) and other 4xx
answers raise ModelError at once: retrying will not fix them.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
from typing import Any

from synth.llm._util import check_family, cut_at_stop, family_from_name
from synth.llm.base import Completion, Message, ModelError, ModelUnavailableError, Usage

_OPENAI_STOP_LIMIT = 4  # the OpenAI API accepts at most 4 stop strings; the rest are applied client-side


class _TokenBucket:
    """Rate limit as a token bucket holding at most one second's worth of budget.

    Each caller reserves its amount at once (the balance may go negative) and sleeps until the bucket has refilled
    to cover it, so waiters are served in arrival order and a large request simply waits longer. Time-based and
    guarded by a thread lock, so one bucket can be shared by several event loops.
    """

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError(f"rate limit must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float) -> None:
        with self._lock:
            self._refill()
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            await asyncio.sleep(wait)

    def adjust(self, amount: float) -> None:
        """Charge (or refund, if negative) the difference between an estimate and the real usage."""
        with self._lock:
            self._refill()
            self._tokens = min(self.capacity, self._tokens - amount)


class OpenAIChatModel:
    """ChatModel over an OpenAI-compatible endpoint.

    Options: base_url (else $OPENAI_BASE_URL, else api.openai.com), api_key (else $OPENAI_API_KEY; a local
    base_url works without one), max_concurrency, rpm, tpm, max_retries, timeout_s, backoff_base_s, backoff_max_s,
    input_price_per_m / output_price_per_m (USD per 1M tokens), seed, family ("instruct" | "deepanalyze").
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        input_price_per_m: float = 0.0,
        output_price_per_m: float = 0.0,
        seed: int | None = None,
        family: str | None = None,
    ) -> None:
        if not model:
            raise ValueError("openai backend: a model name is required, e.g. 'openai:gpt-4o-mini'")
        if max_concurrency < 1:
            raise ValueError(f"openai:{model}: max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"openai:{model}: max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.name = name or f"openai:{model}"
        self.family = check_family(family, self.name) if family else family_from_name(model)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if "api.openai.com" in self.base_url:
                raise ModelError(f"{self.name}: no API key; set OPENAI_API_KEY or pass api_key / --api-key")
            key = "not-needed"  # local OpenAI-compatible servers usually ignore the key, but the SDK wants one
        self._api_key = key
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.input_price_per_m = float(input_price_per_m)
        self.output_price_per_m = float(output_price_per_m)
        self.seed = seed
        self._rpm = _TokenBucket(float(rpm)) if rpm else None
        self._tpm = _TokenBucket(float(tpm)) if tpm else None
        self.attempts = 0  # HTTP calls made, retries included
        self.retries = 0
        self.total_usage = Usage()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def _bind_loop(self) -> tuple[Any, asyncio.Semaphore]:
        # The SDK's HTTP client and asyncio primitives belong to one event loop; rebuild them if the caller moved
        # to another loop (tests, or a CLI that calls asyncio.run more than once).
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout_s
            )
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        assert self._semaphore is not None
        return self._client, self._semaphore

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        import openai

        client, semaphore = self._bind_loop()
        request: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        if stop:
            request["stop"] = list(stop)[:_OPENAI_STOP_LIMIT]
        if max_tokens is not None:
            request["max_tokens"] = int(max_tokens)
        if temperature is not None:
            request["temperature"] = float(temperature)
        if response_format is not None:
            request["response_format"] = response_format
        if self.seed is not None:
            request["seed"] = int(self.seed)
        estimate = _estimate_tokens(messages) + (max_tokens or 256)

        attempt = 0
        while True:
            if self._rpm is not None:
                await self._rpm.acquire(1)
            if self._tpm is not None:
                await self._tpm.acquire(estimate)
            try:
                async with semaphore:
                    self.attempts += 1
                    response = await client.chat.completions.create(**request)
                break
            except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
                raise ModelError(
                    f"{self.name}: authentication failed at {self.base_url} (HTTP {error.status_code}): "
                    f"{_error_message(error)}; check OPENAI_API_KEY / --api-key"
                ) from None
            except openai.NotFoundError as error:
                raise ModelError(
                    f"{self.name}: model {self.model!r} not found at {self.base_url} (HTTP 404): "
                    f"{_error_message(error)}"
                ) from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as error:
                last_error, retry_after = error, _retry_after(error)
            except openai.APIStatusError as error:
                if error.status_code in (408, 409) or error.status_code >= 500:
                    last_error, retry_after = error, _retry_after(error)
                else:
                    raise ModelError(
                        f"{self.name}: request rejected by {self.base_url} (HTTP {error.status_code}): "
                        f"{_error_message(error)}"
                    ) from None
            if attempt >= self.max_retries:
                raise ModelUnavailableError(
                    f"{self.name}: {self.base_url} still failing after {attempt + 1} attempts: "
                    f"{type(last_error).__name__}: {_error_message(last_error)}"
                )
            delay = self._backoff(attempt, retry_after)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay)

        choice = response.choices[0] if response.choices else None
        raw_text = (choice.message.content if choice is not None and choice.message else None) or ""
        text, cut = cut_at_stop(raw_text, stop)
        finish = choice.finish_reason if choice is not None and choice.finish_reason else "stop"
        if cut:
            finish = "stop"
        elif finish not in ("stop", "length"):
            finish = "error" if finish == "content_filter" else "stop"
        prompt_tokens = int(getattr(response.usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(response.usage, "completion_tokens", 0) or 0)
        if self._tpm is not None and response.usage is not None:
            self._tpm.adjust(prompt_tokens + completion_tokens - estimate)
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=(prompt_tokens * self.input_price_per_m + completion_tokens * self.output_price_per_m) / 1e6,
        )
        self.total_usage = self.total_usage + usage
        return Completion(text=text, usage=usage, finish_reason=finish, model=response.model or self.model)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        # Full jitter: spreads retries of many concurrent callers so they do not hit the server in lockstep.
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * (2**attempt)))

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except RuntimeError:  # its event loop is already closed; nothing left to release
                pass


def _estimate_tokens(messages: list[Message]) -> int:
    # ~4 characters per token is the usual English/code average; only used to pre-charge the TPM bucket.
    return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages)


def _error_message(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(error, "message", None) or error)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
