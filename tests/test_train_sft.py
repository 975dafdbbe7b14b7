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


def test_config_defaults_are_upstream_and_bad_keys_are_errors(tmp_path):
    default = load_sft_config()
    first, second = default.stages
    assert (first.kind, first.learning_rate, first.num_train_epochs, first.max_length) == ("reasoning", 5e-5, 3, 8192)
    assert (second.kind, second.learning_rate, second.max_length) == ("interaction", 5e-6, 32768)
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
    assert result.exit_code == 1
    assert "no such file or directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1
