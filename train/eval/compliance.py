"""Protocol compliance of a model's raw replies: did it write the five-action format itself?

The agent loop repairs what it can (an unclosed tag, text outside tags, an invented `<Execute>` …) so an episode
can go on; compliance measures the model before those repairs. A reply complies when, with the `</Code>` stop
string put back where the engine cut it, it has at least one action, every piece of text sits inside an
`<Analyze>`/`<Understand>`/`<Code>`/`<Answer>` tag, every tag is closed, no tag is nested in another, it holds no
`<Execute>` (the harness writes those) and nothing follows `</Answer>`. A reply that continues an episode need not
start with `<Analyze>`.
"""

from __future__ import annotations

from typing import Any

from synth import protocol

_IGNORED = {"not_starting_with_analyze", "missing_answer"}


def reply_complies(text: str | None) -> bool:
    """True when the raw reply `text` follows the five-action format (see the module docstring)."""
    body = (text or "").strip()
    if not body:
        return False
    parsed = protocol.parse(body)
    if parsed.actions and parsed.actions[-1].kind == "Code" and not parsed.actions[-1].closed:
        body += "</Code>"  # the stop string, cut by the engine
    issues = protocol.validate(body, require_answer=False, model_written=True)
    return not [i for i in issues if i.code not in _IGNORED]


class RecordingModel:
    """A ChatModel proxy that keeps every raw reply (one per agent round) of one episode."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.replies: list[str] = []
        self.name = getattr(model, "name", "")
        self.family = getattr(model, "family", "instruct")

    async def chat(self, messages, **kwargs):
        completion = await self._model.chat(messages, **kwargs)
        self.replies.append(completion.text or "")
        return completion

    def figures(self) -> dict[str, Any]:
        compliant = sum(1 for r in self.replies if reply_complies(r))
        return {"replies": len(self.replies), "compliant_replies": compliant}


def summarize_compliance(records: list[dict[str, Any]]) -> dict[str, Any]:
    """compliance (compliant replies / replies), mean rounds (model calls) and mean turns per episode, and the
    share of episodes that ended with an answer, over the result records that carry them."""
    scored = [r for r in records if isinstance(r.get("replies"), int)]
    replies = sum(r["replies"] for r in scored)
    return {
        "compliance": sum(r.get("compliant_replies", 0) for r in scored) / replies if replies else 0.0,
        "mean_rounds": sum(r["replies"] for r in scored) / len(scored) if scored else 0.0,
        "mean_turns": sum(int(r.get("turns") or 0) for r in scored) / len(scored) if scored else 0.0,
        "answered": sum(1 for r in scored if r.get("stop_reason") == "answer") / len(scored) if scored else 0.0,
    }


__all__ = ["reply_complies", "RecordingModel", "summarize_compliance"]
