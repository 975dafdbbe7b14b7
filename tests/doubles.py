"""Test doubles. A scripted chat model drives graph and loop logic in unit tests; it is never a product default."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from synth.llm.base import Completion, Message, Usage

Reply = Union[str, Callable[[list[Message]], str]]


class ScriptedChatModel:
    """Answers each `chat` call with the next scripted reply (a string, or a function of the messages).

    Behaves like an OpenAI-compatible engine: generation is cut at the first stop string and the stop string
    itself is NOT returned (so callers must re-append `</Code>` themselves). When the script runs out it
    repeats its last reply, or raises if `strict=True`.
    """

    def __init__(
        self,
        replies: Sequence[Reply],
        *,
        name: str = "scripted",
        family: str = "instruct",
        strict: bool = False,
    ) -> None:
        self.replies = list(replies)
        self.name = name
        self.family = family
        self.strict = strict
        self.calls: list[dict[str, Any]] = []

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        index = len(self.calls)
        self.calls.append(
            {"messages": [dict(m) for m in messages], "stop": stop, "max_tokens": max_tokens,
             "temperature": temperature, "response_format": response_format}
        )
        if index >= len(self.replies):
            if self.strict or not self.replies:
                raise AssertionError(f"ScriptedChatModel ran out of replies after {len(self.replies)} calls")
            index = len(self.replies) - 1
        reply = self.replies[index]
        text = reply(messages) if callable(reply) else reply
        finish = "stop"
        for s in stop or []:
            cut = text.find(s)
            if cut != -1:
                text = text[:cut]
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return Completion(text=text, usage=Usage(prompt_tokens, len(text.split())), finish_reason=finish,
                          model=self.name)

    async def aclose(self) -> None:
        return None
