"""The refiner role's craft (synth refine): the keyword vocabulary, reading traces out of replies, and asking.

The teacher (roles/refiner.yaml) distills step-by-step reasoning for a question whose reference answer is known,
reformulates it into <Analyze>/<Understand>/<Answer>, then refines it around K keywords sampled from
checklists/keywords.yaml (seeded, deterministic per item id). The graph (synth/graphs/reasoning.py) decides what
is kept; this module holds what it needs to talk to the teacher and read its replies.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from synth.errors import SynthError
from synth.llm.base import ChatModel

KEYWORDS_FILE = "keywords.yaml"
MIN_REASONING_WORDS = 8
_FINAL_RE = re.compile(r"final answer\s*[:：]\s*(.+)", re.IGNORECASE)


class KeywordsError(SynthError, ValueError):
    """The keyword vocabulary (keywords.yaml) cannot be read."""


# --- keywords --------------------------------------------------------------------------------------------------


def load_keywords(checklists_dir: Path | None = None) -> dict[str, list[str]]:
    """Keyword groups from `checklists_dir/keywords.yaml` if present, else the built-in vocabulary."""
    from synth.checklist import checklist_dirs

    for directory in checklist_dirs(checklists_dir):
        path = Path(directory) / KEYWORDS_FILE
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise KeywordsError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
            groups = data.get("groups") if isinstance(data, dict) else None
            if not isinstance(groups, dict) or not groups or not all(
                    isinstance(v, list) and v and all(isinstance(k, str) and k.strip() for k in v)
                    for v in groups.values()):
                raise KeywordsError(f"{path}: expected `groups:` mapping group names to non-empty lists of phrases")
            return {str(name): [k.strip() for k in phrases] for name, phrases in groups.items()}
    raise KeywordsError(f"no {KEYWORDS_FILE} in {', '.join(str(d) for d in checklist_dirs(checklists_dir))}")


def keyword_vocabulary(groups: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(k for phrases in groups.values() for k in phrases))


def sample_keywords(vocabulary: Sequence[str], k: int, *, seed: int, item_id: str) -> list[str]:
    """K distinct phrases; the same (seed, item id) always draws the same ones, whatever the run order."""
    if k <= 0:
        return []
    rng = random.Random(f"{seed}:{item_id}")  # str seeds hash with sha512: stable across processes
    return rng.sample(list(vocabulary), min(k, len(vocabulary)))


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[\"'“”‘’`*]", "", text).lower().split())


def missing_keywords(trace: str, keywords: Sequence[str]) -> list[str]:
    """Keywords not written in `trace` (case, quotes and spacing ignored; trailing ?/./! optional)."""
    body = _squash(trace)
    return [k for k in keywords if _squash(k).rstrip("?.!") not in body]


# --- traces ----------------------------------------------------------------------------------------------------


def final_answer_of(reasoning: str) -> str | None:
    """The distilled reasoning's answer: its last `Final answer:` line, else its last non-empty line."""
    hits = _FINAL_RE.findall(reasoning or "")
    if hits:
        return hits[-1].strip().strip("*").strip().rstrip(".").strip() or None
    lines = [line.strip() for line in (reasoning or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def reasoning_words(reasoning: str) -> int:
    return len(_FINAL_RE.sub("", reasoning).split())


def assemble_trace(analyze: str, understand: str, answer: str) -> str:
    return (f"<Analyze>\n{analyze.strip()}\n</Analyze>\n<Understand>\n{understand.strip()}\n</Understand>\n"
            f"<Answer>\n{answer.strip()}\n</Answer>")


def trace_from_reply(reply: str) -> str | None:
    """The Analyze/Understand/Answer trace in a model reply, re-assembled canonically; None when a part is missing.

    Chatter around the tags (an intro sentence, a code fence) is dropped; several Analyze/Understand blocks are
    kept in order."""
    from synth.protocol import parse

    parsed = parse(reply or "")
    blocks = [a for a in parsed.actions if a.closed and a.kind in ("Analyze", "Understand", "Answer")]
    kinds = [a.kind for a in blocks]
    if "Analyze" not in kinds or "Understand" not in kinds or "Answer" not in kinds or kinds[0] != "Analyze":
        return None
    end = kinds.index("Answer") + 1
    parts = []
    for action in blocks[:end]:
        content = action.content.strip()
        if not content:
            return None
        parts.append(f"<{action.kind}>\n{content}\n</{action.kind}>")
    return "\n".join(parts)


def fallback_trace(reasoning: str, answer: str) -> str:
    """A deterministic reformulation when the teacher's reply is unusable: the reasoning as Analyze, its closing
    sentences (what the table showed) as Understand."""
    body = _FINAL_RE.sub("", reasoning).strip()
    body = re.sub(r"<[^>]{1,20}>", "", body).strip() or "The question asks for a value that the table gives."
    # Fragments left where "Final answer: …" was cut out ("The result is") say nothing: drop them.
    sentences = [x for x in re.split(r"(?<=[.!?])\s+", body) if len(x.split()) >= 4] or [body]
    if len(sentences) >= 2:
        cut = max(1, len(sentences) - max(1, len(sentences) // 4))
        analyze, understand = " ".join(sentences[:cut]), " ".join(sentences[cut:])
    else:
        analyze, understand = body, f"From the table, the answer is {answer}."
    return assemble_trace(analyze, understand, answer)


# Lines of the format skeletons in roles/refiner.yaml: a small model sometimes copies them instead of writing.
_SKELETON_PHRASES = ("the plan, and the reasoning steps", "the improved reasoning, using every phrase",
                     "what the relevant part of the table shows, and why", "what the relevant part of the table shows.")


def copies_skeleton(trace: str) -> bool:
    low = " ".join(trace.lower().split())
    return any(p in low for p in _SKELETON_PHRASES)


def protocol_issues(trace: str) -> list[str]:
    from synth.protocol import validate

    return [str(i) for i in validate(trace, require_answer=True, model_written=True)]


def answer_of(trace: str) -> str | None:
    from synth.protocol import parse

    answer = parse(trace).answer
    return answer.strip() if answer is not None else None


class Teacher:
    """The refiner role bound to a model: renders one of the role's templates and asks (a retry samples hotter,
    so it is never a cache hit of the failed call)."""

    def __init__(self, roles_dir: Path | None = None) -> None:
        from synth.roles import load_role

        self.role = load_role("refiner", roles_dir)
        self.step = float(self.role.params.get("retry_temperature_step", 0.3))

    async def ask(self, model: ChatModel, key: str, attempt: int, **context: Any) -> str:
        settings = self.role.params.get(key) or {}
        messages = []
        system = self.role.render_system()
        if system.strip():
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": self.role.render_template(key, **context)})
        temperature = min(1.2, float(settings.get("temperature", 0.3)) + self.step * attempt)
        completion = await model.chat(messages, max_tokens=int(settings.get("max_tokens", 800)),
                                      temperature=round(temperature, 3))
        return completion.text


__all__ = ["KEYWORDS_FILE", "MIN_REASONING_WORDS", "KeywordsError", "load_keywords", "keyword_vocabulary",
           "sample_keywords", "missing_keywords", "final_answer_of", "reasoning_words", "assemble_trace",
           "trace_from_reply", "fallback_trace", "copies_skeleton", "protocol_issues", "answer_of", "Teacher"]
