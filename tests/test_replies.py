"""Reading JSON out of model replies (synth/llm/replies.py)."""

from __future__ import annotations

import pytest

from synth.llm.replies import first_json_object, json_objects, json_values


def test_first_json_object_is_lenient() -> None:
    assert first_json_object('x {"a": 1} trailing }') == {"a": 1}
    assert first_json_object('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        first_json_object("[1, 2]")


def test_fenced_json_comes_first_and_arrays_only_when_asked() -> None:
    text = 'prose {"b": 2}\n```json\n{"a": 1}\n```'
    assert list(json_values(text)) == [{"a": 1}, {"b": 2}, {"a": 1}]
    assert json_objects(text) == [{"a": 1}, {"b": 2}]
    assert list(json_values("[1, 2]", arrays=True)) == [[1, 2]]


def test_a_reply_cut_inside_a_list_yields_no_element_when_inner_is_off() -> None:
    cut = '{"answers": [{"id": "a", "pass": true}, {"id": "b", "pa'
    assert list(json_values(cut, inner=False)) == []
    assert {"id": "a", "pass": True} in list(json_values(cut))
