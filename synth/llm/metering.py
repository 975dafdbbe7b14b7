"""Per-node usage metering over a ChatModel shared by many episodes (tokens, cost, calls, seconds in the model)."""

from __future__ import annotations

import time
from typing import Any

from synth.llm.base import ChatModel, Completion, Message, Usage


class MeteredModel:
    """Wraps a shared ChatModel to count one node's usage (the model itself is shared across episodes)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.family = inner.family
        self.usage = Usage()
        self.calls = 0
        self.seconds = 0.0  # wall time spent waiting for the model (a cache hit costs ~0)

    async def chat(self, messages: list[Message], **kwargs: Any) -> Completion:
        started = time.monotonic()
        try:
            completion = await self.inner.chat(messages, **kwargs)
        finally:
            self.seconds += time.monotonic() - started
        self.usage = self.usage + completion.usage
        self.calls += 1
        return completion

    async def aclose(self) -> None:  # the run owns the inner model
        return None


def add_usage(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    out = dict(left or {})
    for key, value in (right or {}).items():
        out[key] = out.get(key, 0) + value
    return out


def usage_totals(*meters: MeteredModel) -> dict[str, float]:
    total = Usage()
    for m in meters:
        total = total + m.usage
    return {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
            "cost_usd": total.cost_usd, "llm_calls": sum(m.calls for m in meters),
            "model_s": round(sum(m.seconds for m in meters), 3)}
