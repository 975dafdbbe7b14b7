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

from synth.errors import SynthError

BUILTIN_ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class RoleError(SynthError, ValueError):
    """A role file or role plugin is invalid, or a role template cannot be rendered."""


class FewShotMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str
    when: str | None = Field(
        None, description="Jinja expression over the render context; the message is used only when it is true "
        "(e.g. `databases` to show a database example only when the task has a database file)."
    )


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
    templates: dict[str, str] = Field(
        default_factory=dict, description="Named extra Jinja templates (e.g. the refiner's distill/reformulate/refine)."
    )

    def render_system(self, **context: Any) -> str:
        return _render(self.system, context, f"{self.name}.system")

    def render_user(self, **context: Any) -> str:
        return _render(self.user, context, f"{self.name}.user")

    def render_template(self, key: str, **context: Any) -> str:
        if key not in self.templates:
            raise RoleError(f"role {self.name!r} has no template {key!r}; it has: {', '.join(self.templates) or 'none'}")
        return _render(self.templates[key], context, f"{self.name}.templates.{key}")

    def few_shot_messages(self, **context: Any) -> list[dict[str, str]]:
        return [
            {"role": m.role, "content": _render(m.content, context, f"{self.name}.few_shot")}
            for m in self.few_shot
            if m.when is None or _holds(m.when, context, f"{self.name}.few_shot.when")
        ]


# Compiling a Jinja template costs milliseconds; every episode renders the same few role templates many times.
@lru_cache(maxsize=512)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=256)
def _expression(source: str) -> Any:
    return _ENV.compile_expression(source)


def _holds(expression: str, context: dict[str, Any], where: str) -> bool:
    try:
        return bool(_expression(expression)(**context))
    except jinja2.TemplateError as exc:
        raise RoleError(f"cannot evaluate {where} {expression!r}: {exc}") from exc


def _render(template: str, context: dict[str, Any], where: str) -> str:
    try:
        return _template(template).render(**context)
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


# --- plugin roles (entry points) -----------------------------------------------------------------------------
#
# A package can provide a role in code instead of YAML by declaring, in its pyproject.toml,
#     [project.entry-points."ds_synth.roles"]
#     questioner = "my_pkg.roles:MyQuestioner"
# The entry point returns a class implementing that role's protocol (e.g. synth.graphs.interaction.Questioner);
# the engine instantiates it with keyword arguments `model=` (its ChatModel) and `role=` (the YAML Role or None).

ROLE_ENTRY_POINT_GROUP = "ds_synth.roles"


@lru_cache(maxsize=1)
def _entry_points() -> tuple[Any, ...]:
    # Scanning installed distributions takes ~15 ms; plugins do not change while a process runs.
    from importlib.metadata import entry_points

    return tuple(entry_points(group=ROLE_ENTRY_POINT_GROUP))


def role_plugins() -> dict[str, Any]:
    """Entry points registered under `ds_synth.roles`, by role name (not yet loaded)."""
    return {ep.name: ep for ep in _entry_points()}


def load_role_plugin(name: str) -> type | None:
    """The class a plugin registered for role `name`, or None when no plugin provides that role."""
    entry = role_plugins().get(name)
    if entry is None:
        return None
    try:
        provided = entry.load()
    except Exception as exc:  # an installed plugin that cannot import must say which one
        raise RoleError(f"role plugin {name!r} ({entry.value}) failed to load: {exc}") from exc
    if not isinstance(provided, type):
        if callable(provided):
            provided = provided()  # a factory returning the class
        if not isinstance(provided, type):
            raise RoleError(f"role plugin {name!r} ({entry.value}) must return a class, got {type(provided).__name__}")
    return provided
