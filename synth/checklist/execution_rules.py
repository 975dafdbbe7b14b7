"""Rules over the execution: turns, libraries, errors, model-written Execute, authentic outputs, replay."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Sequence

from synth.checklist.context import RuleContext, executed_cells, first_line
from synth.checklist.items import ItemResult
from synth.checklist.registry import RuleSetupError, rule


@rule("turns_between", fix="Work the task in a number of steps within the allowed range.")
def turns_between(ctx: RuleContext, *, min: int = 1, max: int = 30) -> ItemResult:
    """The number of model turns lies in [min, max]."""
    n = len(ctx.trajectory.turns)
    if n < min:
        return ItemResult(False, f"{n} turns, fewer than {min}: too little exploration")
    if n > max:
        return ItemResult(False, f"{n} turns, more than {max}")
    return ItemResult(True, f"{n} turns, within [{min}, {max}]")


def _imports(code: str) -> set[str]:
    names: set[str] = set()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        for m in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))", code, re.MULTILINE):
            for name in (m.group(1) or m.group(2) or "").split(","):
                if name.strip():
                    names.add(name.strip().split()[0])
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@rule("uses_library", fix="Use the required library for this task (import it and work with it).")
def uses_library(ctx: RuleContext, *, name: str) -> ItemResult:
    """Some executed code cell imports `name` (or a submodule of it)."""
    for number, code, _ in executed_cells(ctx):
        for imported in _imports(code):
            if imported == name or imported.startswith(name + "."):
                return ItemResult(True, f"cell {number} imports {imported}")
    return ItemResult(False, f"no executed cell imports {name}")


@rule("no_unresolved_errors", fix="Fix the failing code and re-run it until it succeeds before answering.")
def no_unresolved_errors(ctx: RuleContext) -> ItemResult:
    """Every failing cell was followed by a later successful one, and the last cell succeeded."""
    cells = executed_cells(ctx)
    if not cells:
        return ItemResult(True, "no code was executed")
    errors = [(n, r) for n, _, r in cells if not r.ok]
    last_number, _, last = cells[-1]
    if not last.ok:
        what = "timed out" if last.timed_out else first_line(last.error)
        return ItemResult(False, f"the last cell ({last_number}) failed: {what}")
    if errors:
        return ItemResult(True, f"{len(errors)} error(s) later fixed (cells {', '.join(str(n) for n, _ in errors)})")
    return ItemResult(True, f"all {len(cells)} cells succeeded")


@rule("code_runs", fix="Make the code run without errors; check column names and types before using them.")
def code_runs(ctx: RuleContext, *, min: float = 1.0) -> ItemResult:
    """The fraction of executed cells without error is at least `min`."""
    cells = executed_cells(ctx)
    if not cells:
        return ItemResult(False, "no code was executed")
    ok = sum(1 for _, _, r in cells if r.ok)
    rate = ok / len(cells)
    verdict = rate >= min - 1e-12
    return ItemResult(verdict, f"{ok}/{len(cells)} cells ran without error ({rate:.0%}; needed {min:.0%})")



_EXECUTE_OPEN = re.compile(r"</?Execute>")


@rule("no_model_written_execute", hard=True, fix="Never write <Execute> yourself; stop after </Code>.")
def no_model_written_execute(ctx: RuleContext, *, count_repaired: bool = False) -> ItemResult:
    """No model turn contains an <Execute> tag. With `count_repaired`, an invented Execute the loop already cut
    out (noted on the turn) also fails."""
    for number, turn in enumerate(ctx.trajectory.turns, start=1):
        if _EXECUTE_OPEN.search(turn.text):
            return ItemResult(False, f"turn {number} contains an <Execute> tag written by the model")
        if count_repaired and any("execute" in note.lower() for note in turn.notes):
            return ItemResult(False, f"turn {number}: the loop cut an invented <Execute> ({turn.notes[0]})")
    return ItemResult(True, "no model-written <Execute>")


@rule("execute_blocks_authentic", hard=True, fix="Never write <Execute> yourself; stop after </Code>.")
def execute_blocks_authentic(ctx: RuleContext) -> ItemResult:
    """Every <Execute> block in the assembled assistant message equals what the sandbox really returned for the
    corresponding cell, and there is one block per executed cell."""
    from synth.protocol import parse

    blocks = [a.content for a in parse(ctx.text()).of_kind("Execute")]
    real = [t.result.output() for t in ctx.trajectory.turns if t.result is not None]
    for index, (shown, actual) in enumerate(zip(blocks, real), start=1):
        if shown.strip("\n") != actual.strip("\n"):
            return ItemResult(False, f"<Execute> block {index} differs from the real output of cell {index}: "
                                     f"shows {first_line(shown, 60)!r}, sandbox printed {first_line(actual, 60)!r}")
    if len(blocks) != len(real):
        return ItemResult(False, f"{len(blocks)} <Execute> blocks for {len(real)} executed cells")
    return ItemResult(True, f"all {len(real)} <Execute> blocks match the sandbox output")


# Volatile bits that legitimately differ between two runs of the same code (documented in replay_reproduces).
_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]{4,}"), "0x<addr>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s|sec|secs|seconds?|minutes?)\b"), "<duration>"),
    # a cell file is /tmp/cell_1.py in bubblewrap's private /tmp and /tmp/<random>/cell_1.py without: the
    # directories go, the file name stays
    (re.compile(r"/tmp(?:/[\w.-]+)*(/[\w.-]+)"), r"/tmp/<tmp>\1"),
]


# What an audit (`synth inspect`) also forgives when it calls two outputs "normalized": absolute paths (another
# machine's workspace), float noise (0.30000000000000004 vs 0.3, 4.110000 vs 4.11) and runs of blanks.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/[\w.+-]+)+/([\w.+-]+)")
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])")


def _float_canonical(match: re.Match[str]) -> str:
    return format(float(match.group(0)), ".10g")


def normalize_output(text: str, workspaces: Sequence[Path] = (), extra: Sequence[re.Pattern[str]] = (), *,
                     lenient: bool = False) -> str:
    """An output with what legitimately differs between two runs of the same code taken out: the workspace
    path, memory addresses, durations, /tmp paths, trailing whitespace and any `extra` pattern. `lenient` (an
    audit of outputs recorded elsewhere) also maps absolute paths to their file name, floats to 10 significant
    digits, and runs of blanks to one space."""
    for ws in workspaces:
        for form in {str(ws), str(ws.resolve())}:
            text = text.replace(form, "<workspace>")
    if lenient:  # before the /tmp rule, so a file under /tmp maps like any other (<path>/generic.py)
        text = _ABSOLUTE_PATH.sub(r"<path>/\1", text)
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    for pattern in extra:
        text = pattern.sub("<ignored>", text)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines()]
    if lenient:
        lines = [" ".join(_FLOAT.sub(_float_canonical, line).split()) for line in lines]
        lines = [line for line in lines if line]
    return "\n".join(lines)


@rule("replay_reproduces", fix="Make the code deterministic (fix random seeds; do not print times or ids).")
def replay_reproduces(ctx: RuleContext, *, ignore_patterns: list[str] = []) -> ItemResult:  # noqa: B006 (pydantic copies)
    """Re-executes every code cell in order in a FRESH sandbox session over the same sources and compares each
    output and success flag with the recorded one.

    Tolerated differences, and only these: memory addresses (0x…), durations with a time unit (`1.2 s`,
    `30ms`), paths under /tmp and the workspace path, trailing whitespace, plus any regex in `ignore_patterns`.
    Unseeded randomness, wall-clock timestamps and anything else that changes between runs fails the item.
    """
    if ctx.sandbox is None:
        raise RuleSetupError("replay_reproduces needs the Sandbox backend (RuleContext.sandbox)")
    cells = executed_cells(ctx)
    if not cells:
        return ItemResult(False, "no code to replay")
    try:
        extra = [re.compile(p) for p in ignore_patterns]
    except re.error as exc:
        return ItemResult(False, f"bad ignore pattern: {exc}")
    session = ctx.sandbox.open([s.path for s in ctx.sources if s.path is not None], mode=ctx.trajectory.mode, limits=ctx.limits)
    try:
        workspaces = [w for w in (ctx.workspace, session.workspace) if w is not None]
        for number, code, recorded in cells:
            replayed = session.run(code)
            if replayed.ok != recorded.ok:
                state = "succeeded" if replayed.ok else f"failed ({first_line(replayed.error)})"
                return ItemResult(False, f"cell {number} {state} on replay but {'succeeded' if recorded.ok else 'failed'} when recorded")
            a = normalize_output(recorded.output(), workspaces, extra)
            b = normalize_output(replayed.output(), workspaces, extra)
            if a != b:
                return ItemResult(False, f"cell {number} printed different output on replay: {first_difference(a, b)}")
    finally:
        session.close()
    return ItemResult(True, f"all {len(cells)} cells reproduced in a fresh session")


def first_difference(recorded: str, replayed: str) -> str:
    """Where two outputs first differ, as `line N recorded '…', replay '…'`."""
    rec, rep = recorded.splitlines(), replayed.splitlines()
    for i in range(max(len(rec), len(rep))):
        a = rec[i] if i < len(rec) else "<missing>"
        b = rep[i] if i < len(rep) else "<missing>"
        if a != b:
            return f"line {i + 1} recorded {a[:60]!r}, replay {b[:60]!r}"
    return "whitespace only"


@rule("min_cells", fix="Work the task in several steps: one code block per step, each printing its result.")
def min_cells(ctx: RuleContext, *, n: int = 3) -> ItemResult:
    """At least `n` different code cells ran (a hard task has several steps; a cell re-run unchanged is none)."""
    steps, ran = ctx.trajectory.steps(), len(executed_cells(ctx))
    repeated = f" ({ran - steps} of {ran} repeated an earlier cell's code)" if ran > steps else ""
    if steps < n:
        return ItemResult(False, f"{steps} different cell(s) ran{repeated}, fewer than the {n} steps this task needs")
    return ItemResult(True, f"{steps} different cells ran (at least {n}){repeated}")


_GROUPBY_CALL = re.compile(r"\.groupby\(\s*(?:by\s*=\s*)?")
_GROUPBY_ARG = re.compile(r"""\[?((?:\s*(?:\w+\s*\[\s*)?['"][^'"\n]+['"]\s*\]?\s*,?)+)|\w+\.(\w+)\s*[,)\]]""")
_QUOTED = re.compile(r"""['"]([^'"\n]+)['"]""")
_SQL_GROUP_BY = re.compile(r"""\bGROUP\s+BY\s+(.+?)(?=\bHAVING\b|\bORDER\b|\bLIMIT\b|\bWINDOW\b|[)'";]|$)""",
                           re.IGNORECASE | re.MULTILINE)
