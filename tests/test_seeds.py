"""Task seeds: column roles read off real DataCards, and seeds that never group by a continuous or id column."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.seeds import column_roles, continuous_columns, task_seed
from synth.sources import profile_all
from synth.sources.demo import write_demo_sources

CATEGORIES = ["data_analysis", "data_insight", "data_cleaning", "data_preparation", "modeling", "report_generation",
              "open_research"]


@pytest.fixture(scope="module")
def cards(tmp_path_factory, shared_data: Path) -> list:
    demo = tmp_path_factory.mktemp("demo")
    write_demo_sources(demo)
    found = [c for c in profile_all(demo, use_cache=False) if c.tables]
    found += [c for c in profile_all(shared_data / "sources" / "chinook", use_cache=False) if c.tables]
    return found


def test_roles_of_real_columns(cards) -> None:
    by_name = {c.name: c for c in cards}
    iris = column_roles(by_name["iris.csv"].table("iris"))
    assert iris["species"] == "group"
    assert iris["sepal_width_cm"] == "measure"  # few distinct values, but continuous: never a group key
    track = column_roles(by_name["Chinook_Sqlite.sqlite"].table("Track"))
    assert track["TrackId"] == track["AlbumId"] == track["GenreId"] == "key"
    assert track["Milliseconds"] == "measure" and track["Name"] == "identifier"


def test_no_seed_groups_by_a_continuous_or_id_column_and_hard_seeds_need_steps(cards) -> None:
    kinds = set()
    for card in cards:
        for visit in range(3):
            focus = card.focus_table(visit)
            for category in CATEGORIES:
                for difficulty in ("easy", "medium", "hard"):
                    seed = task_seed(card, focus, category, difficulty, f"{card.name}:{visit}:{category}")
                    assert seed is not None and seed.category == category and seed.difficulty == difficulty
                    kinds.add(seed.kind)
                    group = seed.columns.get("group by")
                    if group:
                        table = card.table(group.split(".")[0]) if "." in group else card.table(seed.table)
                        role = column_roles(table)[group.split(".")[-1]]
                        assert role in ("group", "identifier"), (card.name, seed)
                    assert seed.min_cells == (3 if difficulty == "hard" else 1)
                    assert seed.describe().startswith(f"Task kind: {seed.kind}")
                    if difficulty == "hard" and (seed.columns or seed.join):
                        # A hard task comes with its steps, one per required cell, over the seed's own columns.
                        assert len(seed.steps) == seed.min_cells, seed
                        assert f"({seed.min_cells}) {seed.steps[-1]}" in seed.describe()
                        assert any(f"`{name}`" in " ".join(seed.steps) or f".{name}`" in " ".join(seed.steps)
                                   for name in seed.column_names()), seed
                    else:
                        assert seed.steps == [] and "steps, one code cell each" not in seed.describe()
                    known = {c.name for t in card.tables for c in t.columns} | {t.name for t in card.tables}
                    assert set(seed.column_names()) <= known, seed
                    assert seed.qualified == (len(card.tables) > 1)  # a CSV's columns are named bare
    assert len(kinds) >= 8


def test_seeds_are_deterministic_and_follow_foreign_keys(cards) -> None:
    chinook = next(c for c in cards if c.name == "Chinook_Sqlite.sqlite")
    first = task_seed(chinook, "Track", "data_analysis", "hard", "ep-1")
    assert first == task_seed(chinook, "Track", "data_analysis", "hard", "ep-1")
    joins = [task_seed(chinook, "Track", "data_analysis", "hard", f"ep-{i}") for i in range(12)]
    assert any(s.join and s.join["table"] in ("Album", "Genre", "MediaType") for s in joins)


def test_a_one_table_source_names_its_columns_bare_and_a_database_qualifies_them() -> None:
    from synth.seeds import TaskSeed

    seed = TaskSeed(kind="group_aggregate", category="data_analysis", difficulty="easy", table="diabetes",
                    columns={"group by": "sex", "measure": "s4"}, qualified=False)
    assert "group by: `sex`; measure: `s4`" in seed.describe()
    seed.qualified = True
    assert "group by: `diabetes.sex`; measure: `diabetes.s4`" in seed.describe()


def test_continuous_columns_are_the_measures_and_a_failed_kind_can_be_excluded(cards) -> None:
    by_name = {c.name: c for c in cards}
    chinook = continuous_columns([by_name["Chinook_Sqlite.sqlite"]])
    assert {"Bytes", "Milliseconds", "Total"} <= set(chinook)
    assert not {"TrackId", "GenreId", "Name", "BillingCountry", "InvoiceDate"} & set(chinook)
    iris = continuous_columns([by_name["iris.csv"]])
    assert "sepal_width_cm" in iris and "species" not in iris
    seed = task_seed(by_name["Chinook_Sqlite.sqlite"], "Track", "data_preparation", "hard", "ep-3")
    other = task_seed(by_name["Chinook_Sqlite.sqlite"], "Track", "data_preparation", "hard", "ep-3",
                      exclude={seed.kind})
    assert {seed.kind, other.kind} == {"join_table", "pivot"} and other.min_cells == 3
