"""Re-running an audited trajectory and classifying each `<Execute>` block against what its code really prints.

The assistant message is split into cells (each `<Code>` and the `<Execute>` block after it); the cells are re-run
in order in a FRESH sandbox session over copies of the files the prompt names, in the trajectory's execution mode
(recorded, given, or detected from the code: a cell that uses a name only an earlier cell defines needs session
mode). Each block is then one of

- `identical` — what the replay printed, byte for byte (up to the newline framing the harness adds);
- `normalized` — equal once paths, memory addresses, durations, whitespace and float noise are normalised
  (`synth.checklist.execution_rules.normalize_output`, the normalisation `replay_reproduces` uses, made lenient);
- `different` — the code prints something else: the first differing line is shown;
- `not_reproducible` — the replay cannot tell: a file the prompt names is missing or differs from the one the
  trajectory ran on, the cell timed out, or two replays of the same code disagree (non-deterministic output).

A second replay runs only when some block differs, to tell tampering from non-determinism.
"""

from __future__ import annotations

import ast
import builtins
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from synth.checklist.execution_rules import first_difference, normalize_output
from synth.protocol import Action, Text, extract_code, parse, validate
from synth.sandbox.base import ExecResult, ExecutionMode, Limits, Sandbox, SandboxState
from synth.trajectory import Trajectory, Turn

BLOCK_CLASSES = ("identical", "normalized", "different", "not_reproducible")
_BUILTINS = set(dir(builtins)) | {"__file__", "__name__", "display", "get_ipython"}


@dataclass
class Cell:
    number: int  # from 1, in order
    code: str
    recorded: str | None  # the <Execute> block after it (framing newlines stripped); None when there is none
    text: str  # the model's text of this turn, up to and including its </Code>


@dataclass
class ReadTrajectory:
    """An assistant message split into cells, the text after the last one, and what is wrong with its structure."""

    cells: list[Cell]
    tail: str
    answer: str | None
    issues: list[str]

    def codes(self) -> list[str]:
        return [c.code for c in self.cells]


def read_assistant(text: str) -> ReadTrajectory:
    """Split an assistant message (Execute inline) into cells; list structural problems precisely."""
    parsed = parse(text)
    issues = [str(issue) for issue in validate(text)]
    cells: list[Cell] = []
    buffer: list[str] = []
    pending: Cell | None = None
    for segment in parsed.segments:
        if isinstance(segment, Text):
            buffer.append(segment.raw)
            continue
        assert isinstance(segment, Action)
        if segment.kind == "Execute":
            if pending is None or pending.recorded is not None:
                issues.append(f"orphan_execute at {segment.start}: an <Execute> block with no <Code> before it")
                continue
            pending.recorded = segment.content.removeprefix("\n").removesuffix("\n")
            buffer = []
            continue
        if segment.kind == "Code":
            if pending is not None and pending.recorded is None:
                issues.append(f"code_not_executed at {segment.start}: <Code> {pending.number} has no <Execute> after it")
            buffer.append(segment.raw)
            pending = Cell(len(cells) + 1, extract_code(segment.content), None, "".join(buffer).strip())
            cells.append(pending)
            buffer = []
            continue
        buffer.append(segment.raw)
    if pending is not None and pending.recorded is None and parsed.answer is not None:
        issues.append(f"code_not_executed: <Code> {pending.number} has no <Execute> after it")
    return ReadTrajectory(cells, "".join(buffer).strip(), parsed.answer, issues)


def recorded_result(block: str | None) -> ExecResult | None:
    """An ExecResult holding a recorded block (for rules when the replay cannot stand in for it)."""
    if block is None:
        return None
    head, marker, error = block.partition("[Error]:\n")
    if marker:
        return ExecResult(stdout=head.rstrip("\n"), error=error or "error")
    if "Traceback (most recent call last):" in block:
        return ExecResult(stdout="", error=block)
    return ExecResult(stdout=block)


def build_trajectory(prompt: str, read: ReadTrajectory, results: Sequence[ExecResult | None],
                     mode: ExecutionMode) -> Trajectory:
    """The audited trajectory as the agent loop would have recorded it, with `results` as the cells' outputs."""
    turns = [Turn(text=cell.text, code=cell.code, result=result) for cell, result in zip(read.cells, results)]
    if read.tail:
        turns.append(Turn(text=read.tail))
    return Trajectory(prompt=prompt, turns=turns, answer=read.answer,
                      stop_reason="answer" if read.answer is not None else "max_rounds", mode=mode)


# --- execution mode --------------------------------------------------------------------------------------------


