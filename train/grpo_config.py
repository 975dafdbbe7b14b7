"""Configuration of `synth train grpo` (TRL-style dataclass; YAML keys = field names, unknown keys are errors).

Defaults follow the upstream RL recipe (PROTOCOL-FACTS): lr 5e-7, 5 samples per prompt, no KL term (beta 0),
30 turns, 10 s per cell; the reward combination weights are those of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train._config_io import ConfigError, from_dict, read_yaml
from train.rewards import RewardWeights


@dataclass
class GRPORunConfig:
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate."})
    num_generations: int = field(default=5, metadata={"help": "Rollouts per prompt (the GRPO group)."})
    per_device_train_batch_size: int = field(default=5, metadata={
        "help": "Rollouts per device per step; × accumulation × devices must be a multiple of num_generations."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the prompts."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (upstream: 0, no reference model)."})
    loss_type: str | None = field(default=None, metadata={"help": "TRL loss_type (None: TRL's default)."})
    max_turns: int | None = field(default=None, metadata={"help": "Round cap per episode (None: the row's)."})
    max_tokens_per_turn: int = field(default=1024, metadata={"help": "Tokens generated per model turn."})
    max_completion_length: int = field(default=16384, metadata={
        "help": "Tokens of the whole episode stream kept for the loss (model turns + Execute output)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    cell_timeout_s: float = field(default=10.0, metadata={"help": "Wall-clock seconds per code cell."})
    mode: str = field(default="script", metadata={"help": "Sandbox execution mode: script or session."})
    sandbox: str = field(default="local", metadata={"help": "Sandbox backend: local or docker."})
    judge_model: str | None = field(default=None, metadata={
        "help": "Model spec of the report judge (openresearch tasks), e.g. openai:gpt-4o-mini."})
    matcher_chain: str = field(default="exact,wikitq,numeric,contains", metadata={
        "help": "Answer matchers tried in order for the accuracy term (synth.matchers)."})
    accuracy_weight: float = field(default=0.5, metadata={"help": "qa/datatask: weight of accuracy."})
    interaction_weight: float = field(default=0.5, metadata={"help": "qa/datatask: weight of interaction."})
    report_weight: float = field(default=1 / 3, metadata={"help": "openresearch: weight of the report score."})
    turns_weight: float = field(default=1 / 3, metadata={"help": "openresearch: weight of min(turns/target, 1)."})
    code_weight: float = field(default=1 / 3, metadata={"help": "openresearch: weight of code success rate."})
    malformed_reward: float = field(default=-1.0, metadata={"help": "Reward of a malformed episode."})
    turns_target: int = field(default=10, metadata={"help": "Turns that earn the full turns term."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate rollouts with vLLM (GPU; TRL use_vllm)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "vLLM mode: colocate or server."})
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "vLLM server URL (server mode)."})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "vLLM memory share (colocate)."})
    chat_template: str = field(default="deepanalyze", metadata={"help": "deepanalyze or keep."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    bf16: bool | None = field(default=None, metadata={"help": "bfloat16 (None: when on a GPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps."})
    report_to: str = field(default="none", metadata={"help": "transformers report_to."})

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2 (GRPO compares rollouts of one prompt)")
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(f"per_device_train_batch_size × gradient_accumulation_steps "
                             f"({self.per_device_train_batch_size} × {self.gradient_accumulation_steps}) must be a "
                             f"multiple of num_generations ({self.num_generations})")
        if self.mode not in ("script", "session"):
            raise ValueError(f"mode {self.mode!r}: expected script or session")
        if self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"vllm_mode {self.vllm_mode!r}: expected colocate or server")

    def reward_weights(self) -> RewardWeights:
        return RewardWeights(accuracy=self.accuracy_weight, interaction=self.interaction_weight,
                             report=self.report_weight, turns=self.turns_weight, code=self.code_weight,
                             malformed=self.malformed_reward, turns_target=self.turns_target)


def load_grpo_config(source: Path | str | dict[str, Any] | None = None) -> GRPORunConfig:
    if source is None:
        return GRPORunConfig()
    data, where = (source, "grpo config") if isinstance(source, dict) else (read_yaml(source), str(source))
    return from_dict(GRPORunConfig, data, where)


__all__ = ["GRPORunConfig", "load_grpo_config", "ConfigError"]
