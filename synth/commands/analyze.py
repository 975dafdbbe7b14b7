"""`synth analyze "question" --data FILE…`: one analysis by the five-action agent in a fresh sandbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, List, Optional

import typer

from synth.agent import AgentConfig, run_agent
from synth.trajectory import Trajectory

_STYLES = {"Analyze": "cyan", "Understand": "magenta", "Code": "yellow", "Execute": "bright_black", "Answer": "green",
           "note": "red"}


def analyze(
    question: str,
    data: list[Path],
    *,
    model_spec: str | None = None,
    mode: str = "script",
    max_rounds: int = 30,
    cell_timeout_s: float = 60.0,
    out: Path | None = None,
    as_json: bool = False,
    backend: str = "local",
) -> int:
    """Run one analysis in a fresh sandbox workspace holding copies of `data`; print it live (or as JSON) and
    write trajectory.json, report.md and the files the code created under `out`. Exit code 0 when answered."""
    import json
    import shutil
    import sys

    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, soft_wrap=True)  # an error stays on one line
    for path in data:
        if not path.exists():
            err.print(f"[red]error:[/red] --data {escape(str(path))}: no such file or directory")
            return 2
    if mode not in ("script", "session"):
        err.print(f"[red]error:[/red] --mode {escape(mode)}: expected script or session")
        return 2
    if out is not None and out.exists() and not out.is_dir():
        err.print(f"[red]error:[/red] --out {escape(str(out))}: exists and is not a directory")
        return 2

    from synth.llm import load_model
    from synth.sandbox import get_sandbox
    from synth.sandbox.base import Limits

    try:
        model = load_model(model_spec)
        sandbox = get_sandbox(backend)
    except Exception as exc:  # bad spec, missing extra, unknown backend: one line, no traceback
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2

    console = Console(stderr=as_json, highlight=False)

    def show(kind: str, payload: dict[str, Any]) -> None:
        if as_json:
            return
        if kind == "stop":
            console.rule(f"stop: {payload['stop_reason']}" + (f" — {payload['error']}" if payload.get("error") else ""))
            return
        body = payload.get("note") if kind == "note" else payload.get("content", "")
        console.print(f"[bold {_STYLES.get(kind, 'white')}]<{kind}>[/]")
        console.print(escape(str(body).strip("\n")), style=_STYLES.get(kind) if kind != "Code" else None)

    cfg = AgentConfig(max_rounds=max_rounds, cell_timeout_s=cell_timeout_s)
    with sandbox.open(list(data), mode=mode, limits=Limits(timeout_s=cell_timeout_s)) as session:  # type: ignore[arg-type]
        before = session.snapshot()
        traj = asyncio.run(_run_and_close(model, session, question, cfg, show))
        changed = session.snapshot().diff(before)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "trajectory.json").write_text(json.dumps(traj.to_dict(), indent=2, ensure_ascii=False) + "\n")
            (out / "report.md").write_text(_report(question, traj), encoding="utf-8")
            for rel in changed.added + changed.modified:
                target = out / "files" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(session.workspace) / rel, target)

    if as_json:
        payload = {"answer": traj.answer, "turns": len(traj.turns), "stop_reason": traj.stop_reason,
                   "trajectory": traj.to_dict(), "usage": traj.usage.to_dict()}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    elif out is not None:
        console.print(f"wrote {out / 'report.md'}, {out / 'trajectory.json'}"
                      + (f" and {len(changed.added + changed.modified)} file(s) under {out / 'files'}"
                         if changed.added or changed.modified else ""))
    return 0 if traj.answer is not None else 1


async def _run_and_close(model, session, question, cfg, show) -> Trajectory:
    try:
        return await run_agent(model, session, question, config=cfg, on_event=show)
    finally:
        await model.aclose()


def _report(question: str, traj: Trajectory) -> str:
    answer = traj.answer if traj.answer is not None else f"_No answer: the analysis stopped ({traj.stop_reason})._"
    return f"# {question.strip()}\n\n{answer.strip()}\n"


def command(
    question: str = typer.Argument(..., help="What to find out, in plain words."),
    data: List[Path] = typer.Option([], "--data", help="Data file or directory (repeatable); copied into the workspace."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: $DS_SYNTH_MODEL, else embedded)."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    max_rounds: int = typer.Option(30, "--max-rounds", min=1, help="Model turns at most."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per code cell."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write report.md, trajectory.json and created files here."),
    as_json: bool = typer.Option(False, "--json", help="Print {answer, turns, stop_reason, trajectory, usage}."),
    backend: str = typer.Option("local", "--backend", help="Sandbox backend: local | docker"),
) -> None:
    """Answer QUESTION about the --data files with the five-action agent in a fresh sandbox."""
    raise typer.Exit(analyze(question, list(data), model_spec=model, mode=mode, max_rounds=max_rounds,
                             cell_timeout_s=timeout, out=out, as_json=as_json, backend=backend))
