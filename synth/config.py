"""User-facing configuration files, as pydantic models (extra="forbid": a typo is an error, not a silent default).

`GenerateConfig` carries every `synth generate` option; a run directory stores the resolved one as
`config.yaml`, and `synth generate --config FILE` reads it back (CLI options given explicitly win).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CATEGORIES: tuple[str, ...] = (
    "data_preparation",
    "data_cleaning",
    "data_analysis",
    "data_insight",
    "modeling",
    "report_generation",
    "open_research",
)
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
DEFAULT_MODEL = "embedded"

RoleName = Literal["questioner", "solver", "inspector"]


class ConfigError(ValueError):
    """A config file or option is invalid; the message is one line saying what and where."""


class GenerateConfig(BaseModel):
    """Everything `synth generate` needs. Paths are kept as given; `resolved()` makes them absolute."""

    model_config = ConfigDict(extra="forbid")

    sources: Path = Field(..., description="Directory (or file) of data sources; never written to.")
    out: Path | None = Field(None, description="Run directory; default runs/<timestamp>.")
    limit: int | None = Field(None, ge=1, description="Episodes to run; default every source × category × difficulty.")
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES))
    difficulties: list[str] = Field(default_factory=lambda: list(DIFFICULTIES))
    model: str = Field(DEFAULT_MODEL, description="Model spec used by every role that names none.")
    questioner_model: str | None = None
    solver_model: str | None = None
    inspector_model: str | None = None
    base_url: str | None = Field(None, description="Base URL for openai:… model specs.")
    concurrency: int = Field(2, ge=1, le=256)
    mode: Literal["script", "session"] = "script"
    max_revisions: int = Field(1, ge=0, le=10)
    max_rounds: int = Field(8, ge=1, le=100, description="Agent rounds (model turns) per solve attempt.")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per executed cell.")
    seed: int = 0
    roles: Path | None = Field(None, description="Directory of role YAML files overriding the built-in ones.")
    checklists: Path | None = Field(None, description="Directory of checklist YAML files overriding built-ins.")
    backend: Literal["local", "docker"] = "local"
    resume: bool = Field(False, description="Continue an interrupted run in `out`.")
    executor: Literal["local", "ray"] = Field("local", description="Where episodes run: this process or Ray.")
    ray_address: str | None = Field(None, description="Ray cluster address for --executor ray (default: local).")

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        return _check_choices(value, CATEGORIES, "category")

    @field_validator("difficulties")
    @classmethod
    def _known_difficulties(cls, value: list[str]) -> list[str]:
        return _check_choices(value, DIFFICULTIES, "difficulty")

    @model_validator(mode="after")
    def _resume_needs_out(self) -> "GenerateConfig":
        if self.resume and self.out is None:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        return self

    def model_for(self, role: RoleName) -> str:
        """The model spec a role runs on: its own option, else the run's `model`."""
        specific = {"questioner": self.questioner_model, "solver": self.solver_model,
                    "inspector": self.inspector_model}[role]
        return specific or self.model

    def resolved(self) -> "GenerateConfig":
        """A copy with absolute paths, so a stored config still works from another cwd."""
        updates: dict[str, Any] = {}
        for name in ("sources", "out", "roles", "checklists"):
            value = getattr(self, name)
            if value is not None:
                updates[name] = Path(value).expanduser().resolve()
        return self.model_copy(update=updates)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude={"resume"})
        return yaml.safe_dump(data, sort_keys=False)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_yaml_text(cls, text: str, where: str = "<config>", **overrides: Any) -> "GenerateConfig":
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {_one_line(str(exc))}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.validate_dict(data, where)

    @classmethod
    def load(cls, path: Path, **overrides: Any) -> "GenerateConfig":
        """Read a config file; `overrides` (non-None values) replace its options."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
        return cls.from_yaml_text(text, str(path), **overrides)

    @classmethod
    def validate_dict(cls, data: dict[str, Any], where: str = "<options>") -> "GenerateConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_describe(exc)}") from exc


def _check_choices(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    if not values:
        raise ValueError(f"at least one {what} is needed")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))  # keep order, drop repeats


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"{loc}: {msg}")
    return _one_line("; ".join(parts))


def _one_line(text: str) -> str:
    return " ".join(text.split())
