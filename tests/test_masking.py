from __future__ import annotations

import pytest

from synth.dataset.export import sft_row
from synth.dataset.record import Record
from synth.protocol import split_for_masking
from train.masking import IGNORE, MaskingError, build_example, tokenize_row
from train.tiny import build_tiny_tokenizer
from train.tokens import add_action_tokens, install_chat_template
from train_helpers import WITH_ERROR, agent_trajectory, write_sources


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tiny_tokenizer(vocab_size=512)
    add_action_tokens(tok)
    install_chat_template(tok)
    return tok


@pytest.fixture(scope="module")
def row(tmp_path_factory):
    sources = write_sources(tmp_path_factory.mktemp("sources"))
    trajectory = agent_trajectory(sources, WITH_ERROR, "Write the total amount per region to by_region.csv.")
    assert len(trajectory.results()) == 2 and not trajectory.results()[0].ok  # a real KeyError, then a real run
    return sft_row(Record.from_trajectory(trajectory, category="data_preparation", sources=[]))


def test_label_mask_is_exactly_the_non_execute_assistant_tokens(tokenizer, row):
    example = build_example(tokenizer, row["messages"], execute_spans=row["execute_spans"], check_boundaries=True)
    assistant = row["messages"][-1]["content"]
    full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    full = full[: full.rindex("<|im_end|>") + len("<|im_end|>")]  # the sequence ends at EOS
    # The ids are those of the whole rendered conversation, token for token.
    assert example.input_ids == tokenizer(full, add_special_tokens=False)["input_ids"]

    trainable_text = "".join(piece for piece, keep in split_for_masking(assistant) if keep) + "<|im_end|>"
    expected = [t for piece, keep in split_for_masking(assistant) if keep
                for t in tokenizer(piece, add_special_tokens=False)["input_ids"]]
    expected.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    kept = [label for label in example.labels if label != IGNORE]
    assert kept == expected
    assert tokenizer.decode(kept) == trainable_text
    assert all(label == IGNORE for label in example.labels[: example.prompt_length])

    # Every Execute token (tags and output) is masked, and both executions are really there.
    open_id, close_id = tokenizer.convert_tokens_to_ids("<Execute>"), tokenizer.convert_tokens_to_ids("</Execute>")
    inside = False
    n_open = 0
    for token, label in zip(example.input_ids, example.labels):
        if token == open_id:
            inside, n_open = True, n_open + 1
        if inside:
            assert label == IGNORE
        if token == close_id:
            inside = False
    assert n_open == 2 and "KeyError" in tokenizer.decode(example.input_ids)


def test_completion_mask_matches_labels_and_spans_default_to_the_parser(tokenizer, row):
    given = tokenize_row(tokenizer, row)
    parsed = build_example(tokenizer, row["messages"])  # spans found by synth.protocol
    assert given["labels"] == parsed.labels
    mask = parsed.completion_mask
    assert mask == [0 if label == IGNORE else 1 for label in parsed.labels[parsed.prompt_length:]]
    assert 0 in mask and mask[-1] == 1  # Execute masked; the closing <|im_end|> is learned
    assert parsed.input_ids[-1] == tokenizer.eos_token_id
    open_turn = build_example(tokenizer, row["messages"], closed=False)
    assert open_turn.input_ids[-1] != tokenizer.eos_token_id


def test_bad_spans_and_templates_are_clear_errors(tokenizer, row):
    with pytest.raises(MaskingError, match="does not start at an <Execute> tag"):
        build_example(tokenizer, row["messages"], execute_spans=[[0, 5]], where="row x")
    with pytest.raises(MaskingError, match="outside the assistant"):
        build_example(tokenizer, row["messages"], execute_spans=[[10, 10**6]])
    with pytest.raises(MaskingError, match="last message"):
        build_example(tokenizer, row["messages"][:1])
    stripping = build_tiny_tokenizer(vocab_size=300)
    stripping.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] | trim }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(MaskingError, match="differently|rewrites"):
        build_example(stripping, [{"role": "user", "content": "q"}, {"role": "assistant", "content": " a "}])
