"""`synth train sft`: the SFT curriculum with TRL's SFTTrainer.

The base model is a spec (train.models): `embedded` / `embedded:0.5b` (the bundled GGUF, converted once into a
cached Hugging Face folder), a local folder, or a Hub id. Every stage: load the previous checkpoint (the base for
the first), add the ten tag tokens (their embeddings start at the mean of the pieces they were before), install
the deepanalyze chat template, tokenize the stage's rows with exact labels (train.masking: -100 on the prompt and
on every Execute span), drop rows longer than max_length (a cut trajectory never answers), train, save.
Intermediate stages go to OUT/stages/NAME; the last stage that trains is saved in OUT itself, so
`synth eval --model hf:OUT`, `synth serve --model hf:OUT` and `synth analyze --model hf:OUT` run the result.

On CPU (the `cpu` preset, train.sft_config): LoRA merged at the end of each stage, bfloat16 autocast where the CPU
has AVX512-BF16/AMX, gradient checkpointing when the memory estimate needs it, a memory check before loading
anything. OUT/train_log.jsonl is the loss curve; OUT/sft_result.json the summary (rows, steps, tokens/s, peak RSS,
whether Ctrl-C stopped it — the model saved then is usable).

Multi-GPU: `accelerate launch --config_file $(python -c "import train; print(train.accelerate_config('zero2'))")
-m synth train sft …` (configs: zero2, zero3, fsdp).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from train.errors import TrainError, require_train_extra
from train.sft_config import SFTCurriculumConfig, SFTStageConfig, load_sft_config

log = logging.getLogger(__name__)
_BOUNDARY_CHECKS = 32  # rows per stage whose piecewise tokenization is checked against whole-text tokenization
TRAIN_LOG = "train_log.jsonl"


@dataclass
class StageResult:
    name: str
    rows: int
    output_dir: str
    steps: int
    losses: list[float] = field(default_factory=list)
    train_tokens: int = 0
    seconds: float = 0.0
    dropped_long: int = 0  # rows longer than max_length, left out
    longest: int = 0  # tokens of the longest row of the stage
    peak_rss_bytes: int = 0
    interrupted: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SFTResult:
    output_dir: str
    stages: list[StageResult]
    base_model: str = ""
    interrupted: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Runtime:
    """What is decided once per run: device, LoRA, bf16, checkpointing, where progress goes."""

    device: str
    lora: bool
    bf16: bool
    gradient_checkpointing: bool
    out_root: Path
    progress: TextIO | None = None
    stop: Any = None


def run_sft(data: Sequence[str | Path], model: str | Path, out: str | Path,
            config: SFTCurriculumConfig | Path | str | dict | None = None, *, lora: bool | None = None,
            preset: str | None = None, max_length: int | None = None, epochs: float | None = None,
            max_steps: int | None = None, threads: int | None = None, check_memory: bool = True,
            progress: TextIO | None = None) -> SFTResult:
    """Run the curriculum of `config` on the rows of `data`, starting from the base model spec `model`.

    `lora`, `max_length`, `epochs` and `max_steps` override the config (every stage); `progress` is a stream for
    the progress line (None: silent). Ctrl-C stops after the current micro-batch and saves what was trained.
    """
    require_train_extra()
    from train.data import load_sft_rows
    from train.models import check_memory as memory_check
    from train.models import estimate_training_memory, available_memory, resolve_base_model
    from train.progress import GracefulStop

    cfg = config if isinstance(config, SFTCurriculumConfig) else load_sft_config(config, preset=preset)
    if lora is not None:
        cfg.lora = lora
    if threads is not None:
        cfg.num_threads = int(threads)
    for stage in cfg.stages:
        if max_length is not None:
            stage.max_length = int(max_length)
        if epochs is not None:
            stage.num_train_epochs = float(epochs)
        if max_steps is not None:
            stage.max_steps = int(max_steps)
    out = Path(out)
    rows = load_sft_rows(list(data))
    plan = [(stage, [r for r in rows if stage.kind == "all" or r["kind"] == stage.kind]) for stage in cfg.stages]
    for stage, stage_rows in plan:
        if not stage_rows:
            log.warning("sft stage %s: no %s rows in the data; skipped", stage.name, stage.kind)
    plan = [(stage, stage_rows) for stage, stage_rows in plan if stage_rows]
    if not plan:
        kinds = sorted({r["kind"] for r in rows}) or ["none"]
        raise TrainError(f"no stage has data: the rows are of kind(s) {', '.join(kinds)}, the stages want "
                         + ", ".join(s.kind for s in cfg.stages))

    ref = resolve_base_model(model)
    runtime = _decide_runtime(cfg, out, progress)
    # Memory follows the longest sequence a stage really trains on, not the cap.
    longest_row = _longest_row(ref.path, rows)
    longest_stage = max(min(stage.max_length, longest_row) for stage, _ in plan)
    if runtime.device == "cpu":
        if cfg.gradient_checkpointing is None:
            need = estimate_training_memory(ref.path, lora=runtime.lora, max_length=longest_stage,
                                            num_parameters=ref.num_parameters)
            have = available_memory()
            runtime.gradient_checkpointing = bool(have and need > 0.8 * have)
        if check_memory:
            memory_check(ref, lora=runtime.lora, max_length=longest_stage,
                         gradient_checkpointing=runtime.gradient_checkpointing)
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAIN_LOG).unlink(missing_ok=True)

    results: list[StageResult] = []
    current = str(ref.path)
    with GracefulStop(progress) as stop:
        runtime.stop = stop
        for index, (stage, stage_rows) in enumerate(plan):
            last = index == len(plan) - 1
            stage_dir = out if last else out / "stages" / stage.name
            result = train_stage(stage_rows, current, stage_dir, stage, cfg, runtime=runtime,
                                 position=(index + 1, len(plan)))
            results.append(result)
            current = str(stage_dir)
            if result.interrupted:
                if not last:  # the model the user gets is always in OUT
                    _copy_model(stage_dir, out)
                break
    interrupted = any(r.interrupted for r in results)
    import torch

    settings = {"device": runtime.device, "lora": runtime.lora, "bf16": runtime.bf16,
                "gradient_checkpointing": runtime.gradient_checkpointing, "threads": torch.get_num_threads()}
    summary = {"base_model": ref.spec, "base_folder": str(ref.path), "interrupted": interrupted,
               "settings": settings,
               "stages": [asdict(r) | {"tokens_per_second": r.tokens_per_second} for r in results],
               "config": asdict(cfg)}
    (out / "sft_result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return SFTResult(str(out), results, ref.spec, interrupted, settings)


def _longest_row(folder: Path, rows: list[dict[str, Any]]) -> int:
    """Tokens of the longest row with the base tokenizer (the tag tokens make rows only shorter)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    longest = 0
    for row in rows:
        text = "\n".join(m["content"] for m in row["messages"])
        longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 8 * len(row["messages"]))
    return longest


