"""vLLM cannot be installed here (GPU only): check that asking for it fails clearly, before any heavy import."""

from __future__ import annotations

import sys

import pytest

from synth.llm import ModelError, load_model


def test_vllm_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec treats a None entry as "not installed"
    with pytest.raises(ModelError, match=r"vllm:.*needs vLLM.*pip install 'ds-synth\[vllm\]'"):
        load_model(f"vllm:{tmp_path}")
