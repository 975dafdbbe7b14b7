"""Embedded backend checks that need no model load (the real model runs in tests/e2e/test_embedded_e2e.py)."""

from __future__ import annotations

import sys

import pytest

from synth.llm import ModelError, load_model
from synth.llm.embedded import EmbeddedChatModel


def test_missing_llama_bindings_name_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    with pytest.raises(ModelError, match=r"pip install 'ds-synth\[embedded-small\]'"):
        EmbeddedChatModel("0.5b")


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedded model '3b'; use one of 1.5b, 0.5b"):
        load_model("embedded:3b")


def test_one_loaded_server_per_model_and_settings():
    a = load_model("embedded:0.5b")
    b = load_model("embedded:0.5b")
    c = load_model("embedded:0.5b", n_ctx=4096)
    assert a._loaded is b._loaded
    assert c._loaded is not a._loaded
    assert a.name == "embedded:0.5b" and a.family == "instruct"


def test_request_body_maps_every_parameter():
    model = EmbeddedChatModel("0.5b", seed=3, default_max_tokens=99)
    body = model.request_body([{"role": "user", "content": "hi"}], stop=["</Code>"], temperature=0.2,
                              response_format={"type": "json_object"})
    assert body == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 99, "stop": ["</Code>"],
                    "temperature": 0.2, "seed": 3, "response_format": {"type": "json_object"}}
