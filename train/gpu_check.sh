#!/usr/bin/env bash
# GPU smoke check of `train` (< 8 minutes on one H100/H200): SFT stage 1 -> stage 2, then a few GRPO steps with
# multi-turn rollouts in the local sandbox, on a Qwen2.5-0.5B-ARCHITECTURE model built from its config with random
# weights (no weights travel, no network). Prints tokens/s for each phase.
#
# The GPU image has torch, transformers and accelerate but not TRL. Carry wheels in the (git-ignored) repo tree:
#     pip download trl --no-deps -d .carry/wheels
#     pip download datasets peft --no-deps -d .carry/wheels   # only if the image lacks them
# and this script installs them offline. Run from anywhere:  bash train/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1

if ! python -c "import trl" 2>/dev/null; then
  ls .carry/wheels/trl-*.whl >/dev/null 2>&1 || { echo "error: no TRL wheel under .carry/wheels (see header)"; exit 1; }
  pip install --no-index --no-deps --find-links .carry/wheels .carry/wheels/*.whl
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

WORK="${GPU_CHECK_DIR:-$(mktemp -d)}"
python - "$WORK" <<'PY'
import sys, time
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from synth.dataset.export import export
from train.grpo_trainer import run_grpo
from train.sft_trainer import run_sft
from train.tiny import build_tiny_tokenizer
from train_helpers import make_run

assert torch.cuda.is_available(), "no CUDA device"
work = Path(sys.argv[1])
run = make_run(work / "data")  # records from real sandbox runs
export([run], "rl", work / "data" / "rl.parquet")

# Qwen2.5-0.5B's architecture (config.json of Qwen/Qwen2.5-0.5B), random weights, a small offline tokenizer.
tokenizer = build_tiny_tokenizer(vocab_size=4096)
config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                     rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
torch.manual_seed(0)
model = Qwen2ForCausalLM(config)
model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
base = work / "base"
model.save_pretrained(base)
tokenizer.save_pretrained(base)
print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters (Qwen2.5-0.5B architecture)")
del model

stage = {"learning_rate": 1e-5, "max_steps": 30, "max_length": 4096, "per_device_train_batch_size": 2}
started = time.monotonic()
sft = run_sft([run], base, work / "sft", {"stages": [{"name": "reasoning", "kind": "reasoning", **stage},
                                                     {"name": "interaction", "kind": "interaction", **stage}],
                                          "logging_steps": 5})
for s in sft.stages:
    print(f"sft {s.name}: {s.steps} steps, loss {s.losses[0]:.3f} -> {s.losses[-1]:.3f}, "
          f"{s.tokens_per_second:.0f} tokens/s")
print(f"sft wall: {time.monotonic() - started:.0f} s")

grpo = run_grpo(work / "data" / "rl.parquet", work / "sft", work / "grpo",
                {"num_generations": 4, "per_device_train_batch_size": 4, "max_steps": 3, "max_turns": 3,
                 "max_tokens_per_turn": 128, "learning_rate": 1e-6, "cell_timeout_s": 10})
print(f"grpo: {grpo.steps} steps, {grpo.episodes} episodes, mean reward "
      f"{sum(grpo.rewards) / len(grpo.rewards):.3f}, {grpo.tokens_per_second:.0f} train tokens/s, "
      f"{grpo.model_tokens / grpo.seconds:.0f} generated tokens/s")
PY
echo "gpu_check: OK"
