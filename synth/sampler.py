"""The episode plan (sources × categories × difficulties) and near-duplicate task avoidance.

The plan is a pure function of (sources, categories, difficulties, limit, seed), so a resumed run replays the
same episodes with the same ids. It spreads evenly: any prefix of the plan visits sources round-robin, and each
source cycles through every category before repeating one, with difficulties rotating across those cycles.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from synth.sources.ref import SourceRef


@dataclass(frozen=True)
class Episode:
    episode_id: str
    index: int  # position in the plan
    source: str
    source_sha256: str
    category: str
    difficulty: str
    cycle: int  # how many times this (source, category, difficulty) came round before
    task: dict | None = None  # a user's task (synth.tasks.UserTask), which skips the questioner

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["task"] is None:
            del data["task"]  # plans without user tasks stay as they were (checkpoints, resumes)
        return data


def plan_user_tasks(tasks: Sequence[Any], cards: dict[str, Any]) -> list[Episode]:
    """One episode per user task, in file order; the id is a function of the task alone (resume-stable)."""
    episodes = []
    for index, task in enumerate(tasks):
        key = json.dumps({"id": task.id, "instruction": task.instruction, "files": task.files}, sort_keys=True)
        first = cards[task.files[0]]
        episodes.append(Episode(episode_id="task-" + hashlib.sha256(key.encode()).hexdigest()[:16], index=index,
                                source=first.name, source_sha256=first.sha256, category=task.category,
                                difficulty=task.difficulty, cycle=0, task=task.model_dump(mode="json")))
    return episodes


def plan_episodes(
    sources: Sequence[SourceRef],
    categories: Sequence[str],
    difficulties: Sequence[str],
    *,
    limit: int | None = None,
    seed: int = 0,
) -> list[Episode]:
    """The ordered episode plan. Default length: every source × category × difficulty once."""
    if not sources:
        raise ValueError("no usable sources to plan episodes for")
    if not categories or not difficulties:
        raise ValueError("the plan needs at least one category and one difficulty")
    ordered_sources = sorted(sources, key=lambda s: (s.name, s.sha256))
    total = limit if limit is not None else len(ordered_sources) * len(categories) * len(difficulties)
    schedules = {s: _source_schedule(s, categories, difficulties, seed) for s in ordered_sources}
    episodes = []
    for index in range(total):
        source = ordered_sources[index % len(ordered_sources)]
        k = index // len(ordered_sources)
        schedule = schedules[source]
        category, difficulty = schedule[k % len(schedule)]
        cycle = k // len(schedule)
        episodes.append(
            Episode(
                episode_id=_episode_id(seed, source, category, difficulty, cycle),
                index=index,
                source=source.name,
                source_sha256=source.sha256,
                category=category,
                difficulty=difficulty,
                cycle=cycle,
            )
        )
    return episodes


def _source_schedule(
    source: SourceRef, categories: Sequence[str], difficulties: Sequence[str], seed: int
) -> list[tuple[str, str]]:
    # Seeded per source, so adding a source to the folder does not reshuffle the others' tasks.
    rng = random.Random(f"{seed}:{source.name}:{source.sha256}")
    cats = list(categories)
    diffs = list(difficulties)
    rng.shuffle(cats)
    rng.shuffle(diffs)
    schedule = []
    for rotation in range(len(diffs)):
        for position, category in enumerate(cats):
            schedule.append((category, diffs[(rotation + position) % len(diffs)]))
    return schedule


def _episode_id(seed: int, source: SourceRef, category: str, difficulty: str, cycle: int) -> str:
    key = f"{seed}|{source.sha256}|{source.name}|{category}|{difficulty}|{cycle}"
    return "ep-" + hashlib.sha256(key.encode()).hexdigest()[:16]


# --- near-duplicate avoidance -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an the of to in on for and or is are be by with from as at it its this that these those which what "
    "each per all into using use data dataset table file please".split()
)


def instruction_shingles(text: str) -> frozenset[str]:
    """Normalised features of an instruction: content words and adjacent word pairs."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
    return frozenset(words) | frozenset(f"{a} {b}" for a, b in zip(words, words[1:]))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """Accepted instructions, to turn away a new task that is merely a rewording of one already kept."""

    def __init__(self, threshold: float = 0.7, instructions: Iterable[str] = ()) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._items: list[tuple[str, frozenset[str]]] = []
        for text in instructions:
            self.add(text)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, instruction: str) -> None:
        self._items.append((instruction, instruction_shingles(instruction)))

    def nearest(self, instruction: str) -> tuple[str | None, float]:
        features = instruction_shingles(instruction)
        best, best_score = None, 0.0
        for text, other in self._items:
            score = jaccard(features, other)
            if score > best_score:
                best, best_score = text, score
        return best, best_score

    def duplicate_of(self, instruction: str) -> str | None:
        """The kept instruction this one nearly repeats, or None."""
        best, score = self.nearest(instruction)
        return best if best is not None and score >= self.threshold else None
