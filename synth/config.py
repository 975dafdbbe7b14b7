"""The run configs, as pydantic models (extra="forbid": a typo is an error, not a silent default).

`GenerateConfig` carries every `synth generate` option and `RefineConfig` every `synth refine` option. A run
directory stores the resolved one as `config.yaml`; `--config FILE` and `--resume` read it back (options typed on
the command line win). The CLI options are derived from these fields (synth/commands/options.py), so the field
descriptions are the `--help` texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.errors import ConfigError

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
DEFAULT_MODEL = "embedded"

RoleName = Literal["questioner", "solver", "inspector", "verifier"]
C = TypeVar("C", bound="RunConfig")


class RunConfig(BaseModel):
    """What every run config does: validate with one-line errors, resolve paths, round-trip through YAML."""

    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ()

    def resolved(self: C) -> C:
        """A copy with absolute paths, so a stored config still works from another cwd."""
        updates = {name: Path(getattr(self, name)).expanduser().resolve()
                   for name in self.path_fields if getattr(self, name) is not None}
        return self.model_copy(update=updates)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"resume"}), sort_keys=False)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_yaml_text(cls: type[C], text: str, where: str = "<config>", **overrides: Any) -> C:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {_one_line(str(exc))}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.validate_dict(data, where)

    @classmethod
    def load(cls: type[C], path: Path, **overrides: Any) -> C:
        """Read a config file; `overrides` (non-None values) replace its options."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
        return cls.from_yaml_text(text, str(path), **overrides)

    @classmethod
    def validate_dict(cls: type[C], data: dict[str, Any], where: str = "<options>") -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_describe(exc)}") from exc


class GenerateConfig(RunConfig):
    """Everything `synth generate` needs. Paths are kept as given; `resolved()` makes them absolute."""

    path_fields: ClassVar[tuple[str, ...]] = ("sources", "out", "roles", "checklists", "tasks")

    sources: Path = Field(..., description="Directory (or file) of data sources; never written to.")
    out: Path | None = Field(None, description="Run directory (default runs/run-<time>).")
    limit: int | None = Field(None, ge=1, description="Episodes to run (default: sources × categories × difficulties).")
    categories: list[str] | None = Field(
        None, description="Task categories (default: every category with a checklist: built-in + --checklists).")
    difficulties: list[str] = Field(default_factory=lambda: list(DIFFICULTIES), description="easy, medium, hard.")
    model: str = Field(DEFAULT_MODEL, description="Model spec for every role that names none (default: embedded).")
    questioner_model: str | None = Field(None, description="Model spec for the questioner.")
    solver_model: str | None = Field(None, description="Model spec for the solver.")
    inspector_model: str | None = Field(None, description="Model spec for the inspector.")
    verifier_model: str | None = Field(None, description="Model spec for the verifier (the independent reference "
                                       "program).")
    tasks: Path | None = Field(None, description="Your own tasks (rows with instruction, files, and optional "
                               "reference, category, difficulty, id) instead of the questioner's.")
    tasks_format: Literal["auto", "jsonl", "csv", "parquet", "infiagent", "wikitq", "tablebench"] = Field(
        "auto", description="Format of --tasks.", json_schema_extra={"cli": "--format"})
    verify: bool = Field(True, description="Check every closed-form answer against an independent computation "
                         "(a verifier program run in a fresh sandbox); --no-verify keeps unverified references.")
    solves: int = Field(1, ge=1, le=16, description="Independent solves per task; with k >= 2 the record keeps the "
                        "solve rate as its measured difficulty.")
    base_url: str | None = Field(None, description="Base URL for openai:… model specs.")
    concurrency: int = Field(2, ge=1, le=256, description="Episodes run at once.")
    mode: Literal["script", "session"] = Field("script", description="script: each cell a fresh process; "
                                               "session: state persists across cells.")
    max_revisions: int = Field(1, ge=0, le=10, description="Solver revisions after inspector feedback.")
    max_rounds: int = Field(8, ge=1, le=100, description="Agent rounds (model turns) per solve attempt.")
    cell_timeout_s: float = Field(60.0, gt=0, description="Wall-clock seconds per executed cell.",
                                  json_schema_extra={"cli": "--cell-timeout"})
    seed: int = Field(0, description="Seed of the episode plan.")
    roles: Path | None = Field(None, description="Directory of role YAML files overriding the built-in ones.")
    checklists: Path | None = Field(None, description="Directory of checklist YAML files: overrides built-ins and "
                                    "adds categories of your own.")
    backend: Literal["local", "docker"] = Field("local", description="Sandbox backend.")
    resume: bool = Field(False, description="Continue (or grow, with a larger --limit) the run in --out.")
    executor: Literal["local", "ray"] = Field("local", description="Where episodes run: this process or Ray.")
    ray_address: str | None = Field(None, description="Ray cluster address for --executor ray (default: local).")

    @field_validator("difficulties")
    @classmethod
    def _known_difficulties(cls, value: list[str]) -> list[str]:
        return _check_choices(value, DIFFICULTIES, "difficulty")

    @model_validator(mode="after")
    def _checked(self) -> "GenerateConfig":
        if self.resume and self.out is None:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        from synth.checklist import list_categories

        known = tuple(list_categories(self.checklists))
        # The plan is a function of the config: the categories are fixed once, when the config is made.
        self.categories = _check_choices(self.categories if self.categories is not None else list(known), known,
                                         "category")
        return self

    def model_for(self, role: RoleName) -> str:
        """The model spec a role runs on: its own option, else the run's `model`."""
        specific = {"questioner": self.questioner_model, "solver": self.solver_model,
                    "inspector": self.inspector_model, "verifier": self.verifier_model}[role]
        return specific or self.model