def _bound_and_used(code: str) -> tuple[set[str], set[str]] | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return bound, used


def detect_mode(codes: Sequence[str]) -> tuple[ExecutionMode, str]:
    """`session` when a cell uses a name that it does not define but an earlier cell does; else `script`."""
    defined: set[str] = set()
    for number, code in enumerate(codes, start=1):
        found = _bound_and_used(code)
        if found is None:
            continue
        bound, used = found
        carried = sorted((used - bound - _BUILTINS) & defined)
        if carried:
            return "session", f"cell {number} uses {carried[0]!r}, defined only by an earlier cell"
        defined |= bound
    return "script", "every cell defines what it uses"


# --- replay ----------------------------------------------------------------------------------------------------


@dataclass
class Replay:
    results: list[ExecResult]
    initial: SandboxState
    final: SandboxState
    workspace: Path


def _stage(files: dict[str, Path], staging: Path) -> list[Path]:
    """What to hand `Sandbox.open` so that every file lands at its prompt name (nested names are staged)."""
    direct = [path for name, path in files.items() if "/" not in name]
    nested = {name: path for name, path in files.items() if "/" in name}
    tops: list[Path] = []
    for name, path in nested.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, target)
        tops.append(staging / name.split("/", 1)[0])
    return direct + list(dict.fromkeys(tops))


def replay(sandbox: Sandbox, files: dict[str, Path], codes: Sequence[str], *, mode: ExecutionMode,
           limits: Limits, workspace: Path) -> Replay:
    """Run `codes` in order in a fresh session whose workspace (kept after close) is `workspace`."""
    staging = workspace.with_name(workspace.name + "-staging")
    session = sandbox.open(_stage(files, staging), mode=mode, limits=limits, workspace=workspace)
    try:
        initial = session.snapshot()
        results = [session.run(code, timeout=limits.timeout_s) for code in codes]
        final = session.snapshot()
        root = Path(session.workspace)
    finally:
        session.close()
        shutil.rmtree(staging, ignore_errors=True)
    return Replay(results, initial, final, root)


# --- classification --------------------------------------------------------------------------------------------


@dataclass
class BlockVerdict:
    block: int  # the <Execute> block's number, from 1
    cell: int
    verdict: str  # one of BLOCK_CLASSES
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"block": self.block, "cell": self.cell, "class": self.verdict, "detail": self.detail}


@dataclass
class Authenticity:
    blocks: list[BlockVerdict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: sum(b.verdict == name for b in self.blocks) for name in BLOCK_CLASSES}

    def of(self, verdict: str) -> list[BlockVerdict]:
        return [b for b in self.blocks if b.verdict == verdict]


def _shorten(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(cells: Sequence[Cell], first: Replay, second: Replay | None = None, *,
             unverifiable: str | None = None) -> Authenticity:
    """Each recorded block against the replay. `unverifiable` says why a difference may be the input's fault
    (missing or changed files): such blocks are not_reproducible instead of different."""
    workspaces = [first.workspace] + ([second.workspace] if second is not None else [])
    out = Authenticity()
    block = 0
    for cell, result in zip(cells, first.results):
        if cell.recorded is None:
            continue
        block += 1
        replayed = result.output()
        if result.timed_out:
            out.blocks.append(BlockVerdict(block, cell.number, "not_reproducible",
                                           f"the cell timed out on replay ({_shorten(result.error or '')})"))
            continue
        if cell.recorded.strip("\n") == replayed.strip("\n"):
            out.blocks.append(BlockVerdict(block, cell.number, "identical"))
            continue
        a = normalize_output(cell.recorded, workspaces, lenient=True)
        b = normalize_output(replayed, workspaces, lenient=True)
        if a == b:
            out.blocks.append(BlockVerdict(block, cell.number, "normalized",
                                           "equal after normalising paths, whitespace and float noise"))
            continue
        difference = first_difference(a, b)
        if unverifiable:
            out.blocks.append(BlockVerdict(block, cell.number, "not_reproducible", f"{unverifiable}; {difference}"))
            continue
        if second is not None:
            other = second.results[cell.number - 1]
            if normalize_output(other.output(), workspaces, lenient=True) != b:
                out.blocks.append(BlockVerdict(block, cell.number, "not_reproducible",
                                               "non-deterministic: two replays of this cell print different output"))
                continue
        out.blocks.append(BlockVerdict(block, cell.number, "different", difference))
    return out


__all__ = ["BLOCK_CLASSES", "Cell", "ReadTrajectory", "read_assistant", "recorded_result", "build_trajectory",
           "detect_mode", "Replay", "replay", "BlockVerdict", "Authenticity", "classify"]
