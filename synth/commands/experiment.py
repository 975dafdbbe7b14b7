"""`synth experiment`: generate records, SFT the base on them, evaluate base and trained side by side (train/experiment.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from synth.commands import print_error


def _bench(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--bench {value!r}: expected NAME=PATH, e.g. infiagent=../shared/data/bench_samples/"
                         "infiagent_sample")
    return name.strip(), Path(path.strip())


def experiment(options: dict) -> int:
    from rich.console import Console
    from rich.table import Table

    from synth.errors import SynthError
    from train.experiment import COLUMNS, Experiment, ExperimentConfig, comparison_rows

    try:
        options["benches"] = [_bench(b) for b in options.pop("bench") or []]
        config = ExperimentConfig(**options)
        report = Experiment(config, echo=sys.stderr).run()
    except (SynthError, ValueError) as exc:
        print_error(exc)
        return 2
    except KeyboardInterrupt:
        print_error("interrupted; run the same command again to continue where it stopped")
        return 130
    table = Table(title=f"{report['base']}: base vs trained ({report['backend']}"
                        + (f", {report['gguf_type']} both" if report.get("gguf_type") else "") + ")")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "bench" else "right")
    for row in comparison_rows(report):
        table.add_row(*row)
    console = Console(soft_wrap=True)
    console.print(table)
    print(f"training: {report['training']['rows']} records; total {report['seconds'] / 60:.1f} min; "
          f"report: {config.out / 'report.md'}")
    return 0


def command(
    out: Path = typer.Option(..., "--out", help="Experiment folder; rerun the same command to continue."),
    base: str = typer.Option("embedded:0.5b", "--base", help="Base model spec to fine-tune (train.models)."),
    sources: Optional[List[Path]] = typer.Option(None, "--sources", help="Sources folder for `synth generate` "
                                                 "(repeatable; one run each)."),
    records: int = typer.Option(20, "--records", help="Episodes to generate per sources folder."),
    reasoning_input: Optional[Path] = typer.Option(None, "--reasoning-input", help="Instruction data for "
                                                   "`synth refine` (reasoning records)."),
    reasoning_format: str = typer.Option("auto", "--reasoning-format", help="Its format (wikitq, tablebench, …)."),
    reasoning_limit: int = typer.Option(20, "--reasoning-limit", help="Items to refine."),
    runs: Optional[List[Path]] = typer.Option(None, "--runs", help="Existing runs or exports to train on "
                                              "(repeatable), instead of or besides generating."),
    teacher: str = typer.Option("embedded", "--teacher", help="Model spec that generates the records."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Base URL for an openai:… teacher."),
    train_config: Optional[Path] = typer.Option(None, "--train-config", help="SFT curriculum YAML."),
    bench: List[str] = typer.Option(..., "--bench", help="NAME=PATH of a benchmark split (repeatable), e.g. "
                                    "tablebench=../shared/data/bench_samples/tablebench_sample.jsonl"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Items per benchmark (default: all)."),
    max_rounds: int = typer.Option(10, "--max-rounds", help="Agent rounds per item, both models."),
    max_tokens_per_turn: int = typer.Option(1024, "--max-tokens-per-turn", help="Tokens per round, both models."),
    backend: str = typer.Option("gguf", "--backend", help="gguf: both exported with --gguf-type and run on "
                                "llama.cpp; hf: both on transformers."),
    gguf_type: str = typer.Option("q8_0", "--gguf-type", help="f32 | f16 | bf16 | q8_0, for both models."),
    model_options: str = typer.Option("", "--model-options", help="Spec options for both models, e.g. n_threads=1 "
                                      "(gguf) or dtype=bfloat16 (hf)."),
    train_arg: Optional[List[str]] = typer.Option(None, "--train-arg", help="Extra `synth train sft` option "
                                                  "(repeatable), e.g. --train-arg=--epochs=3."),
    generate_arg: Optional[List[str]] = typer.Option(None, "--generate-arg", help="Extra `synth generate` option "
                                                     "(repeatable), e.g. --generate-arg=--categories=data_analysis."),
    eval_arg: Optional[List[str]] = typer.Option(None, "--eval-arg", help="Extra `synth eval` option (repeatable)."),
) -> None:
    """Does ds-synth data change a model? Generate → SFT → evaluate base and trained on the same benchmarks,
    backend, agent loop and scorer; print both scores, protocol compliance and mean rounds side by side."""
    raise typer.Exit(experiment(dict(
        out=out, base=base, sources=list(sources or []), records=records, reasoning_input=reasoning_input,
        reasoning_format=reasoning_format, reasoning_limit=reasoning_limit, runs=list(runs or []), teacher=teacher,
        base_url=base_url, train_config=train_config, bench=bench, limit=limit, max_rounds=max_rounds,
        max_tokens_per_turn=max_tokens_per_turn,
        backend=backend, gguf_type=gguf_type, model_options=model_options, train_args=list(train_arg or []),
        generate_args=list(generate_arg or []), eval_args=list(eval_arg or []))))
