from __future__ import annotations

from pathlib import Path

import pytest

from synth.checklist import list_categories
from synth.config import DIFFICULTIES, ConfigError, GenerateConfig


def test_defaults_and_model_per_role(tmp_path: Path) -> None:
    config = GenerateConfig(sources=tmp_path)
    assert config.model == "embedded"
    assert config.categories == list_categories() and config.difficulties == list(DIFFICULTIES)
    assert config.model_for("solver") == "embedded"
    config = GenerateConfig(sources=tmp_path, model="openai:gpt-4o", inspector_model="embedded:0.5b")
    assert config.model_for("questioner") == "openai:gpt-4o"
    assert config.model_for("inspector") == "embedded:0.5b"


def test_yaml_round_trip_keeps_every_option(tmp_path: Path) -> None:
    config = GenerateConfig(
        sources=tmp_path / "src", out=tmp_path / "run", limit=5, categories=["modeling", "data_analysis"],
        difficulties=["hard"], model="openai:m", questioner_model="openai:q", solver_model="openai:s",
        inspector_model="openai:i", base_url="http://127.0.0.1:9/v1", concurrency=7, mode="session",
        max_revisions=3, max_rounds=12, cell_timeout_s=5.0, seed=42, roles=tmp_path / "roles",
        checklists=tmp_path / "cl", backend="docker",
    )
    path = tmp_path / "config.yaml"
    config.save(path)
    loaded = GenerateConfig.load(path)
    assert loaded == config
    # every field but the runtime-only `resume` is written
    assert set(GenerateConfig.model_fields) - {"resume"} <= set(__import__("yaml").safe_load(path.read_text()))


def test_overrides_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"sources: {tmp_path}\nseed: 1\nconcurrency: 3\n")
    config = GenerateConfig.load(path, seed=9, concurrency=None)
    assert config.seed == 9 and config.concurrency == 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sources: x\nlimt: 3\n", "limt: unknown option"),
        ("sources: x\ncategories: [cooking]\n", "unknown category 'cooking'"),
        ("sources: x\nconcurrency: 0\n", "concurrency"),
        ("sources: x\nmode: notebook\n", "mode"),
        ("- a\n- b\n", "expected a mapping"),
        ("sources: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        GenerateConfig.load(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_resume_needs_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--resume needs --out"):
        GenerateConfig.validate_dict({"sources": str(tmp_path), "resume": True})


def test_resolved_makes_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = GenerateConfig(sources=Path("src"), out=Path("run")).resolved()
    assert config.sources == tmp_path / "src" and config.out == tmp_path / "run"


def test_repeated_categories_collapse(tmp_path: Path) -> None:
    config = GenerateConfig(sources=tmp_path, categories=["modeling", "modeling", "data_analysis"])
    assert config.categories == ["modeling", "data_analysis"]
