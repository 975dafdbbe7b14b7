"""Training on ds-synth data (DESIGN §11): SFT curriculum and GRPO in the sandbox.

    synth train sft  --data runs/r1 --model Qwen/Qwen2.5-0.5B --out ckpt/sft [--config sft.yaml] [--lora]
    synth train grpo --data exports/rl.parquet --model ckpt/sft --out ckpt/grpo [--config grpo.yaml]

Python: `train.sft_trainer.run_sft`, `train.grpo_trainer.run_grpo`, `train.rewards.score_episode`,
`train.masking.build_example`, `train.tokens.add_action_tokens`, `train.tiny.build_tiny_model`.

Multi-GPU / multi-node: launch the same command with accelerate and one of the shipped configs, e.g.
    accelerate launch --config_file "$(python -c 'import train; print(train.accelerate_config("zero2"))')" \\
        -m synth train sft --data … --model … --out …
(`zero2`, `zero3` = DeepSpeed ZeRO-2/3, needs `pip install deepspeed`; `fsdp` = PyTorch FSDP2). Edit
num_processes / num_machines in a copy of the file for your cluster.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def accelerate_config(name: str) -> Path:
    """Path of a shipped accelerate config: zero2, zero3 or fsdp."""
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
        raise ValueError(f"unknown accelerate config {name!r}; choose from {choices}")
    return path


__all__ = ["CONFIGS_DIR", "accelerate_config"]
