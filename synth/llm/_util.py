"""Helpers shared by the backends."""

from __future__ import annotations

import re
from typing import Any

DEEPANALYZE_TAGS = ("<Analyze>", "<Understand>", "<Code>", "<Execute>", "<Answer>")


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut `text` at the first stop string, which is dropped (OpenAI semantics); True when one was found.

    Some engines (llama.cpp's server, plain transformers generation) leave the stop string in the output; callers
    re-append it themselves, so it must never be returned twice.
    """
    positions = [text.find(s) for s in stop or [] if s]
    positions = [p for p in positions if p != -1]
    if not positions:
        return text, False
    return text[: min(positions)], True


def family_from_name(name: str) -> str:
    return "deepanalyze" if re.search(r"deep[-_ ]?analyze", name, re.IGNORECASE) else "instruct"


def family_from_vocab(vocab_or_tokens: Any) -> str:
    """'deepanalyze' when the tokenizer carries the five action tags as (special) tokens."""
    tokens = set(vocab_or_tokens)
    return "deepanalyze" if all(tag in tokens for tag in DEEPANALYZE_TAGS[:3]) else "instruct"


def check_family(value: str, where: str) -> str:
    if value not in ("instruct", "deepanalyze"):
        raise ValueError(f"{where}: family must be 'instruct' or 'deepanalyze', got {value!r}")
    return value