def _decide_runtime(cfg: SFTCurriculumConfig, out: Path, progress: TextIO | None) -> _Runtime:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    lora = cfg.lora if cfg.lora is not None else device == "cpu"
    if cfg.bf16 is not None:
        bf16 = cfg.bf16
    elif device == "cuda":
        bf16 = bool(torch.cuda.is_bf16_supported())
    else:
        bf16 = cpu_supports_bf16()
    return _Runtime(device=device, lora=lora, bf16=bf16,
                    gradient_checkpointing=bool(cfg.gradient_checkpointing), out_root=out, progress=progress)


def cpu_supports_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): autocast then speeds training up."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


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
                cfg: SFTCurriculumConfig, *, runtime: _Runtime | None = None,
                position: tuple[int, int] = (1, 1)) -> StageResult:
    """One SFT stage: rows -> labelled tokens -> TRL SFTTrainer -> a saved model folder in `out`."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from train.masking import tokenize_row
    from train.progress import TrainLog, peak_rss_bytes

    runtime = runtime or _decide_runtime(cfg, out, None)
    lm, tokenizer = load_model_and_tokenizer(model, chat_template=cfg.chat_template, bf16=False)
    tokenized = [tokenize_row(tokenizer, row, check_boundaries=i < _BOUNDARY_CHECKS) for i, row in enumerate(rows)]
    lengths = [len(t["input_ids"]) for t in tokenized]
    longest = max(lengths)
    dropped = 0
    if cfg.long_examples == "drop":
        kept = [t for t in tokenized if len(t["input_ids"]) <= stage.max_length]
        dropped = len(tokenized) - len(kept)
        if not kept:
            raise TrainError(f"sft stage {stage.name}: every row is longer than max_length {stage.max_length} "
                             f"(the shortest has {min(lengths)} tokens, the longest {longest}); raise max_length "
                             "(--max-length) or set long_examples: truncate")
        if dropped:
            log.warning("sft stage %s: %d of %d rows are longer than max_length %d (longest %d tokens) and are left "
                        "out; raise max_length to keep them", stage.name, dropped, len(tokenized), stage.max_length,
                        longest)
        tokenized = kept
    dataset = Dataset.from_list(tokenized)

    peft_config = _lora_config(cfg, lm, tokenizer) if runtime.lora else None
    losses: list[float] = []

    class _Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    out.mkdir(parents=True, exist_ok=True)
    train_log = TrainLog(stage=stage.name, stage_index=position[0], stages=position[1],
                         log_path=runtime.out_root / TRAIN_LOG if runtime.out_root else None,
                         out=runtime.progress, stop=runtime.stop)
    args = SFTConfig(
        output_dir=str(out), learning_rate=stage.learning_rate, num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps, max_length=stage.max_length, packing=stage.packing,
        per_device_train_batch_size=stage.per_device_train_batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps, lr_scheduler_type=stage.lr_scheduler_type,
        warmup_steps=stage.warmup_steps, weight_decay=stage.weight_decay, logging_steps=cfg.logging_steps,
        save_strategy="no", report_to=cfg.report_to, seed=cfg.seed, bf16=runtime.bf16,
        use_cpu=runtime.device == "cpu", disable_tqdm=True,
        **({"gradient_checkpointing": True,
            "gradient_checkpointing_kwargs": {"use_reentrant": False}} if runtime.gradient_checkpointing else {}),
    )
    trainer = SFTTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[_Losses(), train_log])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # TrainLog reports the logs (progress line, train_log.jsonl)
    started = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - started
    interrupted = train_log.stopped_early
    if runtime.lora:
        # Merged, so the next stage, serve and eval load a plain model folder.
        merged = trainer.model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # gathers ZeRO-3 / FSDP shards
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
    steps = int(output.global_step)
    logged_tokens = max((int(e.get("tokens") or 0) for e in train_log.entries), default=0)
    tokens = logged_tokens or int(trainer.state.num_input_tokens_seen or 0) or _count_tokens(tokenized, stage, steps)
    for loss in losses:
        if not math.isfinite(loss):
            log.warning("sft stage %s: non-finite loss %s", stage.name, loss)
    del trainer, lm
    return StageResult(stage.name, len(rows), str(out), steps, losses, tokens, seconds, dropped, longest,
                       peak_rss_bytes(), interrupted)


def _copy_model(src: Path, dst: Path) -> None:
    import shutil

    for item in src.iterdir():
        if item.is_file():
            shutil.copy2(item, dst / item.name)


def _count_tokens(tokenized: list[dict[str, list[int]]], stage: SFTStageConfig, steps: int) -> int:
    lengths = [min(len(t["input_ids"]), stage.max_length) for t in tokenized]
    per_step = stage.per_device_train_batch_size * stage.gradient_accumulation_steps
    total = 0
    for step in range(steps * per_step):
        total += lengths[step % len(lengths)]
    return total


def _lora_config(cfg: SFTCurriculumConfig, model: Any, tokenizer: Any):
    try:
        from peft import LoraConfig
    except ImportError:
        raise TrainError("LoRA needs peft: pip install 'ds-synth[train]'") from None
    from synth.protocol import SPECIAL_TOKENS

    embed_name = _module_name(model, model.get_input_embeddings())
    head = model.get_output_embeddings()
    head_name = _module_name(model, head) if head is not None else None
    tied = head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if tied or head_name is None:
        # A tied head: both tables train fully (peft's per-token training clashes with TRL's fused head on ties).
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM",
                          modules_to_save=[n for n in (embed_name, head_name) if n])
    # Untied: only the tag tokens' input rows train (cheap), the output head trains fully so the model learns to
    # write the tags; everything else through the adapters.
    tag_ids = sorted({int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS})
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM",
                      trainable_token_indices={embed_name: tag_ids}, modules_to_save=[head_name])


def _module_name(model: Any, module: Any) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    return None


__all__ = ["run_sft", "train_stage", "load_model_and_tokenizer", "cpu_supports_bf16", "SFTResult", "StageResult",
           "TRAIN_LOG"]
