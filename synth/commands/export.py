"""`synth export RUN… --format sft|swift|rl|raw --out PATH`: records as training files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from synth.commands import print_error


def export(paths: list[Path], fmt: str, out: Path, *, kind: str | None = None,
           sources_root: Path | None = None) -> int:
    from synth.dataset.export import WORKSPACES_DIR, ExportError
    from synth.dataset.export import export as run_export

    try:
        result = run_export(paths, fmt, out, kind=kind, sources_root=sources_root)
    except ExportError as exc:
        print_error(exc)
        return 1
    extra = f", {result.workspaces} workspace archive(s) in {result.out.parent / WORKSPACES_DIR}" if fmt == "rl" else ""
    print(f"{result.rows} {fmt} rows -> {result.out}{extra}")
    return 0


def command(
    runs: List[Path] = typer.Argument(..., help="Run directories (or records .jsonl files, e.g. from `synth filter`)."),
    format: str = typer.Option(..., "--format", help="sft | swift | rl | raw"),
    out: Path = typer.Option(..., "--out", help="Output file: .parquet, .jsonl or .json (rl: .parquet)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only interaction or reasoning records."),
    sources: Optional[Path] = typer.Option(None, "--sources", help="Where the run's sources are now (rl; default: the run's config)."),
) -> None:
    """Export run records for SFT (TRL / ms-swift messages), RL (prompts + workspace archives) or as raw records."""
    raise typer.Exit(export(list(runs), format, out, kind=kind, sources_root=sources))
