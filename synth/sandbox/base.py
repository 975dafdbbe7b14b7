"""The sandbox contract (DESIGN §5): open a workspace, run cells, snapshot its state, close.

Sessions are synchronous (a cell blocks until it finishes or is killed); async callers use
`asyncio.to_thread(session.run, code)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence

from synth.errors import SynthError

ExecutionMode = Literal["script", "session"]


class SandboxError(SynthError, RuntimeError):
    """A sandbox cannot be used as asked: a closed session, a missing engine, a jail that cannot start."""


# What a backend can promise about the code it runs. `Sandbox.protections` is the subset that holds on THIS
# machine (computed from what it allows, not assumed); the contract tests check every claimed one and that an
# unclaimed one is not claimed. The text says what model code can do when the protection is missing.
PROTECTIONS: dict[str, str] = {
    "private_filesystem": "model code can read (and, where permissions allow, write) the host filesystem outside "
    "its workspace: your home directory, credential files, other projects",
    "no_network": "model code can reach the network and the host's loopback services",
    "pid_namespace": "model code can see the host's processes in /proc (their command lines, and the environment, "
    "API keys included, of processes of its own uid) and name them to signal",
    "separate_uid": "model code runs as the uid running synth: it can signal (kill) any process of that uid, synth "
    "included, and read and write whatever that uid can (as uid 0: the system's files, and it can leave its pids "
    "cgroup)",
    "rlimits": "model code has no CPU-time, memory or file-size limits",
    "process_limit": "model code can fork without bound (a fork bomb takes the machine down)",
    "wall_timeout": "a cell can run forever",
    "scrubbed_env": "model code sees synth's environment variables (API keys, tokens)",
    "supervisor": "model code runs as a direct child of synth: killing its parent or its parent's process group "
    "kills synth",
}

Protections = frozenset  # a frozenset of PROTECTIONS keys


def missing_protections(protections: frozenset[str]) -> list[str]:
    """The PROTECTIONS a backend does not claim, in the order PROTECTIONS lists them."""
    return [name for name in PROTECTIONS if name not in protections]


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

    @classmethod
    def from_dict(cls, data: dict) -> "SandboxState":
        return cls(files={k: FileInfo(**v) for k, v in (data.get("files") or {}).items()},
                   db_rows={k: dict(v) for k, v in (data.get("db_rows") or {}).items()})


class SandboxSession(Protocol):
    workspace: Path
    mode: ExecutionMode

    def run(self, code: str, timeout: float | None = None) -> ExecResult: ...
    def snapshot(self) -> SandboxState: ...
    def close(self) -> None: ...
    def __enter__(self) -> "SandboxSession": ...
    def __exit__(self, *exc) -> None: ...


class Sandbox(Protocol):
    """A backend. `open` copies `workspace_files` (files or directories) into a fresh workspace.

    `protections`: the PROTECTIONS that hold for code run by this backend on this machine.
    """

    name: str

    @property
    def protections(self) -> frozenset[str]: ...

    def open(
        self,
        workspace_files: Sequence[Path] = (),
        *,
        mode: ExecutionMode = "script",
        limits: Limits | None = None,
        workspace: Path | None = None,
    ) -> SandboxSession: ...
