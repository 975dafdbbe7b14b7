"""Configuration of `synth train sft`: a curriculum of SFT stages in one file (TRL-style dataclasses).

    stages:
      - {name: reasoning, kind: reasoning, learning_rate: 5e-5, num_train_epochs: 3, max_length: 8192}
      - {name: interaction, kind: interaction, learning_rate: 5e-6, num_train_epochs: 3, max_length: 32768}
    lora: false

Each stage trains on the rows of its `kind` and starts from the previous stage's checkpoint. Two presets:

- `upstream` (the default on a GPU): the DeepAnalyze recipe (PROTOCOL-FACTS: stage 1 lr 5e-5, 3 epochs, 8K; stage 2
  lr 5e-6, 3 epochs, 32K), full fine-tuning; upstream's effective batch of 256 is
  `per_device_train_batch_size × gradient_accumulation_steps × GPUs`.
- `cpu` (the default without a GPU): LoRA (r 16 on every linear layer, the tag tokens' embeddings and the output
  head trained fully, merged at the end), LoRA learning rates (2e-4 then 1e-4), 2 epochs, max_length 4096 (a real
  interaction record of the embedded models is 1–3K tokens), 4 micro-batches per step, the loss logged every step.

A config file starts from the preset (`preset:` in the file, else the machine's default) and overrides what it
names. `None` fields are decided when training starts: `lora` (on without a GPU), `bf16` (autocast where the
GPU or the CPU — AVX512-BF16 or AMX — supports bfloat16), `gradient_checkpointing` (on when the memory estimate
without it does not fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train._config_io import ConfigError, from_dict, read_yaml

KINDS = ("reasoning", "interaction", "all")
PRESETS = ("upstream", "cpu")
LONG_EXAMPLES = ("drop", "truncate")


@dataclass
class SFTStageConfig:
    name: str = field(metadata={"help": "Stage name; intermediate checkpoints go to OUT/stages/NAME."})
    kind: str = field(default="all", metadata={"help": "Rows to train on: reasoning, interaction or all."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the stage's rows."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    max_length: int = field(default=8192, metadata={
        "help": "Tokens per example; longer ones are dropped (or truncated, see long_examples)."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    packing: bool = field(default=False, metadata={"help": "Pack examples into max_length sequences (BFD)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: float = field(default=0.0, metadata={"help": "Warmup steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.learning_rate <= 0 or self.max_length < 16:
            raise ValueError(f"stage {self.name!r}: learning_rate must be > 0 and max_length >= 16")


def _default_stages() -> list[SFTStageConfig]:
    return [
        SFTStageConfig(name="reasoning", kind="reasoning", learning_rate=5e-5, num_train_epochs=3, max_length=8192),
        SFTStageConfig(name="interaction", kind="interaction", learning_rate=5e-6, num_train_epochs=3,
                       max_length=32768),
    ]


def _cpu_stages() -> list[SFTStageConfig]:
    common = {"num_train_epochs": 2, "max_length": 4096, "gradient_accumulation_steps": 4}
    return [
        SFTStageConfig(name="reasoning", kind="reasoning", learning_rate=2e-4, **common),
        SFTStageConfig(name="interaction", kind="interaction", learning_rate=1e-4, **common),
    ]


@dataclass
class SFTCurriculumConfig:
    stages: list[SFTStageConfig] = field(default_factory=_default_stages,
                                         metadata={"help": "Stages in order; each starts from the previous one."})
    preset: str = field(default="upstream", metadata={"help": "What unset options default to: upstream or cpu."})
    lora: bool | None = field(default=None, metadata={
        "help": "Train LoRA adapters (peft), merged after each stage (None: on without a GPU)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "peft target_modules."})
    chat_template: str = field(default="deepanalyze", metadata={
        "help": "deepanalyze: install the ChatML template that renders Execute inline; keep: the model's own."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bfloat16 autocast (None: where the GPU or the CPU supports bfloat16)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Trade compute for memory (None: on when the memory estimate without it does not fit)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    report_to: str = field(default="none", metadata={"help": "transformers report_to (none, wandb, tensorboard)."})
    num_threads: int | None = field(default=None, metadata={
        "help": "CPU threads for torch (None: torch's default, one per core). On a busy machine 1 can be faster."})
    long_examples: str = field(default="drop", metadata={
        "help": "Examples longer than max_length: drop (a cut trajectory never answers) or truncate."})

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        if self.chat_template not in ("deepanalyze", "keep"):
            raise ValueError(f"chat_template {self.chat_template!r}: expected deepanalyze or keep")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: expected {' or '.join(PRESETS)}")
        if self.long_examples not in LONG_EXAMPLES:
            raise ValueError(f"long_examples {self.long_examples!r}: expected drop or truncate")


def preset_config(preset: str) -> dict[str, Any]:
    """The option values a preset sets (a config file's keys override them)."""
    if preset == "cpu":
        return {"preset": "cpu", "stages": _cpu_stages(), "lora": True, "logging_steps": 1}
    if preset == "upstream":
        return {"preset": "upstream"}
    raise ConfigError(f"preset {preset!r}: expected {' or '.join(PRESETS)}")


def default_preset() -> str:
    """cpu without a usable GPU, else upstream (imports torch only when it is installed)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "upstream" if torch.cuda.is_available() else "cpu"


def load_sft_config(source: Path | str | dict[str, Any] | None = None, *, preset: str | None = None
                    ) -> SFTCurriculumConfig:
    """The curriculum from a YAML file or a dict over a preset; unknown keys are errors.

    The preset is `preset`, else the file's `preset:` key, else the upstream recipe when a file or dict is given
    and the machine's default (`default_preset()`) when nothing is.
    """
    if source is None:
        data, where = {}, "sft config"
    elif isinstance(source, dict):
        data, where = dict(source), "sft config"
    else:
        data, where = read_yaml(source), str(source)
    chosen = preset or data.get("preset") or ("upstream" if source is not None else default_preset())
    if not isinstance(chosen, str):
        raise ConfigError(f"{where}.preset: expected upstream or cpu, got {chosen!r}")
    base = preset_config(chosen)
    stages = base.pop("stages", None)
    merged = {**base, **{k: v for k, v in data.items() if k != "preset"}, "preset": chosen}
    config = from_dict(SFTCurriculumConfig, merged, where, nested={"stages": SFTStageConfig})
    if stages is not None and "stages" not in data:
        config.stages = stages
    return config


__all__ = ["SFTStageConfig", "SFTCurriculumConfig", "load_sft_config", "preset_config", "default_preset",
           "ConfigError", "KINDS", "PRESETS"]
