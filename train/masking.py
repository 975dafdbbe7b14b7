"""Token ids and labels for one conversation: the loss covers the model's own assistant text only.

Labels are -100 on the prompt (every message before the last) and on every `<Execute>…</Execute>` span of the
assistant message (harness output, which the model must read but never learn to write). The closing end-of-turn
token stays trainable so the model learns to stop after `</Answer>`; the sequence ends there.

Ids are built piece by piece — prompt, then each (trainable or masked) chunk of the assistant text, then the
template's tail — so every label lines up with its token by construction. This equals tokenizing the whole text
at once because every piece boundary sits next to an added token (`<|im_start|>assistant\\n` ends the prompt,
`<Execute>`/`</Execute>` bound the spans, `<|im_end|>` closes the turn) and tokenizers split on added tokens
before anything else; `check_boundaries=True` verifies it per example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from synth.protocol import execute_spans as find_execute_spans
from train.errors import TrainError

IGNORE = -100


class MaskingError(TrainError):
    """A conversation that cannot be turned into labelled tokens; the message says which and why."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int  # tokens before the assistant text

    @property
    def completion_ids(self) -> list[int]:
        return self.input_ids[self.prompt_length:]

    @property
    def completion_mask(self) -> list[int]:
        """1 where the model wrote the token (trainable), 0 on Execute output: TRL's GRPO `env_mask`."""
        return [0 if label == IGNORE else 1 for label in self.labels[self.prompt_length:]]


def build_example(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    execute_spans: Sequence[Sequence[int]] | None = None,
    closed: bool = True,
    check_boundaries: bool = False,
    where: str = "conversation",
) -> Example:
    """Tokenize `messages` (prompt messages, then ONE assistant message) with the tokenizer's chat template.

    `execute_spans` are `[start, end)` character spans of the assistant text (as in sft export rows); None
    finds them with `synth.protocol.execute_spans`. `closed=False` leaves the turn open (an episode that never
    answered: no end-of-turn token to learn).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise MaskingError(f"{where}: the last message must be the assistant's")
    if getattr(tokenizer, "chat_template", None) is None:
        raise MaskingError(f"{where}: the tokenizer has no chat template")
    prompt_messages = [dict(m) for m in messages[:-1]]
    assistant = messages[-1]["content"]
    prompt_text = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template([*prompt_messages, dict(messages[-1])], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise MaskingError(f"{where}: the chat template renders the prompt differently with the answer appended; "
                           "labels cannot be aligned (use the deepanalyze template: chat_template: deepanalyze)")
    body_end = len(prompt_text) + len(assistant)
    if full_text[len(prompt_text):body_end] != assistant:
        raise MaskingError(f"{where}: the chat template rewrites the assistant message (e.g. strips reasoning); "
                           "labels cannot be aligned")
    spans = _checked_spans(assistant, execute_spans, where)

    pieces: list[tuple[str, bool]] = [(prompt_text, False)]
    pos = 0
    for start, end in spans:
        pieces += [(assistant[pos:start], True), (assistant[start:end], False)]
        pos = end
    pieces.append((assistant[pos:], True))
    if closed:
        tail = full_text[body_end:]
        eos = tokenizer.eos_token or ""
        cut = tail.find(eos) + len(eos) if eos and eos in tail else len(tail)
        # What the template puts after the end-of-turn token (a newline) is left out: a sequence ends at EOS,
        # which is also how TRL tells a finished rollout from a truncated one.
        pieces.append((tail[:cut], True))

    input_ids: list[int] = []
    labels: list[int] = []
    prompt_length = 0
    for index, (text, trainable) in enumerate(pieces):
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trainable else [IGNORE] * len(ids)
        if index == 0:
            prompt_length = len(ids)
    if check_boundaries:
        whole = tokenizer("".join(text for text, _ in pieces), add_special_tokens=False)["input_ids"]
        if whole != input_ids:
            raise MaskingError(f"{where}: tokenizing piece by piece differs from tokenizing the whole text; "
                               "the action tags are probably not tokens (run train.tokens.add_action_tokens)")
    return Example(input_ids, labels, prompt_length)


def _checked_spans(text: str, spans: Sequence[Sequence[int]] | None, where: str) -> list[tuple[int, int]]:
    if spans is None:
        return find_execute_spans(text)
    out: list[tuple[int, int]] = []
    last = 0
    for span in spans:
        start, end = int(span[0]), int(span[1])
        if not (last <= start < end <= len(text)):
            raise MaskingError(f"{where}: execute span [{start}, {end}) is out of order or outside the assistant "
                               f"message ({len(text)} characters)")
        if not text.startswith("<Execute>", start):
            raise MaskingError(f"{where}: execute span [{start}, {end}) does not start at an <Execute> tag; "
                               "the spans do not belong to this message")
        out.append((start, end))
        last = end
    return out


def tokenize_row(tokenizer: Any, row: dict[str, Any], *, check_boundaries: bool = False) -> dict[str, list[int]]:
    """An sft row (`messages`, optional `execute_spans`) as `{"input_ids", "labels"}` for TRL's SFTTrainer."""
    example = build_example(tokenizer, row["messages"], execute_spans=row.get("execute_spans"),
                            check_boundaries=check_boundaries, where=f"row {row.get('id', '?')}")
    return {"input_ids": example.input_ids, "labels": example.labels}


__all__ = ["IGNORE", "Example", "MaskingError", "build_example", "tokenize_row"]
