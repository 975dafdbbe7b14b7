"""The interaction graph with scripted models, the REAL local sandbox and the REAL SQLite checkpointer."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from doubles import ScriptedChatModel

from synth.dataset.sink import RecordSink
from synth.graphs.interaction import EpisodeDeps, build_interaction_graph, run_episode
from synth.sampler import NearDuplicateIndex, plan_episodes
from synth.sandbox.local import LocalSandbox
from synth.sources import profile_all
from synth.sources.ref import SourceRef

CSV = "region,amount\nnorth,10\nsouth,5\nnorth,20\n"
CHECKLIST = """\
category: data_analysis
items:
  - rule: answer_present
  - rule: sources_unchanged
  - rule: execute_blocks_authentic
  - rule: no_model_written_execute
    params: {count_repaired: true}
  - id: supported
    question: Is the answer supported by the printed output?
"""
TASK = {
    "instruction": "Sum amount per region in sales.csv, save the sums to totals.csv and name the top region.",
    "files": ["sales.csv"],
    "deliverables": ["totals.csv"],
    "reference_answer": "north",
    "checklist": [{"question": "Does the answer name a region?"}],
}
GOOD_CODE = (
    "<Analyze>Sum per region.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
    "df = pd.read_csv('sales.csv')\nt = df.groupby('region')['amount'].sum()\n"
    "t.to_csv('totals.csv')\nprint(t.to_string())\n```\n</Code>"
)
NO_FILE_CODE = (
    "<Analyze>Sum per region.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
    "print(pd.read_csv('sales.csv').groupby('region')['amount'].sum().to_string())\n```\n</Code>"
)
ANSWER = "<Understand>north is largest.</Understand>\n<Answer>north (30)</Answer>"


def judge_all(passed: bool = True):
    """An inspector reply answering every question id in the prompt, quoting the agent's answer as evidence."""

    def reply(messages) -> str:
        prompt = messages[-1]["content"]
        ids = re.findall(r"- id (\S+):", prompt)
        answer = re.search(r"<Answer>(.*?)</Answer>", " ".join(m["content"] for m in messages), re.S)
        quote = answer.group(1).strip().splitlines()[0] if answer else ""
        return json.dumps({"answers": [{"id": i, "quote": quote, "pass": passed, "reason": f"{quote} is printed"}
                                       for i in ids]})

    return reply


class Env:
    def __init__(self, tmp_path: Path, *, questioner, solver, inspector, max_revisions: int = 1,
                 difficulty: str = "easy") -> None:
        self.tmp = tmp_path
        src = tmp_path / "src"
        src.mkdir()
        self.source_path = src / "sales.csv"
        self.source_path.write_text(CSV)
        self.source_hash = hashlib.sha256(CSV.encode()).hexdigest()
        checklists = tmp_path / "checklists"
        checklists.mkdir()
        (checklists / "data_analysis.yaml").write_text(CHECKLIST)
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.run_dir.chmod(0o755)
        tmp_path.chmod(0o755)
        self.questioner, self.solver, self.inspector = questioner, solver, inspector
        self.events: list[tuple[str, dict]] = []
        self.deps = EpisodeDeps(
            questioner_model=questioner, solver_model=solver, inspector_model=inspector,
            sandbox=LocalSandbox(),
            sources={"sales.csv": profile_all(self.source_path, use_cache=False)[0].model_copy(
                update={"path": str(self.source_path)})},
            sink=self.new_sink(), work_dir=self.run_dir / "work", max_rounds=4, max_revisions=max_revisions,
            checklists_dir=checklists, on_event=lambda kind, payload: self.events.append((kind, payload)),
        )
        self.episode = plan_episodes([SourceRef(name="sales.csv", sha256=self.source_hash)], ["data_analysis"],
                                     [difficulty], limit=1)[0].to_dict()

    def new_sink(self) -> RecordSink:
        return RecordSink(self.run_dir / "records.jsonl", self.run_dir / "rejected.jsonl")

    async def run(self, **compile_options: Any) -> dict[str, Any]:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(self.run_dir / "checkpoints.sqlite")) as saver:
            compiled = build_interaction_graph().compile(checkpointer=saver, **compile_options)
            return await run_episode(compiled, self.episode, self.deps)

    def records(self) -> list[dict]:
        return _jsonl(self.run_dir / "records.jsonl")

    def rejected(self) -> list[dict]:
        return _jsonl(self.run_dir / "rejected.jsonl")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def q(task: dict | None = None) -> ScriptedChatModel:
    return ScriptedChatModel([json.dumps(task or TASK)], name="questioner")


