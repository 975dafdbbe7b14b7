"""Spec strings and load_model (synth/llm/__init__.py)."""

from __future__ import annotations


import pytest

from synth.llm import ChatModel, load_model, parse_spec
from synth.llm.cache import CachedChatModel


@pytest.mark.parametrize(
    "spec, backend, model, options",
    [
        ("embedded", "embedded", "", {}),
        ("", "embedded", "", {}),
        ("embedded:0.5b", "embedded", "0.5b", {}),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", {}),
        ("openai:gpt-4o?rpm=500&input_price_per_m=2.5&family=instruct", "openai", "gpt-4o",
         {"rpm": 500, "input_price_per_m": 2.5, "family": "instruct"}),
        ("hf:/models/sft-1?family=deepanalyze", "hf", "/models/sft-1", {"family": "deepanalyze"}),
        ("transformers:./ckpt", "hf", "./ckpt", {}),
        ("vllm:/models/big", "vllm", "/models/big", {}),
    ],
)
def test_parse_spec(spec, backend, model, options):
    parsed = parse_spec(spec)
    assert (parsed.backend, parsed.model, parsed.options) == (backend, model, options)


def test_default_spec_follows_env(monkeypatch):
    monkeypatch.setenv("DS_SYNTH_MODEL", "openai:x")
    assert parse_spec(None).backend == "openai"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpt4", "unknown backend 'gpt4'"),
        ("openai", "needs a model after ':'"),
        ("hf:", "needs a model after ':'"),
        ("openai:m?rpm", "key=value"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown option\\(s\\) colour"):
        load_model("openai:m?colour=red", base_url="http://127.0.0.1:9/v1")


def test_none_options_are_ignored_and_cache_wraps(tmp_path):
    model = load_model("openai:m", base_url="http://127.0.0.1:9/v1", api_key=None, rpm=None,
                       cache_path=tmp_path / "c.sqlite")
    assert isinstance(model, CachedChatModel) and isinstance(model, ChatModel)
    assert model.name == "openai:m" and model.inner.base_url == "http://127.0.0.1:9/v1"

