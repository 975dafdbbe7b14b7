"""What one agent episode produced: the model's turns, the real execution results, and how it ended.

Shared by the agent loop (which builds it), the checklist engine and inspector (which judge it), records
(which store it as ONE assistant message with <Execute> inline) and rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from synth.llm.base import Message, Usage
from synth.sandbox.base import ExecResult, ExecutionMode

StopReason = Literal["answer", "max_rounds", "token_budget", "model_error", "empty_reply", "repeated_code"]


def code_key(code: str) -> str:
    """Code compared without its whitespace: two cells with the same key are the same cell."""
    return " ".join(code.split())


@dataclass
class Turn:
    text: str  # what the model wrote this turn, normalised to tags (Analyze/Understand/Code/Answer); no Execute
    code: str | None = None  # the code extracted from this turn's <Code>, if any
    result: ExecResult | None = None  # what the sandbox really returned for `code`
    usage: Usage = field(default_factory=Usage)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # repairs the loop made (invented Execute cut, tags wrapped …)


@dataclass
class Trajectory:
    prompt: str  # the user message in the `# Instruction / # Data` format
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None  # body of <Answer>, None if the episode never answered
    stop_reason: StopReason = "answer"
    mode: ExecutionMode = "script"
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    duration_s: float = 0.0
    error: str | None = None  # why the episode failed when stop_reason is "model_error"

    def assistant_text(self) -> str:
        """The whole episode as ONE assistant message, each real execution inline as <Execute>…</Execute>."""
        parts: list[str] = []
        for turn in self.turns:
            parts.append(turn.text)
            if turn.result is not None:
                parts.append(f"\n<Execute>\n{turn.result.output()}\n</Execute>\n")
        return "".join(parts)

    def messages(self) -> list[Message]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.assistant_text()}]

    def code_cells(self) -> list[str]:
        return [t.code for t in self.turns if t.code is not None]

    def steps(self) -> int:
        """Code cells that ran, a cell repeating an earlier one's code counted once: the steps a task took (a hard
        task's `min_cells`). Re-running a cell unchanged is no new step."""
        return len({code_key(t.code) for t in self.turns if t.code is not None and t.result is not None})

    def results(self) -> list[ExecResult]:
        return [t.result for t in self.turns if t.result is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "turns": [
                {
                    "text": t.text,
                    "code": t.code,
                    "result": t.result.to_dict() if t.result else None,
                    "usage": t.usage.to_dict(),
                    "duration_s": round(t.duration_s, 3),
                    "notes": t.notes,
                }
                for t in self.turns
            ],
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "mode": self.mode,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trajectory":
        turns = []
        for t in data.get("turns", []):
            turns.append(
                Turn(
                    text=t["text"],
                    code=t.get("code"),
                    result=ExecResult(**t["result"]) if t.get("result") else None,
                    usage=_usage(t.get("usage")),
                    duration_s=t.get("duration_s", 0.0),
                    notes=list(t.get("notes", [])),
                )
            )
        return cls(
            prompt=data["prompt"],
            turns=turns,
            answer=data.get("answer"),
            stop_reason=data.get("stop_reason", "answer"),
            mode=data.get("mode", "script"),
            model=data.get("model", ""),
            usage=_usage(data.get("usage")),
            duration_s=data.get("duration_s", 0.0),
            error=data.get("error"),
        )


def _usage(data: dict[str, Any] | None) -> Usage:
    u = data or {}
    return Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0), u.get("cost_usd", 0.0))
