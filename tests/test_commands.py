"""The command layer: options derived once from the pydantic configs, thin commands, one-line errors."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.commands.options import given_options, options_from
from synth.config import GenerateConfig, RefineConfig


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]+", help_text))


@pytest.mark.parametrize("command, config", [("generate", GenerateConfig), ("refine", RefineConfig)])
def test_every_config_field_is_an_option_with_its_description(command, config) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    flags = _flags(result.output)
    for param in options_from(config):
        flag = param.default.param_decls[0].split("/")[0]
        assert flag in flags, flag
    # e.g. the description of a field is its help text, and a renamed flag is used
    assert "--cell-timeout" in flags or command == "refine"
    assert "Teacher model spec" in result.output or command == "generate"


def test_given_options_keep_only_what_was_typed_and_split_lists() -> None:
    assert given_options({"a": None, "b": 3, "c": ["x,y", "z"], "d": [], "e": False}) == {
        "b": 3, "c": ["x", "y", "z"], "e": False}


def test_boolean_fields_get_on_and_off_flags() -> None:
    (resume,) = [p for p in options_from(GenerateConfig) if p.name == "resume"]
    assert resume.default.param_decls == ("--resume/--no-resume",)


def test_a_bad_option_value_is_one_line_without_traceback(tmp_path) -> None:
    result = CliRunner().invoke(app, ["generate", "--sources", str(tmp_path), "--mode", "notebook",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "mode" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
