from __future__ import annotations

import asyncio
import json
import math

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.dataset.export import export
from train.data import DataError, load_sft_rows
from train.sft_config import ConfigError, load_sft_config
from train.sft_trainer import run_sft
from train.tiny import build_tiny_model
from train_helpers import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", vocab_size=512)


def _stage(name, kind, **extra):
    return {"name": name, "kind": kind, "learning_rate": 2e-3, "max_steps": 2, "max_length": 1024, **extra}


def test_data_loads_from_runs_exports_and_dataset_folders(run_dir, tmp_path):
    from datasets import Dataset

    from_run = load_sft_rows([run_dir])
    assert sorted(r["kind"] for r in from_run) == ["interaction", "interaction", "reasoning", "reasoning"]
    export([run_dir], "sft", tmp_path / "sft.parquet")
    export([run_dir], "swift", tmp_path / "swift.jsonl")
    assert load_sft_rows([tmp_path / "sft.parquet"]) == from_run
    swift = load_sft_rows([tmp_path / "swift.jsonl"])  # no kind column: inferred from the Execute blocks
    assert [r["kind"] for r in swift] == [r["kind"] for r in from_run]
    assert [r["execute_spans"] for r in swift] == [r["execute_spans"] for r in from_run]
    Dataset.from_list(from_run).save_to_disk(str(tmp_path / "saved"))
    assert load_sft_rows([tmp_path / "saved"], kind="reasoning") == [r for r in from_run if r["kind"] == "reasoning"]
    with pytest.raises(DataError, match="no such file or directory"):
        load_sft_rows([tmp_path / "missing"])
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(DataError, match="bad.jsonl: row 1: the last message"):
        load_sft_rows([tmp_path / "bad.jsonl"])


def test_config_presets_and_bad_keys_are_errors(tmp_path):
    upstream = load_sft_config(preset="upstream")
    first, second = upstream.stages
    assert (first.kind, first.learning_rate, first.num_train_epochs, first.max_length) == ("reasoning", 5e-5, 3, 8192)
    assert (second.kind, second.learning_rate, second.max_length) == ("interaction", 5e-6, 32768)
    assert upstream.lora is None  # decided at run time: LoRA without a GPU
    cpu = load_sft_config(preset="cpu")
    assert cpu.lora is True and cpu.logging_steps == 1
    assert [(s.kind, s.learning_rate, s.max_length) for s in cpu.stages] == [("reasoning", 2e-4, 4096),
                                                                            ("interaction", 1e-4, 4096)]
    assert load_sft_config().preset == "cpu"  # this machine has no GPU: nothing given means the cpu preset
    over = load_sft_config({"preset": "cpu", "lora": False, "logging_steps": 5})
    assert (over.preset, over.lora, over.logging_steps, len(over.stages)) == ("cpu", False, 5, 2)
    with pytest.raises(ConfigError, match="preset 'gpu'"):
        load_sft_config({"preset": "gpu"})
    path = tmp_path / "sft.yaml"
    path.write_text("stages:\n  - {name: a, kind: reasoning, learning_rate: 1e-4}\nlora: true\n")
    loaded = load_sft_config(path)
    assert loaded.lora and loaded.stages[0].learning_rate == 1e-4
    path.write_text("stages:\n  - {name: a, kind: reasoning, lr: 1e-4}\n")
    with pytest.raises(ConfigError, match=r"stages\[0\]: unknown option\(s\) lr"):
        load_sft_config(path)
    with pytest.raises(ConfigError, match="kind 'code'"):
        load_sft_config({"stages": [{"name": "a", "kind": "code"}]})


def test_loss_decreases_on_a_fixed_batch(run_dir, base_model, tmp_path):
    rows = load_sft_rows([run_dir], kind="interaction")[:1]
    from train.sft_trainer import train_stage
    from train.sft_config import SFTStageConfig

    cfg = load_sft_config({"stages": [_stage("fixed", "interaction")], "logging_steps": 1})
    stage = SFTStageConfig(**{**_stage("fixed", "interaction"), "max_steps": 6, "learning_rate": 3e-3,
                              "lr_scheduler_type": "constant"})
    result = train_stage(rows, base_model, tmp_path / "fixed", stage, cfg)
    assert len(result.losses) == 6 and all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < result.losses[0] - 0.1
    assert result.train_tokens > 0


