"""The questioner role: validation and repair, file names, plugin roles (a scripted model; no graph)."""

from __future__ import annotations

import json

import pytest
from doubles import ScriptedChatModel
from test_interaction_graph import TASK

from synth.questioner import (
    LLMQuestioner,
    ProposalRequest,
    QuestionerError,
    _validate_task_items,
    _with_full_file_names,
    make_questioner,
)


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
    assert _with_full_file_names("In Chinook_Sqlite, count rows", ["Chinook_Sqlite.sqlite"]) == (
        "In Chinook_Sqlite.sqlite, count rows")
    assert _with_full_file_names("Count diabetes patients", ["diabetes.csv"]) == "Count diabetes patients"
    assert len(model.calls) == 2  # no repair round trips: small models repeat themselves when asked
    silent_file = {**single, "deliverables": ["top.csv"]}
    named = await LLMQuestioner(ScriptedChatModel([json.dumps(silent_file)]), max_repairs=0).propose(request)
    assert named.instruction.endswith("Save the result to top.csv.")  # never a check the solver cannot know about


async def test_too_many_checklist_items_are_repaired_then_capped_on_the_last_try() -> None:
    item = {"rule": "answer_present"}
    crowded = {**TASK, "checklist": [item] * 7}
    request = ProposalRequest("sales.csv", "card", ["sales.csv"], "data_analysis", "easy")
    model = ScriptedChatModel([json.dumps(crowded), json.dumps(crowded)], strict=True)
    task = await LLMQuestioner(model, max_repairs=1, validate_items=_validate_task_items).propose(request)
    assert "at most 6 items" in model.calls[1]["messages"][-1]["content"]  # asked to fix it first
    assert task.checklist == [item] * 6  # then the task is kept with the first six of its optional checks


async def test_a_task_naming_data_the_source_does_not_have_is_sent_back() -> None:
    columns = {"iris": ["sepal_width_cm", "species"]}
    request = ProposalRequest("iris.csv", "card", ["iris.csv"], "data_analysis", "easy", columns=columns)
    copied = {**TASK, "instruction": "In shop.sqlite, sum `orders.total` per `orders.customer` and report the "
                                     "largest.", "files": ["iris.csv"], "deliverables": []}
    grounded = {**TASK, "instruction": "Average `iris.sepal_width_cm` per `iris.species` in iris.csv; save the "
                                       "table to means.csv and report the largest.", "files": ["iris.csv"],
                "deliverables": []}
    model = ScriptedChatModel([json.dumps(copied), json.dumps(grounded)], strict=True)
    task = await LLMQuestioner(model, max_repairs=1).propose(request)
    repair = model.calls[1]["messages"][-1]["content"]
    assert "file shop.sqlite" in repair and "`orders.total`" in repair and "`orders.customer`" in repair
    assert task.instruction.startswith("Average `sepal_width_cm` per `species`")  # an output file it names is fine
    hopeless = ScriptedChatModel([json.dumps(copied)], strict=False)
    with pytest.raises(QuestionerError, match="which the data does not have"):  # never kept, even on the last try
        await LLMQuestioner(hopeless, max_repairs=1).propose(request)
    unchecked = ProposalRequest("iris.csv", "card", ["iris.csv"], "data_analysis", "easy")  # no columns given
    assert (await LLMQuestioner(ScriptedChatModel([json.dumps(copied)])).propose(unchecked)).instruction


async def test_a_seeded_task_that_names_none_of_the_seed_columns_is_sent_back() -> None:
    request = ProposalRequest("music.sqlite", "card", ["music.sqlite"], "data_analysis", "hard",
                              columns={"Track": ["Milliseconds", "MediaTypeId"], "MediaType": ["MediaTypeId", "Name"]},
                              seed_columns=["Milliseconds", "Name", "MediaType", "MediaTypeId"])
    # The 1.5B wrote its checklist question as the instruction of a hard join task.
    stray = {**TASK, "instruction": "Does the answer have the correct column names?", "files": ["music.sqlite"],
             "deliverables": []}
    seeded = {**TASK, "instruction": "In music.sqlite, join `Track` with `MediaType`, average `Track.Milliseconds` "
                                     "per `MediaType.Name` and report the longest.", "files": ["music.sqlite"],
              "deliverables": []}
    model = ScriptedChatModel([json.dumps(stray), json.dumps(seeded)], strict=True)
    task = await LLMQuestioner(model, max_repairs=1).propose(request)
    assert "names none of the seed's columns (Milliseconds, Name, MediaType, MediaTypeId)" in \
        model.calls[1]["messages"][-1]["content"]
    assert task.instruction == seeded["instruction"]
    with pytest.raises(QuestionerError, match="none of the seed's columns"):
        await LLMQuestioner(ScriptedChatModel([json.dumps(stray)], strict=False), max_repairs=1).propose(request)


async def test_a_workbook_task_says_which_sheet_it_reads() -> None:
    request = ProposalRequest("cancer.xlsx", "card", ["cancer.xlsx"], "report_generation", "hard",
                              columns={"samples": ["diagnosis"], "features": ["statistic"]},
                              sheets=["samples", "features"])
    bare = {**TASK, "instruction": "Compute summary statistics of `features.statistic` and print them.",
            "files": ["cancer.xlsx"], "deliverables": []}
    task = await LLMQuestioner(ScriptedChatModel([json.dumps(bare)])).propose(request)
    assert task.instruction == bare["instruction"] + " `features` is a sheet of cancer.xlsx."
    said = {**bare, "instruction": "In the `features` sheet, summarise `features.statistic`."}
    assert (await LLMQuestioner(ScriptedChatModel([json.dumps(said)])).propose(request)).instruction == \
        said["instruction"]


async def test_columns_of_a_one_table_file_are_named_bare() -> None:
    one = ProposalRequest("diabetes.csv", "card", ["diabetes.csv"], "data_analysis", "easy",
                          columns={"diabetes": ["s4", "sex"]})
    qualified = {**TASK, "instruction": "In diabetes.csv, sum `diabetes.s4` per `diabetes.sex`.", "files": [],
                 "deliverables": []}
    task = await LLMQuestioner(ScriptedChatModel([json.dumps(qualified)])).propose(one)
    assert task.instruction == "In diabetes.csv, sum `s4` per `sex`."
    several = ProposalRequest("music.sqlite", "card", ["music.sqlite"], "data_analysis", "easy",
                              columns={"Track": ["Name"], "Album": ["Title"]})
    kept = {**TASK, "instruction": "In music.sqlite, list `Track.Name` by `Album.Title`.", "files": [],
            "deliverables": []}
    assert (await LLMQuestioner(ScriptedChatModel([json.dumps(kept)])).propose(several)).instruction == kept[
        "instruction"]


def test_a_wrapped_or_renamed_instruction_is_read() -> None:
    from synth.questioner import TaskProposal

    wrapped = TaskProposal.model_validate({"task": dict(TASK)})
    assert wrapped.instruction == TASK["instruction"] and wrapped.deliverables == TASK["deliverables"]
    renamed = TaskProposal.model_validate({"question": TASK["instruction"], "files": ["sales.csv"]})
    assert renamed.instruction == TASK["instruction"] and renamed.files == ["sales.csv"]
    with pytest.raises(ValueError, match="instruction"):  # two candidates: ambiguous, so still invalid
        TaskProposal.model_validate({"task": "one text long enough", "question": "another text long enough"})
