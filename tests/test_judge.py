"""Judged items show their evidence: the quote must occur in the trajectory, the reason must say more than the
question; otherwise the item is retried once and then not judged (it neither passes nor blocks)."""

from __future__ import annotations

import json

import pytest

from synth.checklist import ChecklistError, JudgedItem, RuleContext, evaluate
from synth.checklist.judge import parse_judge_reply, quote_occurs, restates_question, split_votes
from synth.sandbox.base import ExecResult
from synth.trajectory import Trajectory, Turn

ITEMS = [JudgedItem(id="numbers_from_outputs",
                    question="Is every number in the answer exactly what an <Execute> output shows?"),
         JudgedItem(id="answers_the_question", question="Does the answer directly answer the question that was asked?")]


def _ctx() -> RuleContext:
    turns = [Turn(text="<Analyze>Mean rating.</Analyze>\n<Code>\nprint(df.rate_marriage.mean())\n</Code>",
                  code="print(df.rate_marriage.mean())", result=ExecResult(stdout="4.11\n")),
             Turn(text="<Answer>The average rate_marriage is 4.11.</Answer>")]
    return RuleContext(trajectory=Trajectory(prompt="# Instruction\nWhat is the average rate_marriage?", turns=turns,
                                             answer="The average rate_marriage is 4.11."))


def _reply(*answers: dict) -> str:
    return json.dumps({"answers": list(answers)})


GOOD = _reply({"id": "numbers_from_outputs", "quote": "4.11", "pass": True, "reason": "Execute prints 4.11, answer says 4.11"},
              {"id": "answers_the_question", "quote": "The average rate_marriage is 4.11.", "pass": True,
               "reason": "states the mean rating value"})


async def test_a_quoted_verdict_counts_and_keeps_its_evidence(scripted_model):
    model = scripted_model([GOOD], strict=True)
    verdict = await evaluate(ITEMS, _ctx(), model)
    assert len(model.calls) == 1
    item = verdict.item("answers_the_question")
    assert item.passed and not item.not_judged and item.evidence == "The average rate_marriage is 4.11."
    assert verdict.decision == "accept" and verdict.score == 1.0
    prompt = model.calls[0]["messages"]
    assert '"quote"' in prompt[0]["content"] and '"quote"' in prompt[-1]["content"]  # the role asks for quotes


async def test_a_quote_that_is_not_in_the_trajectory_is_retried_then_not_judged(scripted_model):
    invented = _reply({"id": "numbers_from_outputs", "quote": "mean rate_marriage: 4.11 (n=6366)", "pass": True,
                       "reason": "Execute output shows 4.11 as the answer says"},
                      {"id": "answers_the_question", "quote": "The average rate_marriage is 4.11.", "pass": True,
                       "reason": "states the mean rating value"})
    model = scripted_model([invented, invented], strict=True)
    verdict = await evaluate(ITEMS, _ctx(), model)
    assert len(model.calls) == 2  # retried once
    repair = model.calls[1]["messages"][-1]["content"]
    assert "numbers_from_outputs" in repair and "not in the trajectory" in repair
    assert "answers_the_question" not in repair  # only the item without evidence is asked again
    item = verdict.item("numbers_from_outputs")
    assert item.not_judged and not item.passed and "not in the trajectory" in item.reason
    assert verdict.item("answers_the_question").passed
    # no verdict neither passes nor blocks: the decision rests on the item that was judged
    assert verdict.decision == "accept" and verdict.score == 1.0 and "numbers_from_outputs" not in verdict.feedback


async def test_a_reason_that_copies_the_question_is_no_verdict(scripted_model):
    copied = _reply({"id": "numbers_from_outputs", "quote": "4.11", "pass": True,
                     "reason": "Every number in the answer is exactly what an Execute output shows."},
                    {"id": "answers_the_question", "quote": "The average rate_marriage is 4.11.", "pass": False,
                     "reason": "The answer does not directly answer the question asked."})
    model = scripted_model([copied, GOOD], strict=True)
    verdict = await evaluate(ITEMS, _ctx(), model)
    assert "restates the question" in model.calls[1]["messages"][-1]["content"]
    assert [(v.id, v.passed, v.not_judged) for v in verdict.items] == [
        ("numbers_from_outputs", True, False), ("answers_the_question", True, False)]  # the retry answered properly


async def test_copying_twice_leaves_the_items_not_judged(scripted_model):
    copied = _reply({"id": "numbers_from_outputs", "quote": "", "pass": True, "reason": "Yes, they are."},
                    {"id": "answers_the_question", "quote": "Does the answer directly answer the question", "pass": True,
                     "reason": "It directly answers the question that was asked."})
    model = scripted_model([copied, copied], strict=True)
    verdict = await evaluate(ITEMS, _ctx(), model)
    reasons = {v.id: v.reason for v in verdict.items}
    assert all(v.not_judged for v in verdict.items)
    assert "quoted no evidence" in reasons["numbers_from_outputs"]
    assert "not in the trajectory" in reasons["answers_the_question"]  # the question is not part of the trajectory


