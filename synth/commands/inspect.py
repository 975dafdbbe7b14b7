"""`synth inspect DATA`: audit a trajectory dataset (synth/dataset/inspect.py does the work);
`synth inspect --calibrate RUN`: measure what the checklist and inspector catch (synth/dataset/calibrate.py)."""

from __future__ import annotations

import inspect as _inspect
import sys
from pathlib import Path
from typing import Any, TextIO

import typer

from synth.commands import print_error
from synth.commands.options import config_command
from synth.dataset.inspect import InspectConfig
from synth.errors import SynthError


class _Progress:
    """Turns the engine's events into the run progress line (created once the row count is known)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.progress = None

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        from synth.progress import RunProgress

        if kind == "start":
            self.progress = RunProgress(payload["total"], self.out, live=None, unit="trajectory")
            self.progress.start()
        elif self.progress is not None:
            self.progress.event(kind, payload)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def inspect(options: dict[str, Any], *, data: Path, out: TextIO | None = None) -> int:
    """Validate the options, run the audit (or the calibration), print the summary and where the files are."""
    from synth.dataset.inspect_report import summary_lines

    out = out or sys.stderr
    progress = _Progress(out)
    try:
        config = InspectConfig.validate_dict({**options, "data": data}, "options")
        if config.calibrate:
            from synth.dataset.calibrate import calibration_lines, run_calibration

            result = run_calibration(config, on_event=progress)
            progress.stop()
            for line in calibration_lines(result.summary):
                print(line, file=out)
            print(f"calibration: {result.out / 'calibration.json'}  verdicts: {result.out / 'verdicts.jsonl'}",
                  file=out)
            return 0
        from synth.dataset.inspect import run_inspect

        summary = run_inspect(config, on_event=progress)
        progress.stop()
    except SynthError as exc:
        progress.stop()
        print_error(exc, out)
        return 2
    except KeyboardInterrupt:
        return 130
    for line in summary_lines(summary.stats):
        print(line, file=out)
    print(f"verdicts: {summary.verdicts_path}  stats: {summary.out / 'stats.json'}  report: {summary.report_path}",
          file=out)
    return 0


command = config_command(
    InspectConfig, inspect,
    doc="Audit trajectories you did not make: replay their code, classify every <Execute> block, check the "
        "checklist. With --calibrate RUN: plant known defects and report what is caught.",
    extra=[_inspect.Parameter("data", _inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                              default=typer.Argument(..., metavar="DATA", help="A run directory, records/messages JSONL, ms-swift "
                                                               "JSON, or a Parquet file (rl or sft export)."))],
)
