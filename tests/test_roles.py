"""Roles: YAML prompts as data, user overrides by directory, conditional few-shot messages, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.roles import RoleError, load_role

ROLE = """\
name: solver
system: "Mode {{ mode }}."
few_shot:
  - role: user
    content: "csv example"
    when: not databases
  - role: user
    content: "database example for {{ databases | join(', ') }}"
    when: databases
  - role: assistant
    content: "always"
"""


def test_builtin_roles_load_and_render() -> None:
    for name in ("questioner", "solver", "inspector", "refiner", "judge"):
        assert load_role(name).name == name
    solver = load_role("solver")
    assert "separate script" in solver.render_system(mode="script", databases=[])
    assert "like cells in a notebook" in solver.render_system(mode="session", databases=[])


def test_user_directory_overrides_a_builtin_role(tmp_path: Path) -> None:
    (tmp_path / "solver.yaml").write_text(ROLE)
    role = load_role("solver", tmp_path)
    assert role.render_system(mode="session") == "Mode session."
    assert load_role("inspector", tmp_path).name == "inspector"  # roles not overridden stay built in


def test_few_shot_messages_are_chosen_by_their_condition(tmp_path: Path) -> None:
    (tmp_path / "solver.yaml").write_text(ROLE)
    role = load_role("solver", tmp_path)
    assert [m["content"] for m in role.few_shot_messages(databases=[])] == ["csv example", "always"]
    assert [m["content"] for m in role.few_shot_messages(databases=["shop.sqlite"])] == [
        "database example for shop.sqlite", "always"]
    with pytest.raises(RoleError, match="few_shot.when"):
        role.few_shot_messages()  # a condition over a variable the caller did not give is an error, not False


def test_builtin_solver_shows_a_database_example_only_for_databases() -> None:
    solver = load_role("solver")
    plain = solver.few_shot_messages(mode="script", databases=[])
    database = solver.few_shot_messages(mode="session", databases=["Chinook_Sqlite.sqlite"])
    assert len(plain) == 4 and "orders.csv" in plain[0]["content"]
    assert "sqlite_master" in database[1]["content"] and "sqlite_master" not in " ".join(m["content"] for m in plain)
    assert "Chinook_Sqlite.sqlite" in solver.render_system(mode="session", databases=["Chinook_Sqlite.sqlite"])


def test_broken_role_files_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "solver.yaml").write_text("name: solver\nunknown_key: 1\n")
    with pytest.raises(RoleError, match="invalid role file .*solver.yaml"):
        load_role("solver", tmp_path)
    (tmp_path / "questioner.yaml").write_text("name: questioner\nsystem: '{{ unclosed'\n")
    with pytest.raises(RoleError, match="cannot render questioner.system"):
        load_role("questioner", tmp_path).render_system()
    with pytest.raises(RoleError, match="no role named 'nobody'"):
        load_role("nobody", tmp_path)
