from __future__ import annotations

import pytest

from synth.checklist import RuleContext
from synth.sandbox import get_sandbox
from synth.trajectory import Trajectory, Turn
from train.rewards import (RewardWeights, code_success_rate, judge_report, parse_report_scores, score_episode,
                           turns_score)
from train_helpers import CORRECT, WITH_ERROR, run_episode, write_sources

QA = {"method": "qa", "ground_truth": 60, "checklist": [{"id": "answered", "rule": "answer_present"}]}


def _answered(answer: str) -> Trajectory:
    text = f"<Analyze>Add them up.</Analyze>\n<Answer>{answer}</Answer>"
    return Trajectory(prompt="# Instruction\nWhat is the total amount?", turns=[Turn(text=text)], answer=answer)


async def test_malformed_trajectories_get_minus_one():
    no_answer = Trajectory(prompt="# Instruction\nq", turns=[Turn(text="<Analyze>thinking</Analyze>")],
                           stop_reason="max_rounds")
    stray = _answered("60")
    stray.turns[0].text = "So the answer is: <Answer>60</Answer>"
    for trajectory in (no_answer, stray):
        result = await score_episode(trajectory, QA)
        assert result.total == -1.0 and not result.well_formed and result.issues
    custom = await score_episode(no_answer, QA, weights=RewardWeights(malformed=-2.0))
    assert custom.total == -2.0


async def test_correct_answer_beats_wrong_answer():
    right = await score_episode(_answered("The total amount is 60."), QA)
    wrong = await score_episode(_answered("The total amount is 70."), QA)
    assert right.well_formed and wrong.well_formed
    assert right.accuracy == 1.0 and wrong.accuracy == 0.0
    assert right.total > wrong.total
    assert right.total == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)  # ½·(accuracy + interaction)


async def test_checklist_and_code_terms_read_the_real_sandbox(tmp_path):
    sources = write_sources(tmp_path / "src")
    spec = {"method": "datatask", "ground_truth": None, "checklist": [
        {"id": "made", "rule": "file_created", "params": {"glob": "by_region.csv"}},
        {"id": "other", "rule": "file_created", "params": {"glob": "missing.csv"}},
        {"id": "judged", "question": "Is it nice?"},  # judged items are the inspector's, not the reward's
    ]}
    sandbox = get_sandbox("local")
    with sandbox.open([sources / "sales.csv"]) as session:
        initial = session.snapshot()
        from synth.agent import AgentConfig, run_agent
        from doubles import ScriptedChatModel

        trajectory = await run_agent(ScriptedChatModel(WITH_ERROR), session, "Write totals per region.",
                                     config=AgentConfig(max_rounds=5, cell_timeout_s=30))
        ctx = RuleContext(trajectory=trajectory, workspace=session.workspace, state=session.snapshot(),
                          initial_state=initial)
        result = await score_episode(trajectory, spec, ctx=ctx)
    assert result.checklist == pytest.approx(0.5)
    assert result.code_success == pytest.approx(0.5) == code_success_rate(trajectory)
    assert result.accuracy == result.interaction == pytest.approx(0.5)
    assert any("other" in note for note in result.notes)


def test_report_scores_are_parsed_robustly():
    plain = '{"usefulness": 4, "richness": 3, "soundness": 5, "interpretability": 2, "readability": 4}'
    assert parse_report_scores(plain) == {"usefulness": 4, "richness": 3, "soundness": 5, "interpretability": 2,
                                          "readability": 4}
    fenced = ('Sure!\n```json\n{"Usefulness": "4/5", "RICHNESS": 3.5, "soundness": {"score": 5}, '
              '"interpretability": 9, "readability": "2"}\n```\nThanks')
    assert parse_report_scores(fenced) == {"usefulness": 4, "richness": 3.5, "soundness": 5,
                                           "interpretability": 5, "readability": 2}
    lines = "Usefulness: 4\n**Richness** - 3\nSoundness = 8/10\nInterpretability: 1/5\nReadability 5"
    scores = parse_report_scores(lines)
    assert scores is not None and scores["soundness"] == pytest.approx(1 + 4 * 0.8) and scores["readability"] == 5
    assert parse_report_scores('{"usefulness": 4, "richness": 3}') is None
    assert parse_report_scores("I cannot grade this.") is None


async def test_report_judge_retries_then_gives_up(scripted_model):
    good = '{"usefulness": 5, "richness": 5, "soundness": 5, "interpretability": 5, "readability": 5}'
    term, scores, note = await judge_report(scripted_model(["no idea", good]), "task", "report")
    assert term == 1.0 and scores["soundness"] == 5 and note == ""
    term, scores, note = await judge_report(scripted_model(["no idea"]), "task", "report")
    assert term is None and scores is None and "unreadable" in note


async def test_openresearch_combines_report_turns_and_code(tmp_path, scripted_model):
    sources = write_sources(tmp_path / "src")
    trajectory = await run_episode(sources, CORRECT, "Write a short report on sales.")
    judge = scripted_model(['{"usefulness": 3, "richness": 3, "soundness": 3, "interpretability": 3, '
                            '"readability": 3}'])
    spec = {"method": "openresearch", "ground_truth": None, "checklist": []}
    result = await score_episode(trajectory, spec, judge_model=judge)
    assert result.report == pytest.approx(0.5) and result.code_success == 1.0
    assert result.turns == pytest.approx(turns_score(trajectory)) == pytest.approx(0.2)
    assert result.total == pytest.approx((0.5 + 0.2 + 1.0) / 3)
    assert "# Report" in judge.calls[0]["messages"][0]["content"]
    no_judge = await score_episode(trajectory, spec)
    assert no_judge.report == 0.0 and any("judge" in n for n in no_judge.notes)
