from __future__ import annotations

from collections import Counter

import pytest

from synth.sampler import NearDuplicateIndex, instruction_shingles, jaccard, plan_episodes
from synth.sources.ref import SourceRef

SOURCES = [SourceRef(name=name, sha256=digit * 64) for name, digit in (("a.csv", "1"), ("b.sqlite", "2"), ("c.xlsx", "3"))]
CATS = ["data_analysis", "modeling", "data_cleaning", "report_generation"]
DIFFS = ["easy", "medium", "hard"]


def test_plan_is_deterministic_and_seeded() -> None:
    a = plan_episodes(SOURCES, CATS, DIFFS, limit=20, seed=3)
    b = plan_episodes(list(reversed(SOURCES)), CATS, DIFFS, limit=20, seed=3)
    assert a == b
    c = plan_episodes(SOURCES, CATS, DIFFS, limit=20, seed=4)
    assert [e.episode_id for e in a] != [e.episode_id for e in c]
    assert len({e.episode_id for e in a}) == 20


def test_default_plan_covers_every_combination_once() -> None:
    plan = plan_episodes(SOURCES, CATS, DIFFS, seed=0)
    combos = Counter((e.source, e.category, e.difficulty) for e in plan)
    assert len(plan) == len(SOURCES) * len(CATS) * len(DIFFS)
    assert set(combos.values()) == {1}


def test_prefixes_spread_evenly() -> None:
    plan = plan_episodes(SOURCES, CATS, DIFFS, limit=len(SOURCES) * len(CATS), seed=1)
    assert set(Counter(e.source for e in plan).values()) == {len(CATS)}
    for source in SOURCES:
        mine = [e for e in plan if e.source == source.name]
        assert sorted(e.category for e in mine) == sorted(CATS)  # each category once before any repeats
    full = plan_episodes(SOURCES, CATS, DIFFS, limit=len(SOURCES) * len(CATS) * len(DIFFS), seed=1)
    assert set(Counter(e.difficulty for e in full).values()) == {len(SOURCES) * len(CATS)}
    per_source_diff = Counter((e.source, e.difficulty) for e in full)
    assert set(per_source_diff.values()) == {len(CATS)}


def test_plan_longer_than_product_cycles_with_new_ids() -> None:
    plan = plan_episodes(SOURCES[:1], ["modeling"], ["easy"], limit=3, seed=0)
    assert [e.cycle for e in plan] == [0, 1, 2]
    assert len({e.episode_id for e in plan}) == 3


def test_adding_a_source_keeps_the_others_schedule() -> None:
    before = plan_episodes(SOURCES[:2], CATS, DIFFS, seed=5)
    after = plan_episodes(SOURCES, CATS, DIFFS, seed=5)
    keyed = lambda plan: {(e.source, e.category, e.difficulty): e.episode_id for e in plan}  # noqa: E731
    old, new = keyed(before), keyed(after)
    assert all(new[k] == v for k, v in old.items())


def test_plan_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError, match="no usable sources"):
        plan_episodes([], CATS, DIFFS)
    with pytest.raises(ValueError, match="at least one category"):
        plan_episodes(SOURCES, [], DIFFS)


def test_near_duplicates_are_caught_but_different_tasks_pass() -> None:
    index = NearDuplicateIndex(threshold=0.6)
    index.add("Compute the average unit price of tracks per genre in the Track table and save it to genre_prices.csv.")
    reworded = "Compute the average unit price of the tracks per genre in Track and save to genre_prices.csv"
    assert index.duplicate_of(reworded) is not None
    other = "Find the five customers with the most invoices and list their countries."
    assert index.duplicate_of(other) is None
    assert len(index) == 1


def test_shingles_normalise_case_and_punctuation() -> None:
    a = instruction_shingles("Count ROWS in the Album table!")
    b = instruction_shingles("count rows in album table")
    assert jaccard(a, b) == 1.0
    with pytest.raises(ValueError):
        NearDuplicateIndex(threshold=0)
