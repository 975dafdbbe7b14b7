"""A tiny causal LM + tokenizer built OFFLINE, for tests and smoke runs (nothing is downloaded).

The tokenizer is a byte-level BPE trained with `tokenizers` on the project's own text (roles, checklists, the
protocol module and any extra texts, e.g. record messages); the model is a Qwen2-architecture decoder with tiny
dimensions and random weights. Together they form a normal Hugging Face model folder: `AutoTokenizer`,
`AutoModelForCausalLM`, `synth.llm.load_model("hf:DIR")` and the train commands all read it.

The tiny tokenizer does NOT carry the action tags: like a real base model, it gets them from
`train.tokens.add_action_tokens` during training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from train.tokens import DEEPANALYZE_CHAT_TEMPLATE

_REPO = Path(__file__).resolve().parent.parent
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def project_texts() -> list[str]:
    """Text the project ships (roles, checklists, protocol source): a corpus for the tiny tokenizer."""
    import synth.protocol

    paths: list[Path] = []
    for folder in ("roles", "checklists"):
        paths += sorted((_REPO / folder).glob("*.yaml"))
    paths.append(Path(synth.protocol.__file__))
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except OSError:
            continue
    return texts


def build_tiny_tokenizer(texts: Iterable[str] = (), *, vocab_size: int = 1024):
    """A byte-level BPE `PreTrainedTokenizerFast` with ChatML markers and the deepanalyze chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [*project_texts(), *texts]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = DEEPANALYZE_CHAT_TEMPLATE
    return fast


def build_tiny_model(out: Path | str, *, texts: Iterable[str] = (), vocab_size: int = 1024, hidden_size: int = 64,
                     layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0, tied: bool = True) -> Path:
    """Write a tiny Qwen2 model folder (config, random weights, tokenizer) to `out`; return `out`.

    `tied=False` gives the output head its own weights, like the embedded Qwen2.5-Coder GGUFs."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tokenizer = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=tied,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


__all__ = ["build_tiny_model", "build_tiny_tokenizer", "project_texts"]
