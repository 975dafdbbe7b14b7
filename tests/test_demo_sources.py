"""synth.sources.demo: deterministic multi-format demo sources from scikit-learn's bundled data."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from synth.sources import DataCard, profile_all
from synth.sources.demo import DEMO_FILES, write_demo_sources


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "sources"
    written = write_demo_sources(directory)
    assert [p.name for p in written] == list(DEMO_FILES)
    return directory


def test_output_is_byte_for_byte_deterministic(demo_dir: Path, tmp_path: Path):
    again = write_demo_sources(tmp_path / "again")
    for path in again:
        assert path.read_bytes() == (demo_dir / path.name).read_bytes(), path.name
    assert sorted(p.name for p in demo_dir.iterdir()) == sorted(DEMO_FILES)  # no temp files left behind


def test_demo_profiles_into_related_tables(demo_dir: Path, tmp_path: Path):
    from sklearn.datasets import load_wine

    cards = {c.name: c for c in profile_all(demo_dir, cache_dir=tmp_path / "cache")}
    assert all(isinstance(c, DataCard) for c in cards.values()) and set(cards) == set(DEMO_FILES)
    wine = cards["wine.sqlite"]
    assert wine.table("cultivar").rows == 3 and wine.table("wine_sample").rows == 178
    [fk] = wine.table("wine_sample").foreign_keys
    assert (fk.columns, fk.ref_table, fk.ref_columns) == (["cultivar_id"], "cultivar", ["cultivar_id"])
    assert wine.table("cultivar_summary").is_view
    alcohol = {c.name: c for c in wine.table("wine_sample").columns}["alcohol"]
    assert alcohol.mean == pytest.approx(float(load_wine().data[:, 0].mean()))
    with sqlite3.connect(demo_dir / "wine.sqlite") as con:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        counts = dict(con.execute("SELECT cultivar, samples FROM cultivar_summary").fetchall())
    assert counts == {"Cultivar 1": 59, "Cultivar 2": 71, "Cultivar 3": 48}
    workbook = cards["breast_cancer.xlsx"]
    assert [(t.name, t.rows) for t in workbook.tables] == [("samples", 569), ("features", 30)]
    diagnosis = {c.name: c for c in workbook.table("samples").columns}["diagnosis"]
    assert {v.value: v.count for v in diagnosis.top_values} == {"benign": 357, "malignant": 212}
    diabetes = cards["diabetes.csv"].tables[0]
    assert diabetes.rows == 442 and diabetes.columns[-1].name == "disease_progression"
    species = {c.name: c for c in cards["iris.csv"].tables[0].columns}["species"]
    assert species.distinct == 3 and cards["iris.csv"].tables[0].rows == 150
    assert "scikit-learn" in cards["README.md"].documents[0].excerpt


def test_refuses_to_overwrite_without_force(tmp_path: Path):
    target = tmp_path / "demo"
    target.mkdir()
    (target / "iris.csv").write_text("mine\n")
    with pytest.raises(FileExistsError, match="iris.csv.*--force"):
        write_demo_sources(target)
    assert (target / "iris.csv").read_text() == "mine\n"
    assert sorted(p.name for p in target.iterdir()) == ["iris.csv"]
    write_demo_sources(target, force=True)
    assert (target / "iris.csv").read_text().startswith("sepal_length_cm,")


def test_cli_demo_sources_and_profile_json(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from synth.cli import app

    monkeypatch.setenv("DS_SYNTH_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "demo"
    runner = CliRunner()
    first = runner.invoke(app, ["demo-sources", str(target)])
    assert first.exit_code == 0, first.output
    assert first.stdout.split() == [str(target / name) for name in DEMO_FILES]
    refused = runner.invoke(app, ["demo-sources", str(target)])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert runner.invoke(app, ["demo-sources", str(target), "--force"]).exit_code == 0
    profiled = runner.invoke(app, ["sources", "profile", str(target), "--json"])
    assert profiled.exit_code == 0, profiled.output
    items = {item["name"]: item for item in json.loads(profiled.stdout)}
    assert [t["name"] for t in items["wine.sqlite"]["tables"]] == ["cultivar", "wine_sample", "cultivar_summary"]
