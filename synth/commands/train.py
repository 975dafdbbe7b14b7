"""`synth train sft|grpo|export-gguf`: the SFT curriculum, GRPO in the sandbox, GGUF export (the work is in train/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from synth.commands import print_error

app = typer.Typer(help="Train on synthesized data: SFT curriculum, then GRPO in the sandbox.", no_args_is_help=True)

_MODEL_HELP = ("Base model: embedded (the bundled 1.5B GGUF, converted once), embedded:0.5b, a local Hugging Face "
               "folder (hf:DIR also works) or a Hub id.")


def sft(data: Sequence[str], model: str, out: Path, config: Path | None = None, lora: bool | None = None, *,
        preset: str | None = None, max_length: int | None = None, epochs: float | None = None,
        max_steps: int | None = None, threads: int | None = None, check_memory: bool = True) -> int:
    """Run the curriculum; a progress line on stderr; one summary line per stage. 130 when Ctrl-C stopped it."""
    from synth.errors import SynthError
    from train.sft_trainer import run_sft

    try:
        result = run_sft(data, model, out, config, lora=lora, preset=preset, max_length=max_length, epochs=epochs,
                         max_steps=max_steps, threads=threads, check_memory=check_memory, progress=sys.stderr)
    except (SynthError, ValueError, OSError) as exc:
        print_error(exc)
        return 2 if isinstance(exc, SynthError) else 1
    except KeyboardInterrupt:
        print_error("aborted (second Ctrl-C): nothing saved for the stage that was running")
        return 130
    for stage in result.stages:
        last = f"{stage.losses[-1]:.4f}" if stage.losses else "n/a"
        first = f"{stage.losses[0]:.4f} → " if len(stage.losses) > 1 else ""
        dropped = f", {stage.dropped_long} longer than max_length left out" if stage.dropped_long else ""
        print(f"stage {stage.name}: {stage.rows} rows{dropped}, {stage.steps} steps, loss {first}{last}, "
              f"{stage.tokens_per_second:.0f} tokens/s, {stage.seconds:.0f} s, peak RSS "
              f"{stage.peak_rss_bytes / 2**30:.1f} GB -> {stage.output_dir}")
    settings = result.settings
    print(f"model -> {result.output_dir}  (base {result.base_model}; {'LoRA merged' if settings.get('lora') else 'full'}"
          f"{', bf16 autocast' if settings.get('bf16') else ''} on {settings.get('device')})")
    if result.interrupted:
        print(f"interrupted: the model saved in {result.output_dir} is usable (trained up to the stop)",
              file=sys.stderr)
        return 130
    return 0


def grpo(data: str, model: str, out: Path, config: Path | None = None) -> int:
    """Run GRPO; print a summary line."""
    from synth.errors import SynthError
    from train.grpo_trainer import run_grpo

    try:
        result = run_grpo(data, model, out, config)
    except (SynthError, ValueError, OSError) as exc:
        print_error(exc)
        return 2 if isinstance(exc, SynthError) else 1
    mean = sum(result.rewards) / len(result.rewards) if result.rewards else float("nan")
    print(f"grpo: {result.steps} steps, {result.episodes} episodes, mean reward {mean:.3f}, "
          f"{result.tokens_per_second:.0f} tokens/s -> {result.output_dir}")
    return 0


def export(checkpoint: Path, out: Path | None = None, qtype: str = "q8_0") -> int:
    """Write CKPT as a GGUF file; print the spec that runs it on the embedded backend."""
    from synth.errors import SynthError
    from synth.llm.transformers_backend import tokenizer_family
    from train.gguf_export import export_gguf, gguf_spec

    try:
        path = export_gguf(checkpoint, out, qtype=qtype)
    except (SynthError, ValueError, OSError) as exc:
        print_error(exc)
        return 2 if isinstance(exc, SynthError) else 1
    family = tokenizer_family(Path(checkpoint))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB); run it with --model "
          f"'{gguf_spec(path, family if family == 'deepanalyze' else None)}'")
    return 0


@app.command("sft")
def sft_command(
    data: List[str] = typer.Option(..., "--data", help="Run dir, export file, `datasets` dir or Hub id (repeatable)."),
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder; the final model is saved here."),
    config: Optional[Path] = typer.Option(None, "--config", help="Curriculum YAML (train.sft_config fields)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cpu (LoRA, 4K context; the default without a "
                                         "GPU) or upstream (the DeepAnalyze recipe; the default on a GPU)."),
    lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapters merged after each stage, or full "
                                        "fine-tuning (default: LoRA without a GPU)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per example, every stage; longer "
                                             "rows are left out."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs of every stage."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps per stage (overrides epochs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: one per core; "
                                          "1 is faster on a machine busy with other work)."),
    skip_memory_check: bool = typer.Option(False, "--skip-memory-check", help="Train even when the RAM estimate "
                                           "says it does not fit."),
) -> None:
    """SFT curriculum: stage 1 on reasoning records, stage 2 on interaction records (Execute spans masked).

    Ctrl-C stops after the current micro-batch and saves a usable model in OUT."""
    raise typer.Exit(sft(data, model, out, config, lora, preset=preset, max_length=max_length, epochs=epochs,
                         max_steps=max_steps, threads=threads, check_memory=not skip_memory_check))


@app.command("grpo")
def grpo_command(
    data: str = typer.Option(..., "--data", help="rl export (.parquet), published dataset dir or Hub id."),
    model: str = typer.Option(..., "--model", help="Starting model (usually the SFT output folder); " + _MODEL_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder for the trained model."),
    config: Optional[Path] = typer.Option(None, "--config", help="GRPO YAML (train.grpo_config fields)."),
) -> None:
    """GRPO with multi-turn rollouts through the agent loop in the sandbox; rewards from train.rewards."""
    raise typer.Exit(grpo(data, model, out, config))


@app.command("export-gguf")
def export_command(
    checkpoint: Path = typer.Argument(..., help="A trained checkpoint (Hugging Face folder, qwen2 architecture)."),
    out: Optional[Path] = typer.Option(None, "--out", help="GGUF file to write (default CKPT/model-TYPE.gguf)."),
    qtype: str = typer.Option("q8_0", "--type", help="f32 | f16 | bf16 | q8_0 (8-bit, near-lossless)."),
) -> None:
    """Write CKPT as a GGUF file that the embedded llama.cpp backend runs (`--model embedded:FILE`)."""
    raise typer.Exit(export(checkpoint, out, qtype))
