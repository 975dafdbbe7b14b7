"""Base models by spec (train.models) and GGUF export (train.gguf_export), on the tiny offline model.

The GGUF round trip — a checkpoint exported by `synth train export-gguf` and converted back by the same path that
converts the embedded models (`transformers.from_pretrained(gguf_file=…)`) — must give back the same tensors and
the same tokenizer: that checks the exporter's names, layouts and vocabulary, and the converter's cache.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from typer.testing import CliRunner

from synth.cli import app
from train.errors import TrainError, require_train_extra
from train.gguf_export import export_gguf
from train.models import (STAMP, BaseModelRef, _drop_pad_placeholders, check_memory, estimate_training_memory,
                          resolve_base_model)
from train.sft_trainer import load_model_and_tokenizer
from train.tiny import build_tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model as `train` leaves it: tag tokens added, deepanalyze template."""
    root = tmp_path_factory.mktemp("ckpt")
    base = build_tiny_model(root / "base", vocab_size=512)
    model, tokenizer = load_model_and_tokenizer(base)
    model.save_pretrained(root / "ckpt")
    tokenizer.save_pretrained(root / "ckpt")
    return root / "ckpt"


def test_gguf_round_trip_gives_back_the_checkpoint_and_is_cached(checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    gguf = export_gguf(checkpoint, tmp_path / "tiny-f32.gguf", qtype="f32")
    cache = tmp_path / "cache"
    ref = resolve_base_model(f"embedded:{gguf}", cache_dir=cache)
    assert ref.source == "gguf" and ref.path == cache / "tiny-f32" and ref.num_parameters > 0
    before, after = load_file(checkpoint / "model.safetensors"), load_file(ref.path / "model.safetensors")
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    text = "<Analyze>Read sales.csv first.</Analyze>\n<Code>\n```python\nprint(1)\n```\n</Code>"
    original, converted = AutoTokenizer.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(ref.path)
    assert converted(text)["input_ids"] == original(text)["input_ids"]
    assert converted.convert_tokens_to_ids("<Analyze>") == original.convert_tokens_to_ids("<Analyze>")

    stamp = json.loads((ref.path / STAMP).read_text())
    assert stamp["source"]["name"] == "tiny-f32.gguf" and stamp["files"]["config.json"] > 0
    written = (ref.path / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model(gguf, cache_dir=cache).path == ref.path  # reused, not converted again
    assert (ref.path / "model.safetensors").stat().st_mtime_ns == written
    (ref.path / "model.safetensors").write_bytes(b"torn")  # a damaged cache is converted again
    again = load_file(resolve_base_model(gguf, cache_dir=cache).path / "model.safetensors")
    assert all(torch.equal(before[k], again[k]) for k in before)


def test_exported_checkpoint_runs_on_the_embedded_backend(checkpoint, tmp_path):
    from synth.llm import load_model

    q8 = export_gguf(checkpoint, tmp_path / "q8.gguf", qtype="q8_0")
    f16 = export_gguf(checkpoint, tmp_path / "f16.gguf", qtype="f16")
    assert q8.stat().st_size < f16.stat().st_size
    model = load_model(f"embedded:{q8}?n_ctx=512&seed=0")  # the family comes from the GGUF's tag tokens

    async def ask():
        # The deepanalyze family's Execute message: llama.cpp renders it with the checkpoint's own template.
        return await model.chat([{"role": "user", "content": "# Instruction\nSum the amounts."},
                                 {"role": "assistant", "content": "<Analyze>x</Analyze>\n<Code>print(1)</Code>"},
                                 {"role": "execute", "content": "\n<Execute>\n1\n</Execute>\n"}],
                                max_tokens=8, temperature=0)

    completion = asyncio.run(ask())
    assert completion.usage.prompt_tokens > 10 and completion.usage.completion_tokens > 0
    assert model.family == "deepanalyze"


def test_gguf_tokens_reads_the_exported_vocabulary(checkpoint, tmp_path):
    from transformers import AutoTokenizer

    from synth.llm.base import ModelError
    from synth.llm.model_files import gguf_tokens

    gguf = export_gguf(checkpoint, tmp_path / "tiny.gguf", qtype="f32")
    tokens = gguf_tokens(gguf)
    assert len(tokens) == len(AutoTokenizer.from_pretrained(checkpoint)) and "<Analyze>" in tokens
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelError, match="not a GGUF"):
        gguf_tokens(not_gguf)
    torn = tmp_path / "torn.gguf"
    torn.write_bytes(gguf.read_bytes()[:64])
    with pytest.raises(ModelError, match="ends early"):
        gguf_tokens(torn)


def test_gguf_architecture_and_export_errors_are_one_line(tmp_path, checkpoint):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "someformer")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(TrainError, match="GGUF architecture 'someformer' cannot be loaded by transformers"):
        resolve_base_model(path, cache_dir=tmp_path / "cache")
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(TrainError, match="export-gguf writes the qwen2 architecture, this model is 'llama'"):
        export_gguf(llama)
    with pytest.raises(TrainError, match="--type 'q4'"):
        export_gguf(checkpoint, qtype="q4")
    result = CliRunner().invoke(app, ["train", "export-gguf", str(llama)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_specs_folders_and_hub_ids(checkpoint, tmp_path, monkeypatch):
    ref = resolve_base_model(f"hf:{checkpoint}")
    assert (ref.source, ref.path) == ("folder", checkpoint)
    with pytest.raises(TrainError, match="not a Hugging Face model folder"):
        resolve_base_model(tmp_path)
    with pytest.raises(TrainError, match="no such folder or file, and not a Hub id"):
        resolve_base_model(tmp_path / "missing" / "deeper")
    with pytest.raises(TrainError, match="unknown embedded model '7b'"):
        resolve_base_model("embedded:7b")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach the network from a test
    with pytest.raises(TrainError, match="cannot download it from the Hugging Face Hub"):
        resolve_base_model("nobody-here/no-such-model")


def test_memory_estimate_and_check(checkpoint):
    ref = BaseModelRef("tiny", checkpoint, "folder", None, 10_000)
    lora = estimate_training_memory(checkpoint, lora=True, max_length=4096, num_parameters=ref.num_parameters)
    full = estimate_training_memory(checkpoint, lora=False, max_length=4096, num_parameters=ref.num_parameters)
    short = estimate_training_memory(checkpoint, lora=True, max_length=512, num_parameters=ref.num_parameters)
    assert short < lora < full
    with pytest.raises(TrainError, match=r"not enough memory to train .*needs about [\d.]+ GB at max_length 4096 "
                                         r"\(full fine-tuning\), 0\.0 GB is available; try LoRA \(--lora\)"):
        check_memory(ref, lora=False, max_length=4096, available=1024)
    assert check_memory(ref, lora=True, max_length=512, available=64 * 2**30) == short


def test_memory_and_missing_extra_errors_reach_the_cli_as_one_line(checkpoint, tmp_path, monkeypatch):
    import train.models

    from train_helpers import make_run

    data = make_run(tmp_path / "data")
    monkeypatch.setattr(train.models, "available_memory", lambda: 2**20)
    result = CliRunner().invoke(app, ["train", "sft", "--data", str(data), "--model", str(checkpoint),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not enough memory to train" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    monkeypatch.setitem(sys.modules, "trl", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "trl" else object())
    with pytest.raises(TrainError, match=r"training needs trl, which is not installed; .*pip install 'ds-synth\[train\]'"):
        require_train_extra()
    result = CliRunner().invoke(app, ["train", "sft", "--data", str(data), "--model", "embedded:0.5b",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pip install 'ds-synth[train]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_llama_cpp_vocabulary_padding_is_dropped(tmp_path):
    vocab = {"a": 0, "b": 1, "[PAD2]": 2, "[PAD3]": 3}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                                         "added_tokens": [{"id": 1, "content": "b"}]}))
    assert _drop_pad_placeholders(tmp_path) == 2
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"] == {"a": 0, "b": 1}
    middle = {"a": 0, "[PAD1]": 1, "c": 2}  # not a tail of fillers: left alone
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": middle}}))
    assert _drop_pad_placeholders(tmp_path) == 0
