"""What a rule may look at after an episode: the trajectory, the sandbox state before and after, the sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.checklist.registry import RuleSetupError
from synth.hashing import file_sha256
from synth.sandbox.base import ExecResult, FileInfo, Limits, Sandbox, SandboxState
from synth.sources.ref import SourceRef
from synth.trajectory import Trajectory


@dataclass
class RuleContext:
    """Everything a rule may look at after an episode."""

    trajectory: Trajectory
    workspace: Path | None = None  # the episode's workspace directory (still on disk)
    state: SandboxState | None = None  # session.snapshot() after the episode
    initial_state: SandboxState | None = None  # session.snapshot() right after open, before any cell ran
    sources: list[SourceRef] = field(default_factory=list)  # with `path`: the originals
    reference: Any = None  # the reference answer, if the task has one
    sandbox: Sandbox | None = None  # backend for opening fresh sessions (replay)
    limits: Limits | None = None
    assistant_text: str | None = None  # the assembled assistant message to check; default trajectory.assistant_text()

    def text(self) -> str:
        return self.assistant_text if self.assistant_text is not None else self.trajectory.assistant_text()

    def final_files(self) -> dict[str, FileInfo]:
        if self.state is not None:
            return dict(self.state.files)
        if self.workspace is not None:
            return _scan_workspace(self.workspace)
        raise RuleSetupError("this rule needs the sandbox state or workspace after the episode; neither was given")

    def initial_files(self) -> dict[str, FileInfo]:
        if self.initial_state is not None:
            return dict(self.initial_state.files)
        # Without a snapshot from before the episode, the copied sources are the only files known to predate it.
        names = {s.name for s in self.sources}
        return {p: info for p, info in self.final_files().items() if p in names or p.split("/", 1)[0] in names}


def _scan_workspace(root: Path) -> dict[str, FileInfo]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            files[rel] = FileInfo(rel, path.stat().st_size, file_sha256(path))
    return files


def executed_cells(ctx: RuleContext) -> list[tuple[int, str, ExecResult]]:
    """(cell number from 1, code, result) of every cell that actually ran."""
    cells = []
    for turn in ctx.trajectory.turns:
        if turn.code is not None and turn.result is not None:
            cells.append((len(cells) + 1, turn.code, turn.result))
    return cells


def first_line(text: str | None, limit: int = 160) -> str:
    """The telling line of an error: a traceback's last line names the exception."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


__all__ = ["RuleContext", "executed_cells", "first_line"]
