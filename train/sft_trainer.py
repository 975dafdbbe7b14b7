"""`synth train sft`: the SFT curriculum with TRL's SFTTrainer.

Every stage: load the previous checkpoint (the base model for the first), add the ten tag tokens and resize the
embeddings, install the deepanalyze chat template, tokenize the stage's rows with exact labels (train.masking:
-100 on the prompt and on every Execute span), train, save. Intermediate stages go to OUT/stages/NAME; the last
stage that trains is saved in OUT itself, so `synth analyze --model hf:OUT` runs the result.

Multi-GPU: `accelerate launch --config_file $(python -c "import train; print(train.accelerate_config('zero2'))")
-m synth train sft …` (configs: zero2, zero3, fsdp).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from train.sft_config import SFTCurriculumConfig, SFTStageConfig, load_sft_config

log = logging.getLogger(__name__)
_BOUNDARY_CHECKS = 32  # rows per stage whose piecewise tokenization is checked against whole-text tokenization


@dataclass
class StageResult:
    name: str
    rows: int
    output_dir: str
    steps: int
    losses: list[float] = field(default_factory=list)
    train_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SFTResult:
    output_dir: str
    stages: list[StageResult]


def run_sft(data: Sequence[str | Path], model: str | Path, out: str | Path,
            config: SFTCurriculumConfig | Path | str | dict | None = None, *, lora: bool | None = None) -> SFTResult:
    """Run the curriculum of `config` on the rows of `data`, starting from `model` (a local folder or Hub id)."""
    from train.data import load_sft_rows

    cfg = config if isinstance(config, SFTCurriculumConfig) else load_sft_config(config)
    if lora is not None:
        cfg.lora = lora
    out = Path(out)
    rows = load_sft_rows(list(data))
    plan = [(stage, [r for r in rows if stage.kind == "all" or r["kind"] == stage.kind]) for stage in cfg.stages]
    for stage, stage_rows in plan:
        if not stage_rows:
            log.warning("sft stage %s: no %s rows in the data; skipped", stage.name, stage.kind)
    plan = [(stage, stage_rows) for stage, stage_rows in plan if stage_rows]
    if not plan:
        kinds = sorted({r["kind"] for r in rows}) or ["none"]
        raise ValueError(f"no stage has data: the rows are of kind(s) {', '.join(kinds)}, the stages want "
                         + ", ".join(s.kind for s in cfg.stages))
    results: list[StageResult] = []
    current = str(model)
    for index, (stage, stage_rows) in enumerate(plan):
        last = index == len(plan) - 1
        stage_dir = out if last else out / "stages" / stage.name
        results.append(train_stage(stage_rows, current, stage_dir, stage, cfg))
        current = str(stage_dir)
    summary = {"stages": [asdict(r) | {"tokens_per_second": r.tokens_per_second} for r in results],
               "config": asdict(cfg)}
    (out / "sft_result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return SFTResult(str(out), results)


def load_model_and_tokenizer(model: str | Path, *, chat_template: str = "deepanalyze", bf16: bool = False):
    """Model + tokenizer from a folder or Hub id, with the tag tokens and (by default) the deepanalyze template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.tokens import prepare_tokenizer_and_model

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    dtype = torch.bfloat16 if bf16 else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype)
    prepare_tokenizer_and_model(tokenizer, lm, chat_template=chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def train_stage(rows: list[dict[str, Any]], model: str | Path, out: Path, stage: SFTStageConfig,
                cfg: SFTCurriculumConfig) -> StageResult:
    """One SFT stage: rows -> labelled tokens -> TRL SFTTrainer -> a saved model folder in `out`."""
    import time

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from train.masking import tokenize_row

    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    lm, tokenizer = load_model_and_tokenizer(model, chat_template=cfg.chat_template, bf16=False)
    tokenized = [tokenize_row(tokenizer, row, check_boundaries=i < _BOUNDARY_CHECKS) for i, row in enumerate(rows)]
    dataset = Dataset.from_list(tokenized)

    peft_config = None
    if cfg.lora:
        peft_config = _lora_config(cfg, tokenizer)

    losses: list[float] = []

    class _Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = SFTConfig(
        output_dir=str(out), learning_rate=stage.learning_rate, num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps, max_length=stage.max_length, packing=stage.packing,
        per_device_train_batch_size=stage.per_device_train_batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps, lr_scheduler_type=stage.lr_scheduler_type,
        warmup_steps=stage.warmup_steps, weight_decay=stage.weight_decay, logging_steps=cfg.logging_steps,
        save_strategy="no", report_to=cfg.report_to, seed=cfg.seed, bf16=bf16,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}),
    )
    trainer = SFTTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[_Losses()])
    started = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    if cfg.lora:
        # Merged, so the next stage, serve and eval load a plain model folder.
        merged = trainer.model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # gathers ZeRO-3 / FSDP shards
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
    steps = int(output.global_step)
    tokens = int(trainer.state.num_input_tokens_seen or 0) or _count_tokens(tokenized, stage, steps)
    for loss in losses:
        if not math.isfinite(loss):
            log.warning("sft stage %s: non-finite loss %s", stage.name, loss)
    return StageResult(stage.name, len(rows), str(out), steps, losses, tokens, seconds)


def _count_tokens(tokenized: list[dict[str, list[int]]], stage: SFTStageConfig, steps: int) -> int:
    lengths = [min(len(t["input_ids"]), stage.max_length) for t in tokenized]
    per_step = stage.per_device_train_batch_size * stage.gradient_accumulation_steps
    total = 0
    for step in range(steps * per_step):
        total += lengths[step % len(lengths)]
    return total


def _lora_config(cfg: SFTCurriculumConfig, tokenizer: Any):
    try:
        from peft import LoraConfig
    except ImportError:
        raise RuntimeError("--lora needs peft: pip install 'ds-synth[train]'") from None
    # The tag embeddings are new: embeddings and output head train fully (peft's per-token training clashes with
    # TRL's entropy logging on tied heads), everything else through the adapters.
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM",
                      modules_to_save=["embed_tokens", "lm_head"])


def sft_command(data: Sequence[str], model: str, out: Path, config: Path | None = None, lora: bool = False) -> int:
    """`synth train sft`: run the curriculum; print one line per stage; errors are one line on stderr."""
    import sys

    from train._config_io import ConfigError
    from train.data import DataError
    from train.masking import MaskingError

    try:
        result = run_sft(data, model, out, config, lora=lora or None)
    except (ConfigError, DataError, MaskingError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for stage in result.stages:
        last = f"{stage.losses[-1]:.4f}" if stage.losses else "n/a"
        print(f"stage {stage.name}: {stage.rows} rows, {stage.steps} steps, last loss {last}, "
              f"{stage.tokens_per_second:.0f} tokens/s -> {stage.output_dir}")
    print(f"model -> {result.output_dir}")
    return 0


__all__ = ["run_sft", "train_stage", "load_model_and_tokenizer", "sft_command", "SFTResult", "StageResult"]
