"""Where model-written code runs (DESIGN §5): `get_sandbox("local" | "docker", **options)`."""

from __future__ import annotations

from synth.errors import ConfigError
from synth.sandbox.base import (
    PROTECTIONS,
    ExecResult,
    ExecutionMode,
    FileInfo,
    Limits,
    Sandbox,
    SandboxError,
    SandboxSession,
    SandboxState,
    StateDiff,
    missing_protections,
)

BACKENDS = ("local", "docker")


def get_sandbox(backend: str = "local", **options) -> Sandbox:
    """A sandbox backend. local options: python=PATH, bwrap=, namespaces=. docker options: image=, client=, build=."""
    if backend == "local":
        from synth.sandbox.local import LocalSandbox

        return LocalSandbox(**options)
    if backend == "docker":
        from synth.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    raise ConfigError(f"unknown sandbox backend {backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "PROTECTIONS",
    "ExecResult",
    "ExecutionMode",
    "FileInfo",
    "Limits",
    "Sandbox",
    "SandboxError",
    "SandboxSession",
    "SandboxState",
    "StateDiff",
    "get_sandbox",
    "missing_protections",
]
