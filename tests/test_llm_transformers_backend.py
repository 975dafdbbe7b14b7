"""The transformers backend on a tiny random Llama built offline (own tokenizer, no Hub)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from synth.llm import ModelError, load_model
from synth.llm.transformers_backend import TransformersChatModel, tokenizer_family

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|execute|>"]
ACTION_TAGS = ["<Analyze>", "</Analyze>", "<Understand>", "</Understand>", "<Code>", "</Code>", "<Execute>",
               "</Execute>", "<Answer>", "</Answer>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tiny_model(folder: Path, *, action_tags: bool) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<unk>", "<pad>", "<eos>"] + ROLE_TOKENS + (ACTION_TAGS if action_tags else [])
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
    )
    # Plain added tokens (not special): matched before word splitting, and kept when decoding.
    tokenizer.add_tokens(specials[3:])
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"], bos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        # Zero logits for every non-word token: greedy decoding then always prefers some word (the word logits are
        # random around 0, their maximum is positive), so generations are long enough to test stop strings.
        model.lm_head.weight[: len(specials)] = 0.0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny-llama"), action_tags=False)


USER = [{"role": "user", "content": "alpha bravo charlie"}]


async def test_generates_with_usage_and_greedy_is_deterministic(tiny):
    model = load_model(f"hf:{tiny}", device="cpu")
    first = await model.chat(USER, max_tokens=12, temperature=0.0)
    second = await model.chat(USER, max_tokens=12, temperature=0.0)
    await model.aclose()
    assert first.text == second.text
    assert first.usage.prompt_tokens == 5  # <|user|> alpha bravo charlie <|assistant|>
    assert 0 < first.usage.completion_tokens <= 12
    assert first.finish_reason in ("stop", "length")
    assert model.family == "instruct" and model.name == f"hf:{tiny}"


async def test_stop_string_cuts_generation(tiny):
    model = TransformersChatModel(str(tiny), device="cpu")
    free = await model.chat(USER, max_tokens=16, temperature=0.0)
    words = free.text.split()
    if len(words) < 4:
        pytest.fail(f"tiny model produced too little text to test stop strings: {free.text!r}")
    stop_word = words[3]
    stopped = await model.chat(USER, max_tokens=16, temperature=0.0, stop=[stop_word])
    await model.aclose()
    assert stopped.text == free.text[: free.text.find(stop_word)]
    assert stop_word not in stopped.text
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens < free.usage.completion_tokens


async def test_seeded_sampling_repeats(tiny):
    model = TransformersChatModel(str(tiny), device="cpu", seed=11)
    a, b = await asyncio.gather(model.chat(USER, max_tokens=10, temperature=1.0),
                                model.chat(USER, max_tokens=10, temperature=1.0))
    await model.aclose()
    assert a.text == b.text


def test_deepanalyze_family_from_tokenizer(tmp_path):
    folder = _tiny_model(tmp_path / "da", action_tags=True)
    assert tokenizer_family(folder) == "deepanalyze"
    assert load_model(f"hf:{folder}").family == "deepanalyze"
    assert load_model(f"hf:{folder}?family=instruct").family == "instruct"


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is not a local model folder \\(no config.json there\\)"):
        load_model(f"hf:{tmp_path}")


def test_missing_torch_names_the_pip_command(tmp_path, monkeypatch):
    import sys

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModelError, match=r"needs torch; install them with: pip install 'ds-synth\[train\]'"):
        load_model(f"hf:{tmp_path}")
