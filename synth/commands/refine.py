"""`synth refine`: reasoning trajectories from instruction data (synth/refine.py does the work)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

from synth.commands import print_error
from synth.commands.options import config_command
from synth.config import RefineConfig
from synth.errors import SynthError


def refine(options: dict[str, Any], *, out: TextIO | None = None) -> int:
    from synth.refine import RefineError
    from synth.refine import refine as run_refine

    out = out or sys.stderr
    try:
        if options.get("resume") and options.get("out") is not None and "input" not in options:
            options = {**options, "input": "."}  # replaced by the stored config of the run
        if "input" not in options:
            raise RefineError("--input PATH is required (or --out RUN_DIR --resume)")
        config = RefineConfig.validate_dict(options, "options")
        summary = asyncio.run(run_refine(config, out=out))
    except SynthError as exc:
        print_error(exc, out)
        return 2
    except KeyboardInterrupt:
        return 130
    s = summary.stats
    failed = f"; {summary.errors} failed (rerun with --resume)" if summary.errors else ""
    print(f"{summary.records} records ({s['distill']['verified']} distilled, {s['refine']['kept']} refined) from "
          f"{summary.planned} items: {s['items']['accepted']} accepted, {s['items']['rejected']} rejected; "
          f"distill accuracy {s['distill']['accuracy']}, refine keep-rate {s['refine']['keep_rate']}{failed}",
          file=out)
    print(f"records: {summary.run_dir / 'records.jsonl'}  stats: {summary.run_dir / 'stats.json'}", file=out)
    return 130 if summary.interrupted else (1 if summary.errors else 0)


command = config_command(
    RefineConfig, refine,
    doc="Synthesize reasoning trajectories: distill → verify → reformulate → keyword-guided refine → verify.",
)
