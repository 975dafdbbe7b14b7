"""CLI options derived from the pydantic configs: each option is declared once, as a config field.

`options_from(GenerateConfig)` turns every field into a Typer option (`--field-name`, its `description` as the
help, its type, `--flag/--no-flag` for booleans, repeatable or comma-separated for lists), all defaulting to None
so that only the options a user typed reach the config (a config file or a stored run config supplies the rest).
A field's `json_schema_extra={"cli": "--other-name"}` renames its flag; `{"cli": False}` keeps it off the CLI.
So `--help`, the YAML config and the Python API cannot drift apart.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Literal, Optional, Sequence

import typer
from pydantic import BaseModel


def _flag(name: str, field: Any) -> str | None:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("cli") is False:
        return None
    return extra.get("cli") or "--" + name.replace("_", "-")


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(annotation: Any) -> tuple[Any, str]:
    """(the Typer type, a note for the help such as the allowed values)."""
    inner = _unwrap(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        return str, "one of " + " | ".join(str(a) for a in typing.get_args(inner))
    if origin in (list, List, Sequence):
        return List[str], "repeat or comma-separate"
    if inner in (int, float, str, bool, Path):
        return inner, ""
    return str, ""


def options_from(config_cls: type[BaseModel], *, exclude: Sequence[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter (a Typer option defaulting to None) per CLI field of `config_cls`."""
    params = []
    for name, field in config_cls.model_fields.items():
        flag = _flag(name, field)
        if name in exclude or flag is None:
            continue
        kind, note = _cli_type(field.annotation)
        help_text = field.description or ""
        if note and note not in help_text:
            help_text = f"{help_text} ({note})" if help_text else note
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
            default=typer.Option(None, *decls, help=help_text, show_default=False)))
    return params


def given_options(values: dict[str, Any]) -> dict[str, Any]:
    """The options a user typed (None = not given); list options split on commas."""
    given = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [part.strip() for item in value for part in str(item).split(",") if part.strip()]
            if not value:
                continue
        given[key] = value
    return given


def config_command(
    config_cls: type[BaseModel],
    run: Callable[..., int],
    *,
    doc: str,
    extra: Sequence[inspect.Parameter] = (),
    exclude: Sequence[str] = (),
) -> Callable[..., None]:
    """A Typer command whose options are `config_cls`'s fields plus `extra` CLI-only parameters; it calls
    `run(options, **extra_values)` with the given options and exits with its return code."""
    extra_names = [p.name for p in extra]

    def command(**values: Any) -> None:
        extras = {name: values.pop(name) for name in extra_names}
        raise typer.Exit(run(given_options(values), **extras))

    command.__signature__ = inspect.Signature([*options_from(config_cls, exclude=exclude), *extra])  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = config_cls.__name__.removesuffix("Config").lower()
    return command


def option(name: str, annotation: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
    """A CLI-only keyword parameter (e.g. `--config FILE`) for `config_command(extra=…)`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=help))


__all__ = ["options_from", "given_options", "config_command", "option"]
