"""The interaction graph with scripted models, the REAL local sandbox and the REAL SQLite checkpointer."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from doubles import ScriptedChatModel

from synth.graphs.interaction import (
    EpisodeDeps,
    EpisodeSink,
    LLMQuestioner,
    ProposalRequest,
    QuestionerError,
    SourceInfo,
    build_interaction_graph,
    make_questioner,
    parse_json_object,
    run_episode,
)
from synth.sampler import NearDuplicateIndex, SourceRef, plan_episodes
from synth.sandbox.local import LocalSandbox

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
    """An inspector reply answering every question id in the prompt."""

    def reply(messages) -> str:
        ids = re.findall(r"- id (\S+):", messages[-1]["content"])
        return json.dumps({"answers": [{"id": i, "pass": passed, "reason": "checked"} for i in ids]})

    return reply


class Env:
    def __init__(self, tmp_path: Path, *, questioner, solver, inspector, max_revisions: int = 1) -> None:
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
            sources={"sales.csv": SourceInfo("sales.csv", self.source_path, self.source_hash,
                                             "Source sales.csv (csv)\ncolumns: region TEXT, amount INTEGER")},
            sink=self.new_sink(), work_dir=self.run_dir / "work", max_rounds=4, max_revisions=max_revisions,
            checklists_dir=checklists, on_event=lambda kind, payload: self.events.append((kind, payload)),
        )
        self.episode = plan_episodes([SourceRef("sales.csv", self.source_hash)], ["data_analysis"], ["easy"],
                                     limit=1)[0].to_dict()

    def new_sink(self) -> EpisodeSink:
        return EpisodeSink(self.run_dir / "records.jsonl", self.run_dir / "rejected.jsonl")

    async def run(self) -> dict[str, Any]:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(self.run_dir / "checkpoints.sqlite")) as saver:
            compiled = build_interaction_graph(self.deps).compile(checkpointer=saver)
            return await run_episode(compiled, self.episode)

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
    assert state["usage"]["llm_calls"] == 1 + 2 + 1


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
    assert env.solver.calls == []
    assert env.rejected()[0]["task"] is None


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


def test_questioner_plugin_from_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import synth.roles

    class PluginQuestioner:
        def __init__(self, *, model, role) -> None:
            self.model, self.role = model, role

        async def propose(self, request):  # pragma: no cover - only constructed here
            raise NotImplementedError

    class FakeEntryPoint:
        name, value = "questioner", "pkg.mod:PluginQuestioner"

        def load(self):
            return PluginQuestioner

    monkeypatch.setattr(synth.roles, "_entry_points", lambda: [FakeEntryPoint()])
    model = ScriptedChatModel(["{}"])
    made = make_questioner(model)
    assert isinstance(made, PluginQuestioner) and made.model is model and made.role.name == "questioner"
    monkeypatch.setattr(synth.roles, "_entry_points", lambda: [])
    assert isinstance(make_questioner(model), LLMQuestioner)


async def test_questioner_keeps_only_real_files_and_rejects_bad_items() -> None:
    lenient = LLMQuestioner(ScriptedChatModel([json.dumps({**TASK, "files": ["SALES.csv", "region"]})]))
    request = ProposalRequest("sales.csv", "card", ["sales.csv"], "data_analysis", "easy")
    assert (await lenient.propose(request)).files == ["sales.csv"]
    bad_file = {**TASK, "instruction": "x"}
    good_item = {"rule": "file_created", "params": {"glob": "out.csv"}}
    bad_item = {**TASK, "checklist": [{"rule": "no_such_rule"}, good_item]}
    model = ScriptedChatModel([json.dumps(bad_file), json.dumps(bad_item), json.dumps(bad_item)], strict=True)
    from synth.graphs.interaction import _validate_task_items

    questioner = LLMQuestioner(model, max_repairs=2, validate_items=_validate_task_items)
    request = ProposalRequest("sales.csv", "card", ["sales.csv"], "data_analysis", "easy")
    task = await questioner.propose(request)
    assert "instruction" in model.calls[1]["messages"][-1]["content"]
    assert "no_such_rule" in model.calls[2]["messages"][-1]["content"]  # repaired with the precise error first
    assert task.checklist == [good_item]  # the last try keeps the valid items of an otherwise sound task
    hopeless = ScriptedChatModel(["not json"], strict=False)
    with pytest.raises(QuestionerError, match="no valid task after 2 tries"):
        await LLMQuestioner(hopeless, max_repairs=1).propose(request)


async def test_easy_task_naming_another_table_gets_the_constraint_and_full_file_names() -> None:
    join = {**TASK, "instruction": "In music, find the album with the most tracks and its title.",
            "files": ["music.sqlite"], "deliverables": []}
    single = {**TASK, "instruction": "Find the `AlbumId` with the most rows in `Track` of music.sqlite.",
              "files": ["music.sqlite"], "deliverables": []}
    request = ProposalRequest("music.sqlite", "card", ["music.sqlite"], "data_analysis", "easy",
                              focus_table="Track", other_tables=["Album", "Genre"])
    model = ScriptedChatModel([json.dumps(join), json.dumps(single)], strict=True)
    questioner = LLMQuestioner(model, max_repairs=2)
    joined = await questioner.propose(request)
    assert joined.instruction == ("In music.sqlite, find the album with the most tracks and its title. "
                                  "Use only the `Track` table.")
    assert (await questioner.propose(request)).instruction == single["instruction"]  # nothing to add
    from synth.graphs.interaction import _with_full_file_names

    assert _with_full_file_names("In Chinook_Sqlite, count rows", ["Chinook_Sqlite.sqlite"]) == (
        "In Chinook_Sqlite.sqlite, count rows")
    assert _with_full_file_names("Count diabetes patients", ["diabetes.csv"]) == "Count diabetes patients"
    assert len(model.calls) == 2  # no repair round trips: small models repeat themselves when asked
    silent_file = {**single, "deliverables": ["top.csv"]}
    named = await LLMQuestioner(ScriptedChatModel([json.dumps(silent_file)]), max_repairs=0).propose(request)
    assert named.instruction.endswith("Save the result to top.csv.")  # never a check the solver cannot know about


def test_referenced_tables_follow_foreign_keys_and_id_columns(tmp_path: Path) -> None:
    import sqlite3

    from synth.sources import profile_all

    database = tmp_path / "music.sqlite"
    with sqlite3.connect(database) as con:
        con.executescript(
            "CREATE TABLE Album (AlbumId INTEGER PRIMARY KEY, Title TEXT);"
            "CREATE TABLE Genre (GenreId INTEGER PRIMARY KEY, Name TEXT);"
            "CREATE TABLE Label (LabelId INTEGER PRIMARY KEY);"
            "CREATE TABLE Track (TrackId INTEGER PRIMARY KEY, AlbumId INTEGER REFERENCES Album(AlbumId),"
            " GenreId INTEGER, Name TEXT);"
        )
    card = profile_all(database, use_cache=False)[0]
    info = SourceInfo(name="music.sqlite", path=database, sha256="0", prompt="", card=card)
    assert sorted(info.referenced_tables("Track")) == ["Album", "Genre"]  # FK, and a GenreId column
    assert info.referenced_tables("Album") == [] and info.referenced_tables(None) == []


def test_parse_json_object_is_lenient() -> None:
    assert parse_json_object('x {"a": 1} trailing }') == {"a": 1}
    assert parse_json_object('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_json_object("[1, 2]")
