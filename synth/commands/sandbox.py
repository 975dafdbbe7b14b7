"""`synth sandbox exec`: run files as cells in one sandbox session over a copy of a workspace directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from synth.commands import print_error
from synth.sandbox import BACKENDS, Limits, get_sandbox


def _fail(message: str) -> int:
    print_error(message)
    return 2


def exec_cells(
    files: list[Path], workspace: Path, mode: str = "script", timeout: float = 60.0, backend: str = "local"
) -> int:
    """Print one JSON line per cell; 0 even when cells fail (the failure is in the JSON), 2 on bad arguments."""
    if mode not in ("script", "session"):
        return _fail(f"--mode must be 'script' or 'session', got {mode!r}")
    if backend not in BACKENDS:
        return _fail(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not timeout > 0:
        return _fail(f"--timeout must be positive, got {timeout}")
    workspace = Path(workspace)
    if not workspace.is_dir():
        return _fail(f"--workspace is not a directory: {workspace}")
    cells = []
    for path in files:
        path = Path(path)
        if not path.is_file():
            return _fail(f"cell file not found: {path}")
        try:
            cells.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read cell file {path}: {exc}")
    try:
        sandbox = get_sandbox(backend)
    except (ImportError, RuntimeError) as exc:
        return _fail(f"sandbox backend {backend!r} unavailable: {exc}")
    sources = sorted(workspace.iterdir())
    with sandbox.open(sources, mode=mode, limits=Limits(timeout_s=timeout)) as session:
        for code in cells:
            result = session.run(code, timeout=timeout)
            record = {k: v for k, v in result.to_dict().items()}
            print(json.dumps(record, ensure_ascii=False), flush=True)
    return 0


def command(
    files: List[Path] = typer.Argument(..., help="Python files, each run as one cell, in order."),
    workspace: Path = typer.Option(..., "--workspace", help="Directory copied into a fresh sandbox workspace."),
    mode: str = typer.Option("script", "--mode", help="script: each cell a fresh process; session: state persists."),
    timeout: float = typer.Option(60.0, "--timeout", help="Wall-clock seconds per cell."),
    backend: str = typer.Option("local", "--backend", help="local | docker"),
) -> None:
    """Run FILES as cells in one sandbox session; print one JSON line per cell."""
    raise typer.Exit(exec_cells(list(files), workspace=workspace, mode=mode, timeout=timeout, backend=backend))
