"""The refiner role's helpers: keyword vocabulary and sampling, reading traces out of replies."""

from __future__ import annotations

import pytest

from synth.protocol import parse, validate
from synth.refiner import (
    copies_skeleton,
    fallback_trace,
    final_answer_of,
    keyword_vocabulary,
    load_keywords,
    missing_keywords,
    sample_keywords,
    trace_from_reply,
)


def test_keyword_sampling_is_seeded_and_per_item():
    vocabulary = keyword_vocabulary(load_keywords())
    assert len(vocabulary) >= 30
    a = sample_keywords(vocabulary, 3, seed=1, item_id="nt-1")
    assert a == sample_keywords(vocabulary, 3, seed=1, item_id="nt-1") and len(set(a)) == 3
    assert any(sample_keywords(vocabulary, 3, seed=1, item_id=f"nt-{i}") != a for i in range(2, 6))
    assert any(sample_keywords(vocabulary, 3, seed=s, item_id="nt-1") != a for s in range(2, 6))
    assert sample_keywords(vocabulary, 0, seed=1, item_id="x") == []


def test_user_keywords_file_overrides_and_bad_one_is_reported(tmp_path):
    (tmp_path / "keywords.yaml").write_text("groups:\n  mine: ['Look again']\n")
    assert load_keywords(tmp_path) == {"mine": ["Look again"]}
    (tmp_path / "keywords.yaml").write_text("groups: [1, 2]\n")
    with pytest.raises(ValueError, match="keywords.yaml: expected `groups:`"):
        load_keywords(tmp_path)


def test_trace_helpers():
    assert final_answer_of("step\nFinal answer: **Bees**") == "Bees"
    assert final_answer_of("just 3") == "just 3"
    assert trace_from_reply("<Analyze>a</Analyze><Answer>x</Answer>") is None
    trace = trace_from_reply("intro\n<Analyze>a</Analyze>\n<Understand>u</Understand>\n<Answer>x</Answer>\nbye")
    assert validate(trace, model_written=True) == []
    fb = fallback_trace("I count the rows of the table. Two of them exceed five wins. So the count is two.\n"
                        "The result is Final answer: 2.", "2")
    assert validate(fb, model_written=True) == [] and parse(fb).answer.strip() == "2"
    assert "The result is" not in fb and "<Understand>\nSo the count is two.\n</Understand>" in fb
    assert final_answer_of("so... Final answer: Canada.") == "Canada"
    assert copies_skeleton("<Analyze>\nThe improved reasoning, using every phrase above.\n</Analyze>")
    assert missing_keywords("… let's take a closer look at the TABLE …", ["Let's take a closer look at the table"]) == []
    assert missing_keywords("nothing here", ["What happens at the boundaries?"]) == ["What happens at the boundaries?"]
