"""Protocol compliance of raw replies (train.eval.compliance) and the figures the eval summary reports."""

from __future__ import annotations

import asyncio

import pytest

from doubles import ScriptedChatModel
from train.eval.compliance import RecordingModel, reply_complies, summarize_compliance

CODE = "<Analyze>Load it.</Analyze>\n<Code>\n```python\nprint(1)\n```\n</Code>"


@pytest.mark.parametrize("reply", [
    CODE,
    CODE[: -len("</Code>")],  # the engine cut the stop string: still a complete Code action
    "<Understand>It printed 1.</Understand>\n<Answer>1</Answer>",  # a continuation need not open with Analyze
    "<Analyze>Nothing to run.</Analyze>\n<Answer>\nThe answer is 2.\n</Answer>\n",
])
def test_replies_in_the_five_action_format_comply(reply):
    assert reply_complies(reply)


@pytest.mark.parametrize("reply", [
    "",  # empty
    "The mean is 3.",  # no tags at all
    "Sure! <Analyze>Load it.</Analyze>",  # text outside the tags
    "```python\nprint(1)\n```",  # code without <Code>
    "<Analyze>Load it.\n<Answer>3</Answer>",  # unclosed Analyze
    CODE + "\n<Execute>\n1\n</Execute>",  # invented output
    "<Answer>3</Answer> and some more words",  # content after the answer
    "<Analyze>plan <Code>x</Code></Analyze>",  # nested tags
])
def test_malformed_replies_do_not(reply):
    assert not reply_complies(reply)


def test_recording_model_counts_rounds_and_compliance():
    model = ScriptedChatModel([CODE, "no tags here", "<Answer>2</Answer>"], name="m")
    recorder = RecordingModel(model)

    async def three():
        for _ in range(3):
            await recorder.chat([{"role": "user", "content": "q"}])

    asyncio.run(three())
    assert recorder.name == "m" and recorder.figures() == {"replies": 3, "compliant_replies": 2}
    records = [{"replies": 3, "compliant_replies": 2, "turns": 2, "stop_reason": "answer"},
               {"replies": 1, "compliant_replies": 0, "turns": 0, "stop_reason": "max_rounds"},
               {"status": "error"}]  # an old record without the figures is left out
    figures = summarize_compliance(records)
    assert figures == {"compliance": 0.5, "mean_rounds": 2.0, "mean_turns": 1.0, "answered": 0.5}
