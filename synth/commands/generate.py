"""`synth generate`: interaction trajectories from data sources (synth/generate.py does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from synth.commands import print_error
from synth.commands.options import config_command, option
from synth.config import GenerateConfig
from synth.errors import SynthError


def generate(options: dict[str, Any], *, config: Path | None = None, out: TextIO | None = None) -> int:
    """Build the config (a file, a resumed run's stored config, or the options alone; typed options win), run it,
    print where the records are."""
    from synth.generate import RunError, run_generate
    from synth.rundir import ensure_not_in_use

    out = out or sys.stderr
    try:
        if config is not None:
            cfg = GenerateConfig.load(config, **options)
        elif options.get("resume") and "sources" not in options and options.get("out") is not None:
            stored = Path(options["out"]) / "config.yaml"
            ensure_not_in_use(Path(options["out"]))
            if not stored.is_file():
                raise RunError(f"--resume: {stored} not found; nothing to resume there")
            cfg = GenerateConfig.load(stored, **options)
        else:
            if "sources" not in options:
                raise RunError("--sources DIR is required (or --config FILE, or --out RUN_DIR --resume)")
            cfg = GenerateConfig.validate_dict(options, "options")
        summary = run_generate(cfg, out=out)
    except SynthError as exc:
        print_error(exc, out)
        return 2
    except KeyboardInterrupt:
        return 130
    failed = f", {summary.errors} failed (rerun with --resume)" if summary.errors else ""
    print(f"{summary.accepted} accepted, {summary.rejected} rejected of {summary.planned} planned{failed}", file=out)
    print(f"records: {summary.records_path}", file=out)
    print(f"rejected: {summary.run_dir / 'rejected.jsonl'}  stats: {summary.run_dir / 'stats.json'}", file=out)
    inspector = cfg.model_for("inspector")
    if inspector.strip().lower().startswith("embedded"):
        judged = summary.stats.get("judged_verdicts") or {}
        print(f"note: the inspector is the embedded model ({inspector}): its judged items are weak evidence "
              f"({judged.get('empty', 0)} of {judged.get('total', 0)} judged verdicts were empty); the rule items "
              "decide — check what they catch with `synth inspect --calibrate RUN`", file=out)
    return 130 if summary.interrupted else (1 if summary.errors else 0)


command = config_command(
    GenerateConfig, generate,
    doc="Synthesize interaction trajectories from the sources (or your --tasks): propose → verify → solve → inspect → "
        "accept/revise/reject.",
    extra=[option("config", Optional[Path], None, "--config",
                  help="YAML config (e.g. a run's config.yaml); options given here win.")],
)