class RefineConfig(RunConfig):
    """Every `synth refine` option; a run dir stores the resolved one as config.yaml (reused by --resume)."""

    path_fields: ClassVar[tuple[str, ...]] = ("input", "out", "roles", "checklists")

    input: Path = Field(..., description="Instruction data (file or folder); only read.")
    format: Literal["auto", "wikitq", "tablebench", "jsonl", "json", "csv", "tsv", "parquet", "hf"] = Field(
        "auto", description="Format of --input.")
    question_field: str | None = Field(None, description="Field holding the question.")
    answer_field: str | None = Field(None, description="Field holding the reference answer.")
    table_field: str | None = Field(None, description="Field holding the table (object, rows, path or text).")
    context_field: str | None = Field(None, description="Field holding extra text context.")
    id_field: str | None = Field(None, description="Field holding the item id (default: id, else a hash).")
    out: Path | None = Field(None, description="Run directory (default runs/refine-<time>).")
    limit: int | None = Field(None, ge=1, description="Items to process (the first N).")
    model: str = Field(DEFAULT_MODEL, description="Teacher model spec (default: embedded).")
    judge_model: str | None = Field(None, description="Model spec of the LLM judge (enables the `judge` matcher).")
    base_url: str | None = Field(None, description="Base URL for openai:… specs.")
    concurrency: int = Field(2, ge=1, le=256, description="Items processed at once.")
    keywords_per_trace: int = Field(3, ge=0, le=20, description="Keywords sampled per item (K).")
    seed: int = Field(0, description="Seed of keyword sampling.")
    matchers: str = Field("auto", description="Answer matcher chain, e.g. exact,wikitq,numeric,contains,judge.")
    max_distill_attempts: int = Field(2, ge=1, le=10, description="Distillations per item before dropping it.")
    max_refine_attempts: int = Field(2, ge=1, le=10, description="Refinements per item before keeping only the "
                                     "distilled trace.")
    max_table_rows: int = Field(40, ge=1, description="Table rows shown in a prompt.")
    max_table_chars: int = Field(6000, ge=200, description="Characters of table shown in a prompt.")
    roles: Path | None = Field(None, description="Directory of role YAML overriding the built-ins.")
    checklists: Path | None = Field(None, description="Directory with a keywords.yaml overriding the built-in "
                                    "vocabulary.")
    resume: bool = Field(False, description="Continue the interrupted run in --out.")
    executor: Literal["local", "ray"] = Field("local", description="Where items run: this process or Ray.")
    ray_address: str | None = Field(None, description="Ray cluster address (with --executor ray).")

    def chain(self) -> list[str]:
        from synth.matchers import parse_chain

        names = parse_chain(self.matchers)
        if self.judge_model and "judge" not in names and self.matchers == "auto":
            names.append("judge")
        return names


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


__all__ = ["ConfigError", "RunConfig", "GenerateConfig", "RefineConfig", "DIFFICULTIES", "DEFAULT_MODEL"]
