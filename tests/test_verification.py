"""Verified data: the verifier's independent reference gates closed-form answers (scripted models, REAL sandbox,
REAL SQLite checkpointer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from doubles import ScriptedChatModel
from test_interaction_graph import ANSWER, GOOD_CODE, Env, judge_all, q

TASK = {"instruction": "Sum amount per region in sales.csv and name the region with the largest total.",
        "files": ["sales.csv"], "deliverables": [], "reference_answer": None, "checklist": []}
WRONG = "<Understand>south is largest.</Understand>\n<Answer>south (5)</Answer>"


def program(answer: str) -> str:
    return ("```python\nimport pandas as pd\ndf = pd.read_csv('sales.csv')\n"
            f"print(df.groupby('region')['amount'].sum())\nprint('ANSWER:', {answer!r})\n```")


def _env(tmp_path: Path, solver: list[str], verifier: list[str], **options) -> Env:
    env = Env(tmp_path, questioner=q(TASK), solver=ScriptedChatModel(solver, name="solver"),
              inspector=ScriptedChatModel([judge_all(True)], name="inspector"), **options)
    env.verifier = ScriptedChatModel(verifier, name="verifier", strict=True)
    env.deps.verifier_model = env.verifier
    return env


def _feedback_sections(env: Env) -> list[str]:
    sections = []
    for call in env.solver.calls:
        for message in call["messages"]:
            if "# Feedback on a previous attempt" in message["content"]:
                sections.append(message["content"].split("# Feedback on a previous attempt", 1)[1])
    return list(dict.fromkeys(sections))  # every later call of a solve carries the same opening message


async def test_verifier_agrees_and_the_record_carries_the_program_verified_reference(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, ANSWER], [program("north")])
    state = await env.run()
    assert state["outcome"] == "accepted", state["verdicts"][-1]
    [record] = env.records()
    assert record["reference"]["value"] == "north" and record["reference"]["verified_by"] == "program"
    assert "print('ANSWER:', 'north')" in record["reference"]["program"] and "ANSWER: north" in record["reference"]["output"]
    assert record["reward_spec"]["method"] == "qa" and record["reward_spec"]["ground_truth"] == "north"
    assert record["models"]["verifier"] == "verifier"
    items = {i["id"]: i for i in record["verdict"]["items"]}
    assert items["verified_answer"]["passed"] and items["verified_answer"]["required"]
    assert items["reads_the_data"]["passed"]
    # The verifier saw the task and the data description, never the solver's work.
    seen = json.dumps(env.verifier.calls[0]["messages"])
    assert "Sum amount per region" in seen and "<Execute>" not in seen and "north (30)" not in seen


async def test_disagreement_revises_without_ever_showing_the_reference(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, WRONG, GOOD_CODE, ANSWER], [program("north")])
    state = await env.run()
    assert [v["decision"] for v in state["verdicts"]] == ["revise", "accept"]
    [feedback] = _feedback_sections(env)
    assert "independent computation" in feedback
    assert "north" not in feedback and "north" not in state["feedback"]  # never the value, in any solver message
    assert env.records()[0]["reference"]["verified_by"] == "program"


async def test_tiebreak_sides_with_the_solver(tmp_path: Path) -> None:
    # The first program is wrong (says south); the solver says north twice; a second program agrees with it.
    env = _env(tmp_path, [GOOD_CODE, ANSWER, GOOD_CODE, ANSWER], [program("south"), program("north")])
    state = await env.run()
    assert state["outcome"] == "accepted"
    assert state["tiebreak"]["sided_with"] == "solver"
    [record] = env.records()
    assert record["reference"]["verified_by"] == "consensus" and record["reference"]["value"] == "north"
    assert all("south" not in f for f in _feedback_sections(env))
    assert len(env.verifier.calls) == 2 and "differently" in env.verifier.calls[1]["messages"][-1]["content"]


async def test_tiebreak_sides_with_the_reference_and_the_episode_is_rejected(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, WRONG, GOOD_CODE, WRONG], [program("north"), program("north")])
    state = await env.run()
    assert state["outcome"] == "rejected" and state["tiebreak"]["sided_with"] == "reference"
    [row] = env.rejected()
    assert row["reference"]["value"] == "north" and row["tiebreak"]["sided_with"] == "reference"
    assert env.records() == []


async def test_a_judged_item_the_judge_cannot_back_does_not_stop_the_tiebreak(tmp_path: Path) -> None:
    def unbacked(messages) -> str:  # quotes text that is nowhere in the trajectory: "not judged", blocks nothing
        ids = re.findall(r"- id (\S+):", messages[-1]["content"])
        return json.dumps({"answers": [{"id": i, "quote": "words that are nowhere in the work", "pass": False,
                                        "reason": "no"} for i in ids]})

    env = _env(tmp_path, [GOOD_CODE, ANSWER, GOOD_CODE, ANSWER], [program("south"), program("north")])
    env.deps.inspector_model = ScriptedChatModel([unbacked], name="inspector")
    state = await env.run()
    judged = [i for i in state["verdicts"][0]["items"] if i.get("not_judged")]
    assert judged and all(i["required"] for i in judged)  # required judged items, no verdict on any
    assert state["tiebreak"]["sided_with"] == "solver" and state["outcome"] == "accepted"


async def test_open_ended_task_is_not_verified_and_keeps_its_judged_items(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, ANSWER], ["OPEN"])
    state = await env.run()
    assert state["outcome"] == "accepted" and state["closed_form"] is False
    [record] = env.records()
    assert record["reference"] is None and record["reward_spec"]["method"] == "datatask"
    ids = {i["id"] for i in record["verdict"]["items"]}
    assert "verified_answer" not in ids and "supported" in ids


async def test_a_verifier_that_reads_no_file_makes_the_task_answerable_without_the_data(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, ANSWER], ["```python\nprint('ANSWER:', 'north')\n```"])
    state = await env.run()
    assert state["outcome"] == "rejected" and state["reason"].startswith("answerable without the data")
    assert env.solver.calls == []  # dropped before anyone solved it
    assert env.rejected()[0]["reason"].startswith("answerable without the data")


async def test_an_unverifiable_closed_form_task_is_kept_unverified_never_as_qa(tmp_path: Path) -> None:
    failing = "```python\nimport pandas as pd\nprint(pd.read_csv('sales.csv')['no_such'].sum())\n```"
    env = _env(tmp_path, [GOOD_CODE, ANSWER], [failing, failing])
    state = await env.run()
    assert state["outcome"] == "accepted"
    assert "KeyError" in env.verifier.calls[1]["messages"][-1]["content"]  # one repair, shown the error
    [record] = env.records()
    assert record["reference"]["verified_by"] == "none" and record["reward_spec"]["method"] == "datatask"
    assert record["reward_spec"]["ground_truth"] is None


async def test_solves_k_measures_the_solve_rate(tmp_path: Path) -> None:
    # Three solves run at once: the scripted solver answers by what it was sent, not by call order.
    by_turn = lambda messages: ANSWER if "<Execute>" in messages[-1]["content"] else GOOD_CODE  # noqa: E731
    env = _env(tmp_path, [by_turn], [program("north")])
    env.deps.solves = 3
    state = await env.run()
    assert state["outcome"] == "accepted" and len(state["solves"]) == 2
    assert env.records()[0]["solves"] == {"k": 3, "agreeing": 3, "rate": 1.0}


async def test_user_task_skips_the_questioner_and_a_given_reference_gates_the_answer(tmp_path: Path) -> None:
    env = _env(tmp_path, [GOOD_CODE, WRONG, GOOD_CODE, ANSWER], [])
    env.episode = {**env.episode, "episode_id": "task-1", "task": {
        "id": "q-7", "instruction": TASK["instruction"], "files": ["sales.csv"], "reference": "north",
        "category": "data_analysis", "difficulty": "easy"}}
    state = await env.run()
    assert env.questioner.calls == [] and env.verifier.calls == []  # given references need no program
    assert [v["decision"] for v in state["verdicts"]] == ["revise", "accept"]
    assert all("north" not in f for f in _feedback_sections(env))
    [record] = env.records()
    assert record["task_id"] == "q-7" and record["reference"]["verified_by"] == "given"
    assert "questioner" not in record["models"]


def test_the_printed_answer_is_the_last_answer_line_else_the_named_values() -> None:
    from synth.verifier import printed_answer

    assert printed_answer("x\nANSWER: 3.5\nANSWER: 4.11\n") == "4.11"
    # a program that printed the task's @name[value] format instead of the ANSWER line (a later name wins)
    assert printed_answer("@mean[ 1.5 ]\n@std[0.2] @mean[1.25]\n") == "@mean[1.25], @std[0.2]"
    assert printed_answer("ANSWER:   \n") is None and printed_answer("nothing here") is None
