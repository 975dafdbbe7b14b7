"""Configuration of `synth train sft`: a curriculum of SFT stages in one file (TRL-style dataclasses).

    stages:
      - {name: reasoning, kind: reasoning, learning_rate: 5e-5, num_train_epochs: 3, max_length: 8192}
      - {name: interaction, kind: interaction, learning_rate: 5e-6, num_train_epochs: 3, max_length: 32768}
    lora: false

Each stage trains on the rows of its `kind` and starts from the previous stage's checkpoint. Defaults are the
upstream DeepAnalyze recipe (PROTOCOL-FACTS: stage 1 lr 5e-5, 3 epochs, 8K; stage 2 lr 5e-6, 3 epochs, 32K);
upstream's effective batch of 256 is `per_device_train_batch_size × gradient_accumulation_steps × GPUs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train._config_io import ConfigError, from_dict, read_yaml

KINDS = ("reasoning", "interaction", "all")


@dataclass
class SFTStageConfig:
    name: str = field(metadata={"help": "Stage name; intermediate checkpoints go to OUT/stages/NAME."})
    kind: str = field(default="all", metadata={"help": "Rows to train on: reasoning, interaction or all."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the stage's rows."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    max_length: int = field(default=8192, metadata={"help": "Tokens per example; longer ones are truncated."})
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


@dataclass
class SFTCurriculumConfig:
    stages: list[SFTStageConfig] = field(default_factory=_default_stages,
                                         metadata={"help": "Stages in order; each starts from the previous one."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft), merged after each stage."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "peft target_modules."})
    chat_template: str = field(default="deepanalyze", metadata={
        "help": "deepanalyze: install the ChatML template that renders Execute inline; keep: the model's own."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    bf16: bool | None = field(default=None, metadata={"help": "bfloat16 mixed precision (None: when on a GPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    report_to: str = field(default="none", metadata={"help": "transformers report_to (none, wandb, tensorboard)."})

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        if self.chat_template not in ("deepanalyze", "keep"):
            raise ValueError(f"chat_template {self.chat_template!r}: expected deepanalyze or keep")


def load_sft_config(source: Path | str | dict[str, Any] | None = None) -> SFTCurriculumConfig:
    """The curriculum from a YAML file or a dict (None: the upstream defaults); unknown keys are errors."""
    if source is None:
        return SFTCurriculumConfig()
    data, where = (source, "sft config") if isinstance(source, dict) else (read_yaml(source), str(source))
    return from_dict(SFTCurriculumConfig, data, where, nested={"stages": SFTStageConfig})


__all__ = ["SFTStageConfig", "SFTCurriculumConfig", "load_sft_config", "ConfigError", "KINDS"]
