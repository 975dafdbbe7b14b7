"""The ten action tags as tokens, and a chat template that renders an agent episode as ONE assistant stream.

Upstream added the ten tag strings to the base tokenizer (PROTOCOL-FACTS, in this order). Adding them as tokens
keeps every tag one token wide, which makes loss-mask boundaries exact (see train.masking) and lets the agent
loop and `synth.llm` recognise a trained checkpoint as the `deepanalyze` family.

The chat template is ChatML (`<|im_start|>role\\n…<|im_end|>`) with one addition: consecutive `assistant` and
`execute` messages render as ONE assistant block, the Execute output inline. That is how the agent loop feeds
harness output to a deepanalyze-family model, and how SFT records store an episode, so training and inference
see the same token stream.
"""

from __future__ import annotations

from typing import Any

from synth.protocol import SPECIAL_TOKENS

# Messages of these roles continue the current assistant block instead of opening a new one.
STREAM_ROLES = ("assistant", "execute")

DEEPANALYZE_CHAT_TEMPLATE = (
    "{%- set stream = ['assistant', 'execute'] -%}"
    "{%- for message in messages -%}"
    "{%- set in_stream = message['role'] in stream -%}"
    "{%- set after_stream = loop.index0 > 0 and messages[loop.index0 - 1]['role'] in stream -%}"
    "{%- if not in_stream -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{%- if not after_stream -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    "{{ message['content'] }}"
    "{%- set next_in_stream = not loop.last and messages[loop.index0 + 1]['role'] in stream -%}"
    "{%- if not next_in_stream and not (loop.last and add_generation_prompt) -%}{{ '<|im_end|>\\n' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and (messages | length == 0 or messages[-1]['role'] not in stream) -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def add_action_tokens(tokenizer: Any, model: Any | None = None) -> int:
    """Add the ten tag strings (upstream order) as tokens; resize `model`'s embeddings to the new vocabulary.

    Idempotent: tags already in the vocabulary are left alone. Returns how many tokens were added. The tags are
    added as normal (not special) tokens, so decoding with `skip_special_tokens=True` keeps them — they are the
    model's output, not control tokens.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    pieces = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in missing}  # before they are tokens
    added = tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing]) if missing else 0
    if model is not None:
        embeddings = model.get_input_embeddings().weight.shape[0]
        if embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        if added:
            init_from_pieces(model, {tokenizer.convert_tokens_to_ids(t): ids for t, ids in pieces.items()})
    return added


def init_from_pieces(model: Any, pieces: dict[int, list[int]]) -> None:
    """Start each new token's input (and untied output) embedding at the mean of the pieces its text had before.

    A tag then begins where the model already was when it read `<`, `Analyze`, `>`: a real base model keeps
    writing the tags it knows as text, and a few hundred LoRA steps suffice to make them one token each.
    """
    import torch

    tables = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != tables[0].weight.data_ptr():
        tables.append(output)
    with torch.no_grad():
        for table in tables:
            weight = table.weight
            for new_id, ids in pieces.items():
                ids = [i for i in ids if 0 <= i < weight.shape[0] and i != new_id]
                if ids and new_id < weight.shape[0]:
                    weight[new_id] = weight[ids].mean(dim=0)


def install_chat_template(tokenizer: Any, model: Any | None = None) -> None:
    """Give the tokenizer the deepanalyze ChatML template; add the ChatML markers if the vocabulary lacks them.

    The end-of-turn marker `<|im_end|>` becomes the EOS token, so generation stops where a turn ends.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in CHATML_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = DEEPANALYZE_CHAT_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
    if model is not None:
        if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.config.eos_token_id = eos_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = eos_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id


def prepare_tokenizer_and_model(tokenizer: Any, model: Any | None = None, *, chat_template: str = "deepanalyze") -> None:
    """What every training entry point does first: tag tokens, and (unless `chat_template="keep"`) the template."""
    if chat_template not in ("deepanalyze", "keep"):
        raise ValueError(f"chat_template {chat_template!r}: expected 'deepanalyze' or 'keep'")
    add_action_tokens(tokenizer, model)
    if chat_template == "deepanalyze" or tokenizer.chat_template is None:
        install_chat_template(tokenizer, model)


__all__ = ["DEEPANALYZE_CHAT_TEMPLATE", "STREAM_ROLES", "add_action_tokens", "init_from_pieces", "install_chat_template",
           "prepare_tokenizer_and_model"]
