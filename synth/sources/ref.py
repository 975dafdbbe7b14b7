"""The one reference to a source: its name, its content hash, and (on this machine) where it lies.

Plans, records, checklist rules and exports all speak of sources through `SourceRef`. A record stores the name and
hash only; `path` is where the original is on the machine that ran the episode (used to prove it was not touched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., description="The source as the workspace names it (a file or folder name).")
    sha256: str = Field(..., description="Content hash (synth.hashing.path_sha256) when the episode started.")
    path: Path | None = Field(None, exclude=True, description="The original on this machine; never stored.")

    @classmethod
    def of(cls, path: Path | str, name: str | None = None) -> "SourceRef":
        """Hash `path` now (before an episode touches anything)."""
        from synth.hashing import path_sha256

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"source not found: {path}")
        return cls(name=name or path.name, sha256=path_sha256(path), path=path)

    @classmethod
    def coerce(cls, value: Any) -> "SourceRef":
        """A SourceRef from a SourceRef, a {name, sha256} dict, a (name, sha256) pair or anything with those
        attributes (a DataCard)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(name=value["name"], sha256=value["sha256"])
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(name=str(value[0]), sha256=str(value[1]))
        if hasattr(value, "name") and hasattr(value, "sha256"):
            return cls(name=str(value.name), sha256=str(value.sha256))
        raise TypeError(f"cannot read a source reference (name, sha256) from {value!r}")


def source_refs(paths: Any) -> list[SourceRef]:
    """Hash the episode's sources BEFORE it starts, so `sources_unchanged` can prove they were not touched."""
    return [SourceRef.of(p) for p in paths]


__all__ = ["SourceRef", "source_refs"]
