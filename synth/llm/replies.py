"""Reading structured data out of a model's reply: the one JSON finder every role uses.

Models wrap JSON in prose or a ``` fence, or add text after it; `json_values` finds every JSON object or array
in a reply (fenced blocks first, then the bare text, each from every opening brace), `first_json_object` the
first object.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def json_values(text: str, *, arrays: bool = False, inner: bool = True) -> Iterator[Any]:
    """Decoded JSON objects (and arrays, with `arrays=True`) in `text`, most deliberate first. `inner=False`
    tries only whole chunks and the outermost {…} span (a reply cut off inside a list must not yield one of its
    elements as if it were the reply)."""
    chunks = [m.group(1) for m in _FENCE.finditer(text or "")] + [text or ""]
    opening = r"[\{\[]" if arrays else r"\{"
    for chunk in chunks:
        stripped = chunk.strip()
        try:  # the whole chunk is JSON
            value = json.loads(stripped)
            if isinstance(value, dict) or (arrays and isinstance(value, list)):
                yield value
                continue
        except ValueError:
            pass
        if not inner:
            start, end = chunk.find("{"), chunk.rfind("}")
            if start != -1 and end > start:
                try:
                    yield json.loads(chunk[start:end + 1])
                except ValueError:
                    pass
            continue
        for m in re.finditer(opening, chunk):
            try:
                value, _ = _DECODER.raw_decode(chunk, m.start())
            except ValueError:
                continue
            if isinstance(value, dict) or (arrays and isinstance(value, list)):
                yield value


def first_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a reply; ValueError when there is none."""
    for value in json_values(text):
        return value
    raise ValueError("no JSON object found in the reply")


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every distinct JSON object in a reply, in the order `json_values` finds them."""
    seen: list[dict[str, Any]] = []
    for value in json_values(text):
        if value not in seen:
            seen.append(value)
    return seen


__all__ = ["json_values", "first_json_object", "json_objects"]