async def test_accept_path_emits_a_record_with_real_execute_output(tmp_path: Path) -> None:
    env = Env(tmp_path, questioner=q(), solver=ScriptedChatModel([GOOD_CODE, ANSWER], name="solver"),
              inspector=ScriptedChatModel([judge_all(True)], name="inspector"))
    state = await env.run()
    assert state["outcome"] == "accepted", state.get("verdicts")
    assert state["verdicts"][-1]["decision"] == "accept"
    [record] = env.records()
    assert record["id"] == state["record_id"]
    text = record["messages"][-1]["content"]
    assert "<Execute>\nregion\nnorth    30\nsouth     5\n</Execute>" in text
    item_ids = {i["id"] for i in state["verdicts"][-1]["items"]}
    assert {"deliverable_1", "sources_unchanged", "supported"} <= item_ids
    assert env.rejected() == []
    assert env.source_path.read_text() == CSV  # the source is never written
    assert not (env.run_dir / "work" / env.episode["episode_id"]).exists()  # workspace cleaned after emit
    # the solver never sees the reference answer
    assert all("north" not in m["content"] or "reference" not in m["content"]
               for call in env.solver.calls for m in call["messages"])
    assert state["usage"]["llm_calls"] == 1 + 2 + 1  # no verifier model: verification off


