from __future__ import annotations

import asyncio
import json
import math

import pytest

from doubles import ScriptedChatModel
from synth.dataset.export import export
from train.data import DataError, load_rl_rows
from train.grpo_config import GRPORunConfig, load_grpo_config
from train.grpo_trainer import _Rollouts, run_grpo
from train.sft_trainer import run_sft
from train.tiny import build_tiny_model, build_tiny_tokenizer
from train.tokens import add_action_tokens, install_chat_template
from train_helpers import CORRECT, make_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo-data")
    run = make_run(root)
    rl = root / "export" / "rl.parquet"
    export([run], "rl", rl)
    return run, rl


def test_rl_rows_resolve_workspaces(data, tmp_path):
    _, rl = data
    rows = load_rl_rows(rl)
    assert len(rows) == 4
    interaction = [r for r in rows if r["workspace"]]
    assert len(interaction) == 2 and all(r["workspace"].endswith(".tar.gz") for r in interaction)
    assert rows[0]["reward_spec"]["ground_truth"] == 60 and rows[0]["reward_spec"]["checklist"][0]["rule"]
    with pytest.raises(DataError, match="not an rl export"):
        load_rl_rows(tmp_path / "missing.parquet")


def test_config_checks_group_size(tmp_path):
    assert load_grpo_config().learning_rate == 5e-7 and GRPORunConfig().num_generations == 5
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPORunConfig(num_generations=4, per_device_train_batch_size=3)
    with pytest.raises(ValueError, match="unknown option"):
        load_grpo_config({"lr": 1})


def test_rollout_runs_the_agent_in_the_sandbox_and_masks_execute(data, tmp_path):
    """The rollout function on a real workspace: a scripted policy answers correctly after real execution."""
    _, rl = data
    row = next(r for r in load_rl_rows(rl) if r["workspace"] and r["reward_spec"]["ground_truth"] == 60)
    tokenizer = build_tiny_tokenizer(vocab_size=400)
    add_action_tokens(tokenizer)
    install_chat_template(tokenizer)
    rollouts = _Rollouts(GRPORunConfig(num_generations=2, per_device_train_batch_size=2, max_turns=4),
                         tokenizer, None, tmp_path)
    rollouts.policy = ScriptedChatModel(CORRECT, family="deepanalyze")

    class Trainer:
        _ds_inputs = [{"prompt": row["prompt"], "ds_row": json.dumps(row)}]

    out = rollouts([row["prompt"]], Trainer)
    rollouts.close()
    assert out["ds_reward"] == [1.0]  # correct answer (60) and the checklist passes
    breakdown = json.loads(out["ds_breakdown"][0])
    assert breakdown["accuracy"] == 1.0 and breakdown["code_success"] == 1.0
    completion, mask = out["completion_ids"][0], out["env_mask"][0]
    text = tokenizer.decode(completion)
    assert "<Execute>\n60\n</Execute>" in text  # the sandbox really printed 60
    kept = tokenizer.decode([t for t, m in zip(completion, mask) if m])
    assert "<Execute>" not in kept and "60\n" not in kept.split("<Understand>")[0]
    assert completion[-1] == tokenizer.eos_token_id and mask[-1] == 1
    prompt_text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    assert out["prompt_ids"][0] == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]


def test_sft_curriculum_then_grpo_end_to_end(data, tmp_path):
    run, rl = data
    base = build_tiny_model(tmp_path / "base", vocab_size=512)
    stage = {"learning_rate": 2e-3, "max_steps": 1, "max_length": 1024}
    sft = run_sft([run], base, tmp_path / "sft", {"stages": [
        {"name": "reasoning", "kind": "reasoning", **stage}, {"name": "interaction", "kind": "interaction", **stage}],
        "logging_steps": 1})
    assert [s.steps for s in sft.stages] == [1, 1]
    config = {"num_generations": 2, "per_device_train_batch_size": 2, "max_steps": 2, "max_turns": 2,
              "max_tokens_per_turn": 16, "learning_rate": 1e-4, "cell_timeout_s": 10}
    result = run_grpo(rl, tmp_path / "sft", tmp_path / "grpo", config)
    assert result.steps == 2 and result.episodes == 4
    assert all(math.isfinite(r) and -1.0 <= r <= 1.0 for r in result.rewards)
    assert result.model_tokens > 0 and result.train_tokens > 0
    summary = json.loads((tmp_path / "grpo" / "grpo_result.json").read_text())
    assert len(summary["breakdowns"]) == 4

    from synth.llm import load_model

    model = load_model(f"hf:{tmp_path / 'grpo'}?device=cpu&seed=0")

    async def ask():
        try:
            return await model.chat([{"role": "user", "content": "# Instruction\nHi"}], max_tokens=4)
        finally:
            await model.aclose()

    assert model.family == "deepanalyze" and isinstance(asyncio.run(ask()).text, str)
