from __future__ import annotations

import asyncio

import pytest
from doubles import ScriptedChatModel

from synth.matchers import (
    MatcherError,
    answer_candidates,
    exact_match,
    match_answer,
    match_rules,
    numeric_match,
    parse_chain,
    reference_values,
    wikitq_match,
    wikitq_normalize,
)


@pytest.mark.parametrize("raw,expected", [
    ("Andrew Bertie.", "andrew bertie"),
    ("  Hello   World ", "hello world"),
    ("Café Müller", "cafe muller"),
    ("“Quoted”", "quoted"),
    ('"Run"', "run"),
    ("Mount Mercy University (Iowa)", "mount mercy university"),
    ("Sedona[1]", "sedona"),
    ("1990–1995", "1990-1995"),
    ("(only parentheses)", "(only parentheses)"),
])
def test_wikitq_normalize_follows_the_official_evaluator(raw, expected):
    assert wikitq_normalize(raw) == expected


@pytest.mark.parametrize("answer,reference", [
    ("1000", "1,000"),
    ("1,000", "1000"),
    ("12,467", "12467"),
    ("3.0", "3"),
    ("ANDREW BERTIE", "Andrew Bertie"),
    ("Andrew Bertie.", "Andrew Bertie"),
    ("January 5, 2010", "2010-01-05"),
    ("5 January 2010", "2010-01-05"),
    ("2010-01-05", "January 5, 2010"),
    ("June 1999", "1999-06-XX"),
    ("1993", "1993-xx-xx"),
    ("Canada (CAN)|Russia (RUS)|Germany (GER)", ["Russia (RUS)", "Canada (CAN)", "Germany (GER)"]),
    ("Russia, Canada and Germany", "Germany|Russia|Canada"),
    ("49.90%", "49.90%"),
])
def test_wikitq_denotation_matches(answer, reference):
    assert wikitq_match(answer, reference)


@pytest.mark.parametrize("answer,reference", [
    ("1001", "1,000"),
    ("January 6, 2010", "2010-01-05"),
    ("1994", "1993-xx-xx"),
    ("Russia|Canada", "Russia|Canada|Germany"),  # list answers must have the same size
    ("Russia|Canada|Canada", "Russia|Canada|Germany"),
    ("Andrew", "Andrew Bertie"),
    ("", "x"),
])
def test_wikitq_denotation_rejects(answer, reference):
    assert not wikitq_match(answer, reference)


def test_exact_and_numeric_matchers():
    assert exact_match("The Bees!", "bees")
    assert exact_match("b|a", ["a", "b"]) and not exact_match("a", ["a", "b"])
    assert numeric_match("the mean is 38.0 units", "38")
    assert numeric_match("about 4,638.25 in total", "4638.25")
    assert numeric_match("values 2 and 7", "7|2")
    assert not numeric_match("the mean is 39", "38")
    assert not numeric_match("Bees", "Bees")  # a non-numeric reference is not this matcher's business


def test_reference_values_and_candidates():
    assert reference_values("a|b") == ["a", "b"]
    assert reference_values('["x", 2]') == ["x", "2"]
    assert reference_values(["x"]) == ["x"]
    assert answer_candidates("I counted.\nThe answer is **3**.")[0] == "3"
    assert "Bees" in answer_candidates("Final answer: Bees")


def test_chain_order_and_prose_answers():
    result = match_rules("After checking the rows, the final answer is 2,000.", "2000")
    assert result.matched and result.method in ("exact", "wikitq")
    assert match_rules("There are 3 teams above 5 wins, namely Ants and Cats.", "3", ["contains"]).matched
    assert not match_rules("There are 4 teams", "3").matched
    assert not match_rules(None, "3").matched
    assert match_rules("three", "3").method == "none"


def test_parse_chain():
    assert parse_chain("auto") == ["exact", "wikitq", "numeric", "contains"]
    assert parse_chain("wikitq, judge") == ["wikitq", "judge"]
    with pytest.raises(MatcherError, match="unknown matcher 'fuzzy'"):
        parse_chain("wikitq,fuzzy")
    with pytest.raises(MatcherError, match="empty"):
        parse_chain(",")


def test_llm_judge_is_the_last_resort():
    judge = ScriptedChatModel(['{"match": true, "reason": "three is 3"}'])
    result = asyncio.run(match_answer("three", "3", ["wikitq", "judge"], judge_model=judge, question="How many?"))
    assert result.matched and result.method == "judge" and result.detail == "three is 3"
    prompt = judge.calls[0]["messages"][-1]["content"]
    assert "How many?" in prompt and "three" in prompt and "# Reference answer\n3" in prompt
    # Rules first: no judge call when a rule already matches.
    judge2 = ScriptedChatModel(['{"match": false}'])
    assert asyncio.run(match_answer("3", "3", ["wikitq", "judge"], judge_model=judge2)).method == "wikitq"
    assert judge2.calls == []


def test_llm_judge_unreadable_or_negative_reply_does_not_match():
    for reply in ("I think so", '{"match": false, "reason": "different"}'):
        judge = ScriptedChatModel([reply])
        assert not asyncio.run(match_answer("four", "3", ["judge"], judge_model=judge)).matched


def test_answer_fields_read_each_fields_rounding_from_its_brackets_its_clause_or_the_one_stated():
    from synth.matchers import answer_fields

    def fields(task):
        return [(f.name, f.placeholder, f.decimals) for f in answer_fields(task)]

    assert fields("What is the mean? Answer in plain words.") == []
    assert fields("Give it as @name[value], e.g. @mean[1.23].") == []  # the notation, not a requested field
    assert fields("Format: @m[mean], @s[std] where both are rounded to two decimal places.") == [
        ("m", "mean", 2), ("s", "std", 2)]
    assert fields("@r[the coefficient, rounded to two decimal places] @p[the p-value, rounded to 3 decimal places]"
                  " @kind[positive or negative]") == [
        ("r", "the coefficient, rounded to two decimal places", 2),
        ("p", "the p-value, rounded to 3 decimal places", 3), ("kind", "positive or negative", None)]
    assert fields('@r[r_value]\n@p[p_value]\nwhere "r_value" is rounded to two decimal places.\n'
                  'where "p_value" is rounded to four decimal places.') == [("r", "r_value", 2), ("p", "p_value", 4)]
    assert fields("@n[count] where count is an integer") == [("n", "count", None)]
    assert fields("@r[r] rounded to two decimal places, @p[p] rounded to four decimal places.") == [
        ("r", "r", None), ("p", "p", None)]  # two roundings, neither tied to a field: none is assumed
