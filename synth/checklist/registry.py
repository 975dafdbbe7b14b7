"""The rule registry: `@rule("name")` registers a check; plugins add rules through the `ds_synth.rules` entry points.

A rule is `fn(ctx: RuleContext, *, param=default, ...) -> ItemResult`; its parameters are the keyword-only
arguments, validated when a checklist is loaded, not when it runs. The built-in rules live in answer_rules,
file_rules and execution_rules (grouped by what they look at) and are registered on first lookup.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import typing
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from synth.checklist.items import ItemResult
from synth.errors import SynthError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ds_synth.rules"
BUILTIN_RULE_MODULES = ("synth.checklist.answer_rules", "synth.checklist.file_rules",
                        "synth.checklist.execution_rules")


class ChecklistError(SynthError, ValueError):
    """A checklist, item or rule parameter is invalid (raised at load time, with what and where)."""


class RuleSetupError(SynthError, RuntimeError):
    """A rule cannot run because the caller did not give it what it needs (no sandbox, no workspace …).

    This is a wiring bug, not a property of the trajectory, so `evaluate` raises it instead of failing the item.
    """


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: Callable[..., ItemResult]
    params_model: type[BaseModel]
    hard: bool
    fix: str  # how to fix a failure, phrased as an instruction to the solver
    description: str

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.params_model.model_validate(params or {}).model_dump()
        except ValidationError as exc:
            raise ChecklistError(f"rule {self.name!r}: bad params ({errors_text(exc)})") from None


def errors_text(exc: ValidationError, skip: int = 0) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"][skip:]) or "value"
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


_RULES: dict[str, RuleSpec] = {}
_plugins_loaded = False


def rule(
    name: str,
    *,
    hard: bool = False,
    fix: str = "",
    description: str = "",
    params: type[BaseModel] | None = None,
    replace: bool = False,
) -> Callable[[Callable[..., ItemResult]], Callable[..., ItemResult]]:
    """Register `fn(ctx: RuleContext, *, param=default, ...) -> ItemResult` as rule `name`.

    The parameters model is built from the keyword-only arguments and their annotations (missing default =
    required), unless `params` gives one explicitly. `hard=True` marks a failure that revision cannot fix.
    """

    def decorate(fn: Callable[..., ItemResult]) -> Callable[..., ItemResult]:
        if name in _RULES and not replace:
            raise ChecklistError(f"rule {name!r} is already registered (pass replace=True to override it)")
        model = params or _params_model_from_signature(name, fn)
        doc = description or (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        _RULES[name] = RuleSpec(name, fn, model, hard, fix, doc)
        return fn

    return decorate


def _params_model_from_signature(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ChecklistError(f"rule {name!r}: parameter {param.name!r} must be keyword-only (after `*`)")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    model_name = "".join(part.title() for part in name.split("_")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)



def _load_rules() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in BUILTIN_RULE_MODULES:
        importlib.import_module(module)  # importing a module runs its @rule decorators
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in rules down with it
            log.warning("could not load rule plugin %s (%s): %s", ep.name, ep.value, exc)


def get_rule(name: str) -> RuleSpec:
    _load_rules()
    try:
        return _RULES[name]
    except KeyError:
        raise ChecklistError(f"unknown rule {name!r}; known rules: {', '.join(sorted(_RULES))}") from None


def registered_rules() -> dict[str, RuleSpec]:
    _load_rules()
    return dict(sorted(_RULES.items()))


__all__ = ["ChecklistError", "RuleSetupError", "RuleSpec", "rule", "get_rule", "registered_rules", "errors_text",
           "ENTRY_POINT_GROUP"]