async def test_a_failing_verdict_with_evidence_blocks(scripted_model):
    failing = _reply({"id": "numbers_from_outputs", "quote": "4.11", "pass": False,
                      "reason": "printed 4.11 is rounded, raw value differs"},
                     {"id": "answers_the_question", "quote": "The average rate_marriage is 4.11.", "pass": True,
                      "reason": "gives the mean rating value"})
    verdict = await evaluate(ITEMS, _ctx(), scripted_model([failing], strict=True))
    assert verdict.decision == "revise" and verdict.score == 0.5
    assert "raw value differs" in verdict.feedback


async def test_garbage_and_missing_verdicts_are_not_judged(scripted_model):
    verdict = await evaluate(ITEMS, _ctx(), scripted_model(["I think it is fine.", "Still no JSON."], strict=True))
    assert all(v.not_judged and "not valid JSON" in v.reason for v in verdict.items)
    partial = _reply({"id": "numbers_from_outputs", "quote": "4.11", "pass": True,
                      "reason": "Execute prints 4.11, answer says 4.11"})
    verdict = await evaluate(ITEMS, _ctx(), scripted_model([partial, partial], strict=True))
    assert verdict.item("numbers_from_outputs").passed
    assert verdict.item("answers_the_question").reason == "judge gave no verdict"
    assert verdict.item("answers_the_question").not_judged


async def test_votes_take_the_majority(scripted_model):
    def vote(passed: bool) -> str:
        return _reply({"id": "numbers_from_outputs", "quote": "4.11", "pass": passed,
                       "reason": "Execute prints 4.11 and answer copies it" if passed else "answer rounds 4.114 wrongly"},
                      {"id": "answers_the_question", "quote": "The average rate_marriage is 4.11.", "pass": True,
                       "reason": "states the mean rating value"})

    replies = {"1": vote(True), "2": vote(False), "3": vote(True)}

    def reply(messages):  # each vote is a distinct request (a response cache must not merge them)
        text = messages[-1]["content"]
        return replies["2" if "review 2 of 3" in text else "3" if "review 3 of 3" in text else "1"]

    model = scripted_model([reply], strict=False)
    verdict = await evaluate(ITEMS, _ctx(), model, votes=3)
    assert len(model.calls) == 3 and all(c["temperature"] >= 0.7 for c in model.calls)
    item = verdict.item("numbers_from_outputs")
    assert item.passed and "2 pass, 1 fail of 3 votes" in item.reason
    even = scripted_model([lambda m: vote("review 2 of 2" in m[-1]["content"])])
    split = await evaluate(ITEMS, _ctx(), even, votes=2)
    assert split.item("numbers_from_outputs").not_judged and "no majority" in split.item("numbers_from_outputs").reason


def test_split_votes_from_a_model_spec():
    assert split_votes("embedded:0.5b?votes=3") == ("embedded:0.5b", 3)
    assert split_votes("openai:gpt-4o?votes=5&rpm=60") == ("openai:gpt-4o?rpm=60", 5)
    assert split_votes("openai:gpt-4o?rpm=60") == ("openai:gpt-4o?rpm=60", 1)
    assert split_votes(None) == (None, 1)
    with pytest.raises(ChecklistError, match="whole number"):
        split_votes("embedded?votes=many")


def test_quote_and_restatement_checks():
    text = "<Execute>\n   species  mean\n0  Adelie  38.79\n</Execute>\n<Answer>Adelie: 38.79</Answer>"
    assert quote_occurs("Adelie  38.79", text) and quote_occurs("adelie 38.79", text)  # whitespace and case
    assert quote_occurs("species ... Adelie", text)  # an elision, pieces in order
    assert not quote_occurs("Gentoo 47.5", text) and not quote_occurs("38", text)  # too short to quote anything
    question = "Is every number in the answer exactly what an <Execute> output shows?"
    assert restates_question("Every number in the answer is what the Execute output shows.", question)
    assert not restates_question("Execute prints 38.79, answer says 38.79", question)


def test_parse_reads_quotes_in_every_form():
    verdicts, missing = parse_judge_reply(GOOD, ["numbers_from_outputs", "answers_the_question"])
    assert verdicts["numbers_from_outputs"].quote == "4.11" and not missing
    cut = '{"answers": [{"id": "a", "quote": "x = 1", "pass": true, "reason": "ok"}, {"id": "b", "quote": "y'
    verdicts, missing = parse_judge_reply(cut, ["a", "b"])
    assert verdicts["a"].quote == "x = 1" and missing == ["b"]