_SQL_KEY = re.compile(r"""^(?:[\w`\[\]]+\.)?[`\[]?(\w+)[`\]]?$""")


def groupby_keys(code: str) -> list[str]:
    """The column names a cell groups by: pandas `.groupby('x')`, `.groupby(['x', 'y'])`, `.groupby(df['x'])`,
    `.groupby(df.x)` and SQL `GROUP BY t.x, y`, in order. Expressions (`pd.cut(...)`, `strftime(...)`,
    `GROUP BY 1`) are not column keys and are left out."""
    keys: list[str] = []
    for call in _GROUPBY_CALL.finditer(code):
        match = _GROUPBY_ARG.match(code, call.end())
        if match and match.group(1):
            keys += _QUOTED.findall(match.group(1))
        elif match and match.group(2):
            keys.append(match.group(2))
    for clause in _SQL_GROUP_BY.finditer(code):
        for part in clause.group(1).split(","):
            key = _SQL_KEY.match(part.strip())
            if key and not key.group(1).isdigit():
                keys.append(key.group(1))
    return keys


@rule("groupby_keys_categorical", fix="Group by a categorical column (a category, a label, a code with a few "
      "values), never by a continuous measure; to compare ranges of a measure, bin it first (e.g. pd.cut).")
def groupby_keys_categorical(ctx: RuleContext, *, continuous: Sequence[str] = ()) -> ItemResult:
    """No executed cell groups by one of the `continuous` columns (the DataCard's measures): one group per
    distinct value of a measure is a row per value, not an analysis."""
    measures = {name.lower() for name in continuous}
    for number, code, _ in executed_cells(ctx):
        bad = [key for key in groupby_keys(code) if key.lower() in measures]
        if bad:
            return ItemResult(False, f"cell {number} groups by {', '.join(dict.fromkeys(bad))}, a continuous "
                                     "measure, not a category")
    return ItemResult(True, "no cell groups by a continuous measure")


@rule("answer_uses_data", hard=True, fix="Read the data files with code and answer from what they contain.")
def answer_uses_data(ctx: RuleContext) -> ItemResult:
    """Some executed cell reads one of the task's files: an answer stated without reading the data is a task
    answerable without the data (dropped, not revised)."""
    from synth.verifier import reads_files

    names = [s.name for s in ctx.sources]
    for number, code, _ in executed_cells(ctx):
        if reads_files(code, names):
            return ItemResult(True, f"cell {number} reads the data")
    return ItemResult(False, f"answerable without the data: no cell reads {', '.join(names) or 'a data file'}")


__all__ = ["turns_between", "uses_library", "no_unresolved_errors", "code_runs", "no_model_written_execute",
           "execute_blocks_authentic", "replay_reproduces", "min_cells", "groupby_keys", "groupby_keys_categorical",
           "answer_uses_data", "normalize_output", "first_difference"]
