"""The one interface every language-model backend implements.

Backends are async so that many episodes can share one model concurrently; a backend that is
synchronous underneath (llama.cpp, transformers) runs its calls in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from synth.errors import SynthError


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant" | "execute" (DeepAnalyze-style templates only)
    content: str


ModelFamily = Literal["instruct", "deepanalyze"]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            False,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass
class Completion:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    model: str = ""


class ModelError(SynthError, RuntimeError):
    """A backend failed in a way retrying will not fix (auth, unknown model, missing install, a request the engine
    rejects, such as a prompt longer than its context)."""


class ModelUnavailableError(SynthError, RuntimeError):
    """A backend kept failing transiently (429/5xx/timeouts/connection) after every retry; a later run may work."""


@runtime_checkable
class ChatModel(Protocol):
    """Async chat completion. The contract every backend keeps (tests/test_chat_model_contract.py):

    - `chat` returns a Completion: `text`, `usage` with prompt and completion token counts filled, `finish_reason`
      "stop" (ended, or cut at a stop string) or "length" (hit `max_tokens`).
    - Generation ends at the first stop string, which is NOT part of `text` (OpenAI semantics, whatever the engine
      does): the agent loop re-appends `</Code>` exactly once.
    - `max_tokens` bounds `usage.completion_tokens`; `temperature=0` gives the same text for the same request.
    - Failures raise ModelError (retrying will not help) or ModelUnavailableError (kept failing transiently); both
      are SynthError. `aclose()` may be called more than once.

    `name` is the spec string the model was loaded from (e.g. "embedded:0.5b", "openai:gpt-4o").
    `family` tells the agent loop how to feed Execute output back (DESIGN §3).
    """

    name: str
    family: ModelFamily

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...
