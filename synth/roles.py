"""Roles are data: `roles/<name>.yaml` (shipped in the wheel) or a user's `--roles DIR` override.

A role = name, model spec, system prompt and few-shot examples (Jinja templates), sampling params, and the
name of its structured output schema where it has one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field

BUILTIN_ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class RoleError(ValueError):
    pass


class FewShotMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    model: str | None = Field(None, description="Model spec; None means the run's default model.")
    system: str = Field("", description="Jinja template of the system prompt.")
    user: str = Field("", description="Jinja template of the user message (roles that build their own prompt).")
    few_shot: list[FewShotMessage] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict, description="Sampling params: temperature, max_tokens …")
    output_schema: str | None = Field(None, description="Name of the pydantic model its reply must validate as.")

    def render_system(self, **context: Any) -> str:
        return _render(self.system, context, f"{self.name}.system")

    def render_user(self, **context: Any) -> str:
        return _render(self.user, context, f"{self.name}.user")

    def few_shot_messages(self, **context: Any) -> list[dict[str, str]]:
        return [
            {"role": m.role, "content": _render(m.content, context, f"{self.name}.few_shot")} for m in self.few_shot
        ]


def _render(template: str, context: dict[str, Any], where: str) -> str:
    try:
        return _ENV.from_string(template).render(**context)
    except jinja2.TemplateError as exc:
        raise RoleError(f"cannot render {where}: {exc}") from exc


def role_dirs(user_dir: Path | None = None) -> list[Path]:
    return [d for d in (user_dir, BUILTIN_ROLES_DIR) if d is not None]


@lru_cache(maxsize=64)
def _load_file(path: Path) -> Role:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return Role.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise RoleError(f"invalid role file {path}: {exc}") from exc


def load_role(name: str, roles_dir: Path | None = None) -> Role:
    """The role `name`: the user's `roles_dir/<name>.yaml` if present, else the built-in one."""
    for directory in role_dirs(roles_dir):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return _load_file(path.resolve())
    raise RoleError(f"no role named {name!r} in {', '.join(str(d) for d in role_dirs(roles_dir))}")