def test_curriculum_then_the_checkpoint_serves_as_an_agent(run_dir, base_model, tmp_path):
    out = tmp_path / "sft"
    config = {"stages": [_stage("reasoning", "reasoning"), _stage("interaction", "interaction")],
              "logging_steps": 1}
    result = run_sft([run_dir], base_model, out, config)
    assert [s.name for s in result.stages] == ["reasoning", "interaction"]
    assert [s.rows for s in result.stages] == [2, 2]
    assert result.stages[0].output_dir == str(out / "stages" / "reasoning")  # stage 2 started from stage 1
    assert result.stages[1].output_dir == str(out)
    assert all(math.isfinite(x) for s in result.stages for x in s.losses)
    summary = json.loads((out / "sft_result.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["reasoning", "interaction"]

    from synth.llm import load_model

    model = load_model(f"hf:{out}?device=cpu&seed=0")
    assert model.family == "deepanalyze"  # the tag tokens were added

    async def ask():
        try:
            return await model.chat([{"role": "user", "content": "# Instruction\nSay hello."}], max_tokens=8)
        finally:
            await model.aclose()

    completion = asyncio.run(ask())
    assert isinstance(completion.text, str) and completion.usage.completion_tokens > 0

    data = tmp_path / "sales.csv"
    data.write_text("region,amount\nnorth,10\n")
    cli = CliRunner().invoke(app, ["analyze", "What is the total?", "--data", str(data), "--model",
                                   f"hf:{out}?device=cpu&seed=0&default_max_tokens=16", "--max-rounds", "2",
                                   "--json"])
    assert cli.exit_code in (0, 1), cli.output
    payload = json.loads(cli.stdout.strip().splitlines()[-1])
    assert payload["stop_reason"] in ("answer", "max_rounds", "empty_reply", "repeated_code")
    assert payload["turns"] <= 2


def test_cli_errors_are_one_line(tmp_path, base_model):
    result = CliRunner().invoke(app, ["train", "sft", "--data", str(tmp_path / "nope"), "--model", str(base_model),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no such file or directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_stops_after_the_step_and_leaves_a_usable_model(run_dir, base_model, tmp_path, monkeypatch, capsys):
    """Ctrl-C during stage 1 of 2: the step finishes, the model is saved in OUT, stage 2 does not start, exit 130;
    the progress line (loss, tokens/s, ETA) and the loss curve were written as it went."""
    import os
    import signal

    from synth.commands.train import sft as sft_command
    from train.progress import TrainLog

    original = TrainLog.on_step_end

    def press_ctrl_c_after_step_1(self, args, state, control, **kwargs):
        if state.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(TrainLog, "on_step_end", press_ctrl_c_after_step_1)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in a background job
    config = tmp_path / "sft.yaml"
    config.write_text(json.dumps({"stages": [_stage("reasoning", "reasoning", max_steps=5),
                                             _stage("interaction", "interaction", max_steps=5)],
                                  "logging_steps": 1}))
    out = tmp_path / "sft"
    assert sft_command([str(run_dir)], str(base_model), out, config) == 130
    captured = capsys.readouterr()
    assert "stage 1/2 reasoning  step 1/5" in captured.err and "tok/s" in captured.err and "ETA" in captured.err
    assert "Ctrl-C: stopping after this micro-batch" in captured.err and "interrupted: the model saved" in captured.err
    summary = json.loads((out / "sft_result.json").read_text())
    assert summary["interrupted"] and [s["name"] for s in summary["stages"]] == ["reasoning"]
    assert summary["stages"][0]["steps"] == 1 and summary["stages"][0]["interrupted"]
    curve = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["step"]) for e in curve] == [("reasoning", 1)] and math.isfinite(curve[0]["loss"])
    assert curve[0]["peak_rss_bytes"] > 0
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back

    from synth.llm import load_model

    model = load_model(f"hf:{out}?device=cpu&seed=0")
    assert model.family == "deepanalyze"

    async def ask():
        try:
            return await model.chat([{"role": "user", "content": "# Instruction\nSay hello."}], max_tokens=4)
        finally:
            await model.aclose()

    assert asyncio.run(ask()).usage.completion_tokens > 0


def test_long_rows_are_left_out_not_cut(run_dir, base_model, tmp_path):
    rows = load_sft_rows([run_dir], kind="interaction")
    from train.masking import tokenize_row
    from train.sft_trainer import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(base_model)
    lengths = sorted(len(tokenize_row(tokenizer, r)["input_ids"]) for r in rows)
    assert lengths[0] < lengths[1]
    config = {"stages": [_stage("interaction", "interaction", max_length=lengths[0])], "logging_steps": 1}
    result = run_sft([run_dir], base_model, tmp_path / "short", config)
    assert (result.stages[0].rows, result.stages[0].dropped_long, result.stages[0].longest) == (2, 1, lengths[1])
    from synth.errors import SynthError

    with pytest.raises(SynthError, match="every row is longer than max_length 16"):
        run_sft([run_dir], base_model, tmp_path / "none", {"stages": [_stage("i", "interaction", max_length=16)]})


def test_lora_on_an_untied_model_trains_the_tag_rows_and_the_head(run_dir, tmp_path):
    """Like the embedded GGUFs (output head not tied): LoRA trains only the tag tokens' rows of the input table
    and the whole head, merged into a plain checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    from synth.protocol import SPECIAL_TOKENS
    from train.sft_trainer import load_model_and_tokenizer

    base = build_tiny_model(tmp_path / "untied", vocab_size=512, tied=False)
    out = tmp_path / "out"
    result = run_sft([run_dir], base, out, {"stages": [_stage("interaction", "interaction", max_steps=3)],
                                            "lora": True, "logging_steps": 1})
    assert result.settings["lora"] and result.stages[0].steps == 3
    start, tokenizer = load_model_and_tokenizer(base)  # the tags added and initialised, as training began
    trained = AutoModelForCausalLM.from_pretrained(out)
    tags = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    before, after = start.get_input_embeddings().weight, trained.get_input_embeddings().weight
    others = [i for i in range(before.shape[0]) if i not in tags]
    assert not torch.allclose(before[tags], after[tags])  # the tag rows learned
    assert torch.equal(before[others], after[others])  # no other row of the table moved
    assert not torch.allclose(start.get_output_embeddings().weight, trained.get_output_embeddings().weight)
    assert not trained.config.tie_word_embeddings