async def test_revise_then_accept_passes_feedback_to_the_solver(tmp_path: Path) -> None:
    solver = ScriptedChatModel([NO_FILE_CODE, ANSWER, GOOD_CODE, ANSWER], name="solver")
    env = Env(tmp_path, questioner=q(), solver=solver, inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    assert [v["decision"] for v in state["verdicts"]] == ["revise", "accept"]
    failed = [i for i in state["verdicts"][0]["items"] if not i["passed"]]
    assert [i["id"] for i in failed] == ["deliverable_1"]
    assert state["revisions"] == 1 and state["outcome"] == "accepted"
    revision_prompt = json.dumps(solver.calls[2]["messages"])
    assert "totals.csv" in revision_prompt and state["verdicts"][0]["feedback"][:20] in revision_prompt
    assert len(env.records()) == 1


async def test_reject_after_max_revisions_writes_verdict(tmp_path: Path) -> None:
    solver = ScriptedChatModel([NO_FILE_CODE, ANSWER], name="solver")  # never writes the deliverable
    env = Env(tmp_path, questioner=q(), solver=solver, inspector=ScriptedChatModel([judge_all(True)]),
              max_revisions=2)
    state = await env.run()
    assert state["outcome"] == "rejected"
    assert [v["decision"] for v in state["verdicts"]] == ["revise", "revise", "revise"]
    [row] = env.rejected()
    assert row["episode_id"] == env.episode["episode_id"] and row["revisions"] == 2
    assert row["verdict"]["decision"] == "revise" and "after 2 revision" in row["reason"]
    assert any(i["id"] == "deliverable_1" and not i["passed"] for i in row["verdict"]["items"])
    assert env.records() == []


async def test_malformed_questioner_output_is_repaired(tmp_path: Path) -> None:
    fenced = "Here you go:\n```json\n" + json.dumps(TASK) + "\n```\nHope this helps! {not json}"
    questioner = ScriptedChatModel(["Sure, a task about sales!", '{"instruction": "short"}', fenced])
    env = Env(tmp_path, questioner=questioner, solver=ScriptedChatModel([GOOD_CODE, ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    assert state["outcome"] == "accepted"
    assert len(questioner.calls) == 3
    repair = questioner.calls[1]["messages"][-1]["content"]
    assert "invalid" in repair and "no JSON object" in repair
    assert "instruction" in questioner.calls[2]["messages"][-1]["content"]  # the validation error is shown
    assert questioner.calls[0]["response_format"] == {"type": "json_object"}


async def test_questioner_that_never_validates_drops_the_episode(tmp_path: Path) -> None:
    env = Env(tmp_path, questioner=ScriptedChatModel(["no json here"]), solver=ScriptedChatModel([ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    assert state["outcome"] == "rejected" and "no valid task after 3 tries" in state["reason"]
    assert len(env.questioner.calls) == 6  # the seed, then one other kind of seed, three tries each
    assert [kind for kind, _ in env.events].count("reseeded") == 1
    assert env.solver.calls == []
    assert env.rejected()[0]["task"] is None


async def test_a_seed_the_questioner_cannot_phrase_is_replaced_by_another_kind(tmp_path: Path) -> None:
    from synth.seeds import task_seed

    questioner = ScriptedChatModel(['{"tasks": []}'] * 3 + [json.dumps(TASK)], name="questioner")
    env = Env(tmp_path, questioner=questioner, solver=ScriptedChatModel([GOOD_CODE, ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    card = env.deps.sources["sales.csv"]
    first = task_seed(card, card.focus_table(0), "data_analysis", "easy", env.episode["episode_id"])
    [(_, reseeded)] = [(k, p) for k, p in env.events if k == "reseeded"]
    assert reseeded["seed_kind"] != first.kind and "instruction: Field required" in reseeded["reason"]
    assert state["task"]["seed"]["kind"] == reseeded["seed_kind"] and state["outcome"] == "accepted"
    assert f"Task kind: {reseeded['seed_kind']}" in questioner.calls[3]["messages"][-1]["content"]


async def test_a_group_by_on_a_measure_is_sent_back(tmp_path: Path) -> None:
    per_amount = GOOD_CODE.replace("groupby('region')['amount'].sum()", "groupby('amount').size()")
    solver = ScriptedChatModel([per_amount, ANSWER, GOOD_CODE, ANSWER], name="solver")
    env = Env(tmp_path, questioner=q(), solver=solver, inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    first = next(i for i in state["verdicts"][0]["items"] if i["id"] == "groupby_on_categories")
    assert not first["passed"] and "groups by amount" in first["reason"]
    assert state["verdicts"][0]["decision"] == "revise"
    assert "never by a continuous measure" in json.dumps(solver.calls[2]["messages"])  # the feedback
    assert state["outcome"] == "accepted"
    assert next(i for i in state["verdicts"][-1]["items"] if i["id"] == "groupby_on_categories")["passed"]


async def test_a_hard_task_answered_in_one_step_is_asked_for_the_next_step(tmp_path: Path) -> None:
    step = "<Analyze>Next step.</Analyze>\n<Code>\n```python\nprint(open('totals.csv').read())\n```\n</Code>"
    solver = ScriptedChatModel([GOOD_CODE, ANSWER, step, step.replace("print(", "print('again', "), ANSWER],
                               name="solver")
    env = Env(tmp_path, questioner=q(), solver=solver, inspector=ScriptedChatModel([judge_all(True)]),
              difficulty="hard")
    env.deps.max_rounds = 6
    state = await env.run()
    assert state["task"]["seed"]["min_cells"] == 3
    assert "at least 3 separate steps" in solver.calls[2]["messages"][-1]["content"]  # the early answer refused
    steps = next(i for i in state["verdicts"][-1]["items"] if i["id"] == "steps")
    assert steps["passed"] and state["outcome"] == "accepted" and state["revisions"] == 0
    assert env.records()[0]["messages"][-1]["content"].count("<Answer>") == 1


async def test_invented_execute_block_is_caught(tmp_path: Path) -> None:
    invented = ("<Analyze>I know the data.</Analyze>\n<Execute>\nnorth 30\n</Execute>\n<Answer>north</Answer>")
    solver = ScriptedChatModel([invented, ANSWER], name="solver")
    env = Env(tmp_path, questioner=q({**TASK, "deliverables": []}), solver=solver,
              inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    verdict = state["verdicts"][-1]
    item = next(i for i in verdict["items"] if i["id"] == "no_model_written_execute")
    assert not item["passed"] and "invented" in item["reason"]
    assert verdict["decision"] == "reject" and state["outcome"] == "rejected"
    assert state["revisions"] == 0  # a hard failure is not revised


async def test_modified_sources_fail_on_real_sandbox_state(tmp_path: Path) -> None:
    vandal = ("<Analyze>Clean up.</Analyze>\n<Code>\n```python\nwith open('sales.csv', 'a') as f:\n"
              "    f.write('west,1\\n')\nprint('done')\n```\n</Code>")
    env = Env(tmp_path, questioner=q({**TASK, "deliverables": []}),
              solver=ScriptedChatModel([vandal, ANSWER]), inspector=ScriptedChatModel([judge_all(True)]))
    state = await env.run()
    item = next(i for i in state["verdicts"][-1]["items"] if i["id"] == "sources_unchanged")
    assert not item["passed"] and "sales.csv was modified" in item["reason"]
    assert state["outcome"] == "rejected"
    assert env.source_path.read_text() == CSV  # only the workspace copy changed


async def test_crash_mid_episode_resumes_from_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(messages) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("inspector backend went away")
        return judge_all(True)(messages)

    solver = ScriptedChatModel([GOOD_CODE, ANSWER], name="solver")
    questioner = q()
    env = Env(tmp_path, questioner=questioner, solver=solver, inspector=ScriptedChatModel([flaky]))
    with pytest.raises(ConnectionError):
        await env.run()
    assert len(solver.calls) == 2 and env.records() == []
    env.deps.sink = env.new_sink()  # a new process would re-read the outputs
    state = await env.run()
    assert state["outcome"] == "accepted"
    assert len(solver.calls) == 2 and len(questioner.calls) == 1  # propose and solve were not re-run
    # running a finished episode again changes nothing
    again = await env.run()
    assert again["record_id"] == state["record_id"] and len(env.records()) == 1


async def test_emit_is_idempotent_by_record_id(tmp_path: Path) -> None:
    env = Env(tmp_path, questioner=q(), solver=ScriptedChatModel([GOOD_CODE, ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    await env.run()
    # A second episode (other id) that produces the same task gives the same record id: kept once.
    env.episode = {**env.episode, "episode_id": "ep-second"}
    env.solver.calls.clear()  # replay the solver script
    env.deps.duplicates = NearDuplicateIndex()  # get past the near-duplicate guard to reach emit's id check
    state = await env.run()
    assert state["outcome"] == "duplicate" and len(env.records()) == 1


async def test_near_duplicate_task_is_asked_again_then_dropped(tmp_path: Path) -> None:
    env = Env(tmp_path, questioner=q(), solver=ScriptedChatModel([GOOD_CODE, ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    env.deps.duplicates = NearDuplicateIndex(instructions=[TASK["instruction"]])
    state = await env.run()
    assert state["outcome"] == "rejected" and "near-duplicate" in state["reason"]
    second_prompt = env.questioner.calls[1]["messages"][-1]["content"]
    assert "different from these" in second_prompt and TASK["instruction"] in second_prompt


async def test_resume_after_the_checklist_yaml_changed_keeps_the_checklist_of_the_verdict(tmp_path: Path) -> None:
    env = Env(tmp_path, questioner=q(), solver=ScriptedChatModel([GOOD_CODE, ANSWER]),
              inspector=ScriptedChatModel([judge_all(True)]))
    stopped = await env.run(interrupt_before=["emit"])  # as if the process died between inspect and emit
    assert stopped["verdicts"][-1]["decision"] == "accept" and env.records() == []
    judged_with = [item["id"] for item in stopped["verdicts"][-1]["items"]]
    (env.tmp / "checklists" / "data_analysis.yaml").write_text(
        "category: data_analysis\nitems:\n  - rule: answer_present\n  - id: new_item\n    rule: code_runs\n")
    env.deps.sink = env.new_sink()
    state = await env.run()
    assert state["outcome"] == "accepted"
    [record] = env.records()
    assert [item["id"] for item in record["checklist"]] == judged_with
    assert [item["id"] for item in record["verdict"]["items"]] == judged_with
    assert "new_item" not in judged_with and "supported" in judged_with


async def test_nodes_are_module_level_functions_a_test_can_call_alone(tmp_path: Path) -> None:
    from synth.graphs.interaction import after_inspect, initial_state, propose, revise

    env = Env(tmp_path, questioner=q(), solver=ScriptedChatModel([]), inspector=ScriptedChatModel([]))
    update = await propose(initial_state(env.episode), env.deps)
    assert update["task"]["instruction"] == TASK["instruction"] and update["revisions"] == 0
    state = {**initial_state(env.episode), **update, "verdicts": [{"decision": "revise", "feedback": "Print it."}]}
    assert after_inspect(state, env.deps) == "revise"
    assert await revise(state, env.deps) == {"revisions": 1, "feedback": "Print it."}
    assert after_inspect({**state, "revisions": 1}, env.deps) == "reject"  # max_revisions = 1
    assert await propose({**state, "task": update["task"]}, env.deps) == {}  # idempotent: the task is kept
