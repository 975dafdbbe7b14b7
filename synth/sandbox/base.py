"""The sandbox contract (DESIGN §5): open a workspace, run cells, snapshot its state, close.

Sessions are synchronous (a cell blocks until it finishes or is killed); async callers use
`asyncio.to_thread(session.run, code)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence

ExecutionMode = Literal["script", "session"]


@dataclass
class Limits:
    timeout_s: float = 60.0  # wall clock per cell; the whole process group is killed past it
    cpu_seconds: int = 120  # per cell process
    memory_mb: int = 2048  # address-space limit of the cell process
    file_size_mb: int = 256  # largest file a cell may write
    max_processes: int = 64  # fork-bomb guard
    output_limit_chars: int = 20_000  # stdout/stderr truncated past this, with a marker


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # traceback / kill reason; None when the cell succeeded
    duration_s: float = 0.0
    timed_out: bool = False
    files_changed: list[str] = field(default_factory=list)  # workspace-relative paths

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    def output(self) -> str:
        """The text the harness writes between <Execute> and </Execute> (upstream format: errors as `[Error]:`)."""
        parts = [p for p in (self.stdout, self.stderr) if p]
        if self.error:
            parts.append(f"[Error]:\n{self.error}")
        return "\n".join(p.rstrip("\n") for p in parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileInfo:
    path: str  # workspace-relative, POSIX separators
    size: int
    sha256: str


@dataclass
class StateDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)


@dataclass
class SandboxState:
    files: dict[str, FileInfo] = field(default_factory=dict)
    db_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # db file -> table -> row count

    def diff(self, before: "SandboxState") -> StateDiff:
        """What changed from `before` to this state."""
        added = sorted(set(self.files) - set(before.files))
        removed = sorted(set(before.files) - set(self.files))
        modified = sorted(
            p for p in set(self.files) & set(before.files) if self.files[p].sha256 != before.files[p].sha256
        )
        return StateDiff(added, removed, modified)

    def to_dict(self) -> dict:
        return asdict(self)


class SandboxSession(Protocol):
    workspace: Path
    mode: ExecutionMode

    def run(self, code: str, timeout: float | None = None) -> ExecResult: ...
    def snapshot(self) -> SandboxState: ...
    def close(self) -> None: ...
    def __enter__(self) -> "SandboxSession": ...
    def __exit__(self, *exc) -> None: ...


class Sandbox(Protocol):
    """A backend. `open` copies `workspace_files` (files or directories) into a fresh workspace."""

    name: str

    def open(
        self,
        workspace_files: Sequence[Path] = (),
        *,
        mode: ExecutionMode = "script",
        limits: Limits | None = None,
        workspace: Path | None = None,
    ) -> SandboxSession: ...
