"""The checklist engine over REAL sandbox state: every rule passes on one episode and fails on another."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from synth import checklist as cl
from synth.checklist import (
    ChecklistError,
    JudgedItem,
    RuleContext,
    RuleSetupError,
    evaluate,
    list_categories,
    load_checklist,
    parse_judge_reply,
    registry,
    validate_items,
    validate_task_items,
)
from synth.matchers import answers_match
from synth.sandbox import get_sandbox
from synth.sandbox.base import ExecResult
from synth.sources.ref import source_refs
from synth.trajectory import Trajectory, Turn

CATEGORIES = ["data_preparation", "data_cleaning", "data_analysis", "data_insight", "modeling",
              "report_generation", "open_research"]


# --- building real episodes --------------------------------------------------------------------------------------


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sales.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["region", "units", "price"])
        writer.writerows([["north", 3, 2.5], ["south", "", 4.0], ["east", 5, ""], ["north", 2, 2.5]])
    con = sqlite3.connect(src / "shop.sqlite")
    con.execute("CREATE TABLE orders (id INTEGER, customer TEXT, total REAL)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(1, "ann", 10.0), (2, None, 5.5), (3, "bo", 7.25)])
    con.commit()
    con.close()
    return [src / "sales.csv", src / "shop.sqlite"]


class Episode:
    """Runs cells in a real local sandbox session and records them as a Trajectory, like the agent loop does."""

    def __init__(self, tmp_path: Path, sources: list[Path], mode: str = "script"):
        self.sandbox = get_sandbox("local")
        self.sources = source_refs(sources)  # hashed before anything runs
        # The sandbox owns the workspace (removed on close); rules run before the fixture closes the session.
        self.session = self.sandbox.open(sources, mode=mode)
        self.workspace = self.session.workspace
        self.initial = self.session.snapshot()
        self.trajectory = Trajectory(prompt="# Instruction\nSummarise the sales.\n\n# Data\nFile 1:\n{}", mode=mode)

    def cell(self, code: str, note: str = "Let me look.") -> "Episode":
        text = f"<Analyze>{note}</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>"
        self.trajectory.turns.append(Turn(text=text, code=code, result=self.session.run(code, timeout=30)))
        return self

    def answer(self, answer: str | None) -> "Episode":
        if answer is None:
            self.trajectory.stop_reason = "max_rounds"
        else:
            self.trajectory.turns.append(Turn(text=f"<Understand>Done.</Understand>\n<Answer>{answer}</Answer>"))
            self.trajectory.answer = answer
        return self

    def context(self, **overrides) -> RuleContext:
        ctx = RuleContext(trajectory=self.trajectory, workspace=self.workspace, state=self.session.snapshot(),
                          initial_state=self.initial, sources=self.sources, sandbox=self.sandbox)
        return replace(ctx, **overrides)

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def episode(tmp_path, sources):
    made: list[Episode] = []

    def make(mode: str = "script") -> Episode:
        made.append(Episode(tmp_path, sources, mode))
        return made[-1]

    yield make
    for ep in made:
        ep.close()


def check(ctx: RuleContext, rule: str, **params) -> cl.ItemResult:
    spec = cl.get_rule(rule)
    return spec.fn(ctx, **spec.validate_params(params))


# --- rules, each passing and failing --------------------------------------------------------------------------------


def test_answer_present_and_min_length(episode):
    good = episode().cell("print(open('sales.csv').read().count('north'))").answer("North appears twice.").context()
    assert check(good, "answer_present").passed
    assert check(good, "answer_min_length", chars=10).passed
    assert not check(good, "answer_min_length", chars=500).passed
    none = episode().cell("print(1)").answer(None).context()
    result = check(none, "answer_present")
    assert not result.passed and "max_rounds" in result.reason


def test_turns_between(episode):
    ctx = episode().cell("print(1)").cell("print(2)").answer("2").context()  # 3 turns
    assert check(ctx, "turns_between", min=2, max=5).passed
    assert "fewer than 4" in check(ctx, "turns_between", min=4, max=9).reason
    assert "more than 2" in check(ctx, "turns_between", min=1, max=2).reason


def test_uses_library_reads_real_imports(episode):
    ctx = episode().cell("import csv\nrows = list(csv.reader(open('sales.csv')))\nprint(len(rows))") \
        .cell("print('import json is just text here')").answer("5 rows").context()
    assert check(ctx, "uses_library", name="csv").passed
    result = check(ctx, "uses_library", name="json")
    assert not result.passed and "json" in result.reason
    submodule = episode().cell("from os.path import getsize\nprint(getsize('sales.csv'))").answer("x").context()
    assert check(submodule, "uses_library", name="os").passed


def test_no_unresolved_errors(episode):
    fixed = episode().cell("print(undefined_name)").cell("print('fixed')").answer("ok").context()
    assert fixed.trajectory.turns[0].result.error  # the sandbox really reported the NameError
    result = check(fixed, "no_unresolved_errors")
    assert result.passed and "later fixed" in result.reason
    broken = episode().cell("print('fine')").cell("open('missing.csv')").answer("?").context()
    result = check(broken, "no_unresolved_errors")
    assert not result.passed and "FileNotFoundError" in result.reason


def test_code_runs(episode):
    ctx = episode().cell("print(1/0)").cell("print(1)").answer("1").context()
    assert check(ctx, "code_runs", min=0.5).passed
    assert not check(ctx, "code_runs", min=1.0).passed
    assert not check(episode().answer("no code").context(), "code_runs").passed


def test_file_created_catches_missing_and_preexisting_files(episode):
    ep = episode().cell("import shutil\nshutil.copyfile('sales.csv', 'sales_clean.csv')").answer("Wrote it.")
    ctx = ep.context()
    assert check(ctx, "file_created", glob="*clean*").passed
    missing = check(ctx, "file_created", glob="report.md")
    assert not missing.passed and "no file matching" in missing.reason
    preexisting = check(ctx, "file_created", glob="sales.csv")  # a source copy, not created by the episode
    assert not preexisting.passed


def test_file_nonempty_reads_tables(episode):
    ep = episode().cell(
        "open('empty.txt', 'w').close()\n"
        "open('header_only.csv', 'w').write('a,b\\n')\n"
        "open('full.csv', 'w').write('a,b\\n1,2\\n')"
    ).answer("done")
    ctx = ep.context()
    assert check(ctx, "file_nonempty", glob="full.csv").passed
    assert "0 bytes" in check(ctx, "file_nonempty", glob="empty.txt").reason
    assert "no data rows" in check(ctx, "file_nonempty", glob="header_only.csv").reason
    assert not check(ctx, "file_nonempty", glob="nothing*").passed


def test_table_has_no_nulls_on_real_files(episode):
    ep = episode().cell(
        "import csv\n"
        "rows = list(csv.DictReader(open('sales.csv')))\n"
        "clean = [r for r in rows if r['units'] and r['price']]\n"
        "w = csv.DictWriter(open('sales_clean.csv', 'w', newline=''), fieldnames=rows[0].keys())\n"
        "w.writeheader(); w.writerows(clean)\n"
        "print(len(rows) - len(clean), 'rows dropped')"
    ).answer("Dropped 2 rows with missing units or price.")
    ctx = ep.context()
    assert check(ctx, "table_has_no_nulls", file="sales_clean.csv").passed
    dirty = check(ctx, "table_has_no_nulls", file="sales.csv")
    assert not dirty.passed and "units=1" in dirty.reason
    assert check(ctx, "table_has_no_nulls", file="sales.csv", column="region").passed
    assert "has no column" in check(ctx, "table_has_no_nulls", file="sales.csv", column="nope").reason
    # SQLite: the real database table, one column or all.
    assert check(ctx, "table_has_no_nulls", file="shop.sqlite", table="orders", column="total").passed
    db = check(ctx, "table_has_no_nulls", file="shop.sqlite", table="orders")
    assert not db.passed and "customer=1" in db.reason
    assert "no file" in check(ctx, "table_has_no_nulls", file="absent.parquet").reason


def test_rules_over_a_real_third_party_database(tmp_path, shared_data):
    chinook = shared_data / "sources" / "chinook" / "Chinook_Sqlite.sqlite"
    ep = Episode(tmp_path, [chinook])
    try:
        ep.cell(
            "import sqlite3, csv\n"
            "con = sqlite3.connect('file:Chinook_Sqlite.sqlite?mode=ro', uri=True)\n"
            "rows = con.execute('SELECT Country, COUNT(*) FROM Customer GROUP BY Country ORDER BY 2 DESC').fetchall()\n"
            "csv.writer(open('customers_by_country.csv', 'w', newline='')).writerows([('country', 'n'), *rows])\n"
            "print(rows[0])"
        ).answer("USA has the most customers: 13.")
        ctx = ep.context(reference=13)
        assert ep.trajectory.turns[0].result.stdout.strip() == "('USA', 13)", ep.trajectory.turns[0].result
        for name, params in [("file_created", {"glob": "*by_country.csv"}), ("sources_unchanged", {}),
                             ("answer_matches", {}), ("execute_blocks_authentic", {}),
                             ("table_has_no_nulls", {"file": "customers_by_country.csv"}),
                             ("table_has_no_nulls", {"file": "Chinook_Sqlite.sqlite", "table": "Customer",
                                                     "column": "CustomerId"})]:
            result = check(ctx, name, **params)
            assert result.passed, (name, result.reason)
        nulls = check(ctx, "table_has_no_nulls", file="Chinook_Sqlite.sqlite", table="Customer", column="Company")
        assert not nulls.passed and "missing value" in nulls.reason
        assert source_refs([chinook])[0].sha256 == ep.sources[0].sha256
    finally:
        ep.close()


def test_table_has_no_nulls_parquet_and_excel(episode, tmp_path):
    import pandas as pd

    extra = tmp_path / "extra"
    extra.mkdir()
    pd.DataFrame({"a": [1.0, None], "b": [1, 2]}).to_parquet(extra / "t.parquet")
    pd.DataFrame({"a": [1, 2]}).to_excel(extra / "t.xlsx", sheet_name="S1", index=False)
    ep = Episode(tmp_path, [extra / "t.parquet", extra / "t.xlsx"])
    try:
        ctx = ep.answer("x").context()
        assert not check(ctx, "table_has_no_nulls", file="t.parquet").passed
        assert check(ctx, "table_has_no_nulls", file="t.parquet", column="b").passed
        assert check(ctx, "table_has_no_nulls", file="t.xlsx", table="S1").passed
    finally:
        ep.close()


def test_sources_unchanged_catches_modified_copy_and_original(episode, sources):
    untouched = episode().cell("print(open('sales.csv').readline())").answer("ok").context()
    assert check(untouched, "sources_unchanged").passed
    edited = episode().cell("open('sales.csv', 'a').write('west,1,1\\n')").answer("appended").context()
    result = check(edited, "sources_unchanged")
    assert not result.passed and "workspace copy sales.csv was modified" in result.reason
    assert check(edited, "sources_unchanged", allow_workspace_changes=True).passed
    deleted = episode().cell("import os\nos.remove('shop.sqlite')").answer("gone").context()
    assert "was deleted" in check(deleted, "sources_unchanged").reason
    # The original itself changed after it was hashed: fails even when the task may edit its copy.
    sources[0].write_text("tampered\n")
    result = check(untouched, "sources_unchanged", allow_workspace_changes=True)
    assert not result.passed and "original" in result.reason


def test_answer_matches(episode):
    ep = episode().cell("print(round((3*2.5 + 2*2.5) / 5, 4))").answer("The average north price is 2.50 per unit.")
    ctx = ep.context(reference=2.5)
    assert check(ctx, "answer_matches").passed
    assert not check(ctx, "answer_matches", reference=2.6).passed
    assert check(ctx, "answer_matches", reference=2.6, tolerance=0.2).passed
    assert "no reference" in check(ep.context(), "answer_matches").reason


def test_answers_match_helper():
    assert answers_match("42", 42.0)
    assert answers_match("The total is 1,234.5 units", 1234.5)
    assert answers_match("3.14", 3.14159)  # shown rounded to its 2 decimals
    assert not answers_match("3", 3.4)
    assert answers_match("45%", 0.45)
    assert answers_match("110", 100, rel_tolerance=0.1)
    assert not answers_match("112", 100, rel_tolerance=0.1)
    assert answers_match("  The Beatles. ", "beatles")
    assert answers_match("The winner was Café Nord!", "cafe nord")
    assert not answers_match("Bob", "Bo")
    assert not answers_match("Bobby wins", "bob")  # whole words only
    assert answers_match("Rome and Paris.", ["paris", "rome"])  # reference list, prose answer: each element present
    assert answers_match(["rome", "Paris"], "paris|rome")
    assert answers_match("[2, 1.0]", [1, 2])
    assert not answers_match(["paris", "rome", "oslo"], ["paris", "rome"])
    assert not answers_match("Paris", ["paris", "rome"])
    assert not answers_match(None, "x")
    assert not answers_match("42", 41, contains=False)


def _deterministic(ep: Episode) -> Episode:
    return ep.cell("import csv\nrows = list(csv.DictReader(open('sales.csv')))\nprint(len(rows), object())") \
        .cell("print(sorted({r['region'] for r in csv.DictReader(open('sales.csv'))}))", ) \
        .answer("4 rows")


def test_replay_reproduces_deterministic_code(episode):
    ep = _deterministic(episode())
    # Cell 2 relies on cell 1's import: fails in script mode both times, so replay still reproduces.
    assert not ep.trajectory.turns[1].result.ok
    result = check(ep.context(), "replay_reproduces")
    assert result.passed, result.reason


def test_replay_reproduces_session_mode(episode):
    ep = _deterministic(episode("session"))
    assert ep.trajectory.turns[1].result.ok  # state persists across cells in session mode
    assert check(ep.context(), "replay_reproduces").passed


def test_replay_detects_tampered_output_and_randomness(episode):
    ep = _deterministic(episode("session"))
    first = ep.trajectory.turns[0].result
    ep.trajectory.turns[0] = replace(ep.trajectory.turns[0], result=replace(first, stdout="5 rows\n"))
    result = check(ep.context(), "replay_reproduces")
    assert not result.passed and "cell 1" in result.reason
    noisy = episode().cell("import random\nprint(random.random())").answer("x").context()
    assert not check(noisy, "replay_reproduces").passed
    assert check(noisy, "replay_reproduces", ignore_patterns=[r"0\.\d+"]).passed


def test_execute_blocks_authentic_catches_invented_execute(episode):
    ep = episode().cell("print(sum(1 for _ in open('sales.csv')))").answer("5 lines")
    assert check(ep.context(), "execute_blocks_authentic").passed
    assert check(ep.context(), "no_model_written_execute").passed
    # The model wrote its own Execute (the engine ignored the stop string) claiming a different output.
    invented = ep.trajectory.turns[0].text + "\n<Execute>\n99\n</Execute>\n"
    ep.trajectory.turns[0] = replace(ep.trajectory.turns[0], text=invented)
    result = check(ep.context(), "execute_blocks_authentic")
    assert not result.passed and "differs" in result.reason
    assert not check(ep.context(), "no_model_written_execute").passed


def test_execute_blocks_authentic_checks_a_stored_message(episode):
    ep = episode().cell("print(6 * 7)").answer("42")
    text = ep.trajectory.assistant_text()
    assert "<Execute>\n42\n</Execute>" in text
    assert check(ep.context(assistant_text=text), "execute_blocks_authentic").passed
    forged = text.replace("<Execute>\n42\n</Execute>", "<Execute>\n41\n</Execute>")
    assert not check(ep.context(assistant_text=forged), "execute_blocks_authentic").passed
    dropped = text.replace("<Execute>\n42\n</Execute>", "")
    assert "0 <Execute> blocks for 1" in check(ep.context(assistant_text=dropped), "execute_blocks_authentic").reason


def test_no_model_written_execute_counts_repairs_on_request(episode):
    ep = episode().cell("print(1)").answer("1")
    ep.trajectory.turns[0].notes.append("cut an invented <Execute> block")
    assert check(ep.context(), "no_model_written_execute").passed
    assert not check(ep.context(), "no_model_written_execute", count_repaired=True).passed


# --- judged items ----------------------------------------------------------------------------------------------------

JUDGED = [JudgedItem(id="states_amount", question="Does the answer say how much was cleaned?"),
          JudgedItem(id="verified", question="Was the result verified?", rubric="Re-counted after cleaning.")]


def _plain_ctx() -> RuleContext:
    traj = Trajectory(prompt="# Instruction\nClean it.", turns=[Turn(text="<Answer>Dropped 2 rows.</Answer>")],
                      answer="Dropped 2 rows.")
    return RuleContext(trajectory=traj)


async def test_judge_good_json_uses_inspector_role(scripted_model):
    reply = json.dumps({"answers": [
        {"id": "states_amount", "quote": "Dropped 2 rows.", "pass": True, "reason": "names a count of 2 dropped rows"},
        {"id": "verified", "quote": "Dropped 2 rows.", "pass": False, "reason": "no re-count printed anywhere"}]})
    model = scripted_model([reply], strict=True)
    verdict = await evaluate(JUDGED, _plain_ctx(), model)
    assert [(v.id, v.passed) for v in verdict.items] == [("states_amount", True), ("verified", False)]
    assert verdict.item("verified").reason == "no re-count printed anywhere"
    assert verdict.item("states_amount").evidence == "Dropped 2 rows."
    assert verdict.decision == "revise" and verdict.score == 0.5
    assert "Was the result verified?" in verdict.feedback and "no re-count" in verdict.feedback
    sent = model.calls[0]["messages"]
    assert sent[0]["role"] == "system" and "review" in sent[0]["content"]
    assert "id verified: Was the result verified?" in sent[-1]["content"] and "Clean it." in sent[-1]["content"]
    assert len(model.calls) == 1  # ONE call for all judged items


async def test_judge_fenced_json_and_mapping_form(scripted_model):
    reply = ('Here you go:\n```json\n{"states_amount": {"passed": true, "quote": "Dropped 2 rows", '
             '"reason": "two rows dropped is stated"}, "verified": {"pass": "pass", "quote": "dropped 2 ROWS.", '
             '"reason": "the final count stands in the answer text"}}\n```')
    verdict = await evaluate(JUDGED, _plain_ctx(), scripted_model([reply], strict=True))
    assert verdict.decision == "accept" and verdict.score == 1.0 and verdict.feedback == ""


async def test_judge_garbage_fails_items_after_bounded_repair(scripted_model):
    model = scripted_model(["I think it is fine.", "Still no JSON."], strict=True)
    verdict = await evaluate(JUDGED, _plain_ctx(), model, max_repairs=1)
    assert len(model.calls) == 2
    assert "not valid JSON" in model.calls[1]["messages"][-1]["content"]
    assert all(not v.passed and "not valid JSON" in v.reason for v in verdict.items)


async def test_judge_missing_item_is_repaired_then_not_judged(scripted_model):
    good = {"id": "states_amount", "quote": "Dropped 2 rows.", "pass": True, "reason": "a count of two is given"}
    partial = json.dumps({"answers": [good]})
    model = scripted_model([partial, partial], strict=True)
    verdict = await evaluate(JUDGED, _plain_ctx(), model)
    assert "verified" in model.calls[1]["messages"][-1]["content"]
    assert verdict.item("states_amount").passed
    assert verdict.item("verified").not_judged and verdict.item("verified").reason == "judge gave no verdict"
    fixed = scripted_model(["nonsense", json.dumps({"answers": [
        good, {"id": "verified", "quote": "Dropped 2 rows.", "pass": False, "reason": "no recount code ran"}]})],
        strict=True)
    verdict = await evaluate(JUDGED, _plain_ctx(), fixed)
    assert verdict.item("states_amount").passed and not verdict.item("verified").passed
    assert not verdict.item("verified").not_judged


async def test_judge_verdict_without_a_real_quote_is_not_judged(scripted_model):
    invented = json.dumps({"answers": [
        {"id": "states_amount", "quote": "Removed 7 duplicates", "pass": True, "reason": "seven rows were removed"},
        {"id": "verified", "quote": "Dropped 2 rows.", "pass": True, "reason": "Was the result verified"}]})
    model = scripted_model([invented, invented], strict=True)
    verdict = await evaluate(JUDGED, _plain_ctx(), model)
    assert "not in the trajectory" in model.calls[1]["messages"][-1]["content"]
    assert verdict.item("states_amount").not_judged and "not in the trajectory" in verdict.item("states_amount").reason
    assert verdict.item("verified").not_judged and "restates" in verdict.item("verified").reason
    assert not verdict.item("states_amount").passed  # no verdict never counts as a pass


async def test_judge_prompt_override(scripted_model):
    model = scripted_model([json.dumps({"states_amount": True, "verified": True})], strict=True)
    await evaluate(JUDGED, _plain_ctx(), model, judge_prompt="ANSWER: {{ answer }} Q: {{ questions|length }}",
                   max_repairs=0)
    assert model.calls[0]["messages"][-1]["content"] == "ANSWER: Dropped 2 rows. Q: 2"


def test_parse_judge_reply_forms():
    verdicts, missing = parse_judge_reply('[{"id": "a", "passed": "no", "reason": "r"}]', ["a", "b"])
    assert verdicts["a"].passed is False and missing == ["b"]
    # Small judges number the questions instead of copying the ids: "2" is the second question as asked.
    numbered = '{"answers": [{"id": "1", "pass": true, "reason": "x"}, {"id": "2", "pass": false, "reason": "y"}]}'
    verdicts, missing = parse_judge_reply(numbered, ["a", "b"])
    assert (verdicts["a"].passed, verdicts["b"].passed, missing) == (True, False, [])
    verdicts, missing = parse_judge_reply('{"answers": [{"id": "2", "pass": true, "reason": "z"}]}', ["b"], ["a", "b"])
    assert verdicts["b"].passed and not missing  # a repair asks only for "b", the judge still numbers from 1
    verdicts, missing = parse_judge_reply('{"answers": [{"id": "7", "pass": true, "reason": "z"}]}', ["a"])
    assert not verdicts and missing == ["a"]
    with pytest.raises(ValueError):
        parse_judge_reply("no json here", ["a"])


async def test_judged_items_without_model_is_a_setup_error():
    with pytest.raises(RuleSetupError, match="judge model"):
        await evaluate(JUDGED, _plain_ctx())


# --- decisions ---------------------------------------------------------------------------------------------------------


async def test_decision_accept_revise_reject(episode, scripted_model):
    items = validate_items([
        {"rule": "sources_unchanged"},
        {"rule": "answer_present"},
        {"rule": "file_created", "params": {"glob": "*.md"}, "required": False},
    ])
    ok = episode().cell("print(open('sales.csv').readline())").answer("Header printed.")
    verdict = await evaluate(items, ok.context())
    assert verdict.decision == "accept"  # the advisory miss does not block
    assert verdict.score == pytest.approx(2 / 3) and "(advisory)" in verdict.feedback
    no_answer = episode().cell("print(1)").answer(None)
    verdict = await evaluate(items, no_answer.context())
    assert verdict.decision == "revise" and "<Answer>" in verdict.feedback
    vandal = episode().cell("open('sales.csv', 'w').write('')").answer("Emptied it.")
    verdict = await evaluate(items, vandal.context())
    assert verdict.decision == "reject" and verdict.item("sources_unchanged").hard


async def test_full_category_checklist_over_a_real_episode(episode, scripted_model):
    checklist = load_checklist("data_analysis")
    ep = episode().cell("import csv\nrows = list(csv.DictReader(open('sales.csv')))\nprint(rows[0].keys())") \
        .cell("import csv\nprint(sum(int(r['units']) for r in csv.DictReader(open('sales.csv')) if r['units']))",
              note="Sum the units.") \
        .answer("Total units sold: 10.")
    judge = scripted_model([json.dumps({i.id: {"passed": True, "reason": "fine"} for i in checklist.judged_items})])
    verdict = await evaluate(checklist.items, ep.context(), judge)
    assert verdict.decision == "accept", verdict.feedback
    assert {v.id for v in verdict.items} == {i.id for i in checklist.items}


async def test_rule_crash_fails_the_item_not_the_run():
    name = "_test_crashing_rule"

    @cl.rule(name)
    def _crash(ctx: RuleContext) -> cl.ItemResult:
        raise KeyError("boom")

    try:
        verdict = await evaluate([{"rule": name}], _plain_ctx())
        assert not verdict.items[0].passed and "KeyError" in verdict.items[0].reason
    finally:
        registry._RULES.pop(name)


def test_answer_grounded_catches_numbers_no_cell_printed():
    def ctx(answer: str, printed: str) -> RuleContext:
        turns = [Turn(text="<Code>x</Code>", code="print(x)", result=ExecResult(stdout=printed)),
                 Turn(text=f"<Answer>{answer}</Answer>")]
        return RuleContext(trajectory=Trajectory(prompt="# Instruction\nTop 3 albums, 2 decimals.", turns=turns,
                                                 answer=answer))

    printed = "   AlbumId   Total\n0       23  33.6624\n1       73  30.6900\nshare 0.4521\n"
    assert check(ctx("Album 23 has the largest total, 33.66 (45.2% of sales), top 3 shown.", printed), "answer_grounded").passed
    assert check(ctx("It is 33.67 when rounded up? No: 33.66.", printed), "answer_grounded").passed is False  # 33.67 is neither
    invented = check(ctx('"The Dark Side of the Moon" with a total of 177.99.', ""), "answer_grounded")
    assert not invented.passed and "177.99" in invented.reason
    assert check(ctx("The table was saved to totals.csv.", ""), "answer_grounded").passed  # no numbers, nothing to ground


def test_answer_after_output_needs_a_printing_last_cell():
    def ctx(*outputs: "ExecResult") -> RuleContext:
        turns = [Turn(text="<Code>x</Code>", code="x", result=r) for r in outputs] + [Turn(text="<Answer>a</Answer>")]
        return RuleContext(trajectory=Trajectory(prompt="# Instruction\nq", turns=turns, answer="a"))

    printed, silent = ExecResult(stdout="42\n"), ExecResult(stdout="")
    failed = ExecResult(stdout="", error="KeyError: 'x'")
    assert check(ctx(silent, printed), "answer_after_output").passed
    assert "printed nothing" in check(ctx(printed, silent), "answer_after_output").reason
    assert not check(ctx(printed, failed), "answer_after_output").passed
    assert not check(ctx(), "answer_after_output").passed


def test_replay_without_sandbox_is_a_setup_error():
    ctx = _plain_ctx()
    ctx.trajectory.turns.insert(0, Turn(text="<Code>x</Code>", code="print(1)", result=ExecResult(stdout="1\n")))
    with pytest.raises(RuleSetupError):
        check(ctx, "replay_reproduces")


# --- loading and validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_builtin_checklist_loads(category):
    checklist = load_checklist(category)
    assert checklist.category == category
    ids = [i.id for i in checklist.items]
    assert len(ids) == len(set(ids))
    rules = {i.rule for i in checklist.rule_items}
    assert {"execute_blocks_authentic", "sources_unchanged", "answer_present", "no_unresolved_errors"} <= rules
    assert checklist.judged_items


def test_list_categories_ignores_other_yaml(tmp_path):
    (tmp_path / "keywords.yaml").write_text("keywords: [a, b]\n")
    (tmp_path / "my_cat.yaml").write_text("items:\n  - rule: answer_present\n")
    categories = list_categories(tmp_path)
    assert set(CATEGORIES) <= set(categories) and "my_cat" in categories and "keywords" not in categories
    assert load_checklist("my_cat", tmp_path).items[0].id == "answer_present"


def test_user_dir_overrides_builtin(tmp_path):
    (tmp_path / "modeling.yaml").write_text("category: modeling\nitems:\n  - question: Is it good?\n")
    checklist = load_checklist("modeling", tmp_path)
    assert len(checklist.items) == 1 and checklist.items[0].id == "judged_1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("items:\n  - rule: no_such_rule\n", "unknown rule 'no_such_rule'"),
        ("items:\n  - rule: turns_between\n    params: {minimum: 2}\n", "minimum: Extra inputs are not permitted"),
        ("items:\n  - rule: file_created\n", "glob: Field required"),
        ("items:\n  - rule: turns_between\n    params: {min: lots}\n", "min: Input should be a valid integer"),
        ("items:\n  - {id: a, rule: answer_present}\n  - {id: a, question: 'q'}\n", "duplicate id 'a'"),
        ("items:\n  - {rule: answer_present, colour: red}\n", "colour"),
        ("items: nope\n", "`items` must be a list"),
        ("category: other\nitems: []\n", "does not match the file name"),
        ("items: [\n", "cannot read checklist"),
    ],
)
def test_bad_checklist_fails_at_load(tmp_path, body, message):
    (tmp_path / "broken.yaml").write_text(body)
    with pytest.raises(ChecklistError, match="broken.yaml") as exc:
        load_checklist("broken", tmp_path)
    assert message in str(exc.value)


def test_unknown_category_names_known_ones():
    with pytest.raises(ChecklistError, match="known categories: data_analysis"):
        load_checklist("astrology")


def test_task_items_from_questioner():
    items = validate_task_items([
        {"rule": "file_created", "params": {"glob": "customer_totals.csv"}},
        {"question": "Does the answer name one customer?"},
        {"rule": "sources_unchanged", "params": {"allow_workspace_changes": True}},
    ])
    assert [i.kind for i in items] == ["rule", "judged", "rule"]
    combined = load_checklist("data_preparation").with_task_items(items)
    sources_item = [i for i in combined if i.id == "sources_unchanged"]
    assert len(sources_item) == 1 and sources_item[0].params == {"allow_workspace_changes": True}
    assert sum(i.id == "file_created" for i in combined) == 1
    with pytest.raises(ChecklistError) as exc:
        validate_task_items([
            {"rule": "file_exists", "params": {"glob": "x"}},
            {"rule": "answer_present", "question": "both?"},
            {"rule": "uses_library"},
            {"question": "q?", "params": {"a": 1}},
        ])
    text = str(exc.value)
    assert "item 1" in text and "unknown rule 'file_exists'" in text
    assert "item 2: give exactly one of `rule` or `question`" in text
    assert "item 4: a question item takes no `params`" in text
    with pytest.raises(ChecklistError, match="name: Field required"):
        validate_task_items([{"rule": "uses_library"}])
    assert validate_task_items(None) == []
    schema = cl.task_item_schema()
    assert "replay_reproduces" in schema["properties"]["rule"]["anyOf"][0]["enum"]


def test_task_item_cannot_soften_a_standing_item():
    standing = validate_items([{"rule": "turns_between", "params": {"min": 2, "max": 30}}])
    task = validate_task_items([{"rule": "turns_between", "params": {"min": 3}, "required": False}])
    (combined,) = cl.combine_items(standing, task)
    assert combined.required and combined.params == {"min": 3, "max": 30}


def test_rule_plugin_entry_point_and_params_from_signature(monkeypatch):
    import importlib.metadata as md
    import types

    code = (
        "from synth.checklist import rule, ItemResult\n"
        "@rule('_test_answer_mentions')\n"
        "def mentions(ctx, *, word: str, times: int = 1):\n"
        "    n = (ctx.trajectory.answer or '').lower().count(word)\n"
        "    return ItemResult(n >= times, f'{word!r} appears {n} time(s)')\n"
    )

    class FakeEntryPoint:
        name, value = "mentions", "_ds_synth_test_plugin"

        def load(self):  # importing the plugin module runs its @rule decorator
            exec(code, types.ModuleType(self.value).__dict__)

    monkeypatch.setattr(md, "entry_points", lambda group=None: [FakeEntryPoint()] if group == cl.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert "_test_answer_mentions" not in registry._RULES
    try:
        (item,) = validate_items([{"rule": "_test_answer_mentions", "params": {"word": "rows"}}])
        assert item.params == {"word": "rows", "times": 1}
        with pytest.raises(ChecklistError, match="times"):
            validate_items([{"rule": "_test_answer_mentions", "params": {"word": "x", "times": "often"}}])
        verdict = asyncio.run(evaluate([item], _plain_ctx()))
        assert verdict.decision == "accept" and "appears 1" in verdict.items[0].reason
    finally:
        registry._RULES.pop("_test_answer_mentions", None)


def test_registering_twice_is_an_error():
    with pytest.raises(ChecklistError, match="already registered"):
        cl.rule("answer_present")(lambda ctx: cl.ItemResult(True, ""))
    with pytest.raises(ChecklistError, match="keyword-only"):
        cl.rule("_test_positional")(lambda ctx, x: cl.ItemResult(True, ""))


def test_judge_reply_cut_off_by_max_tokens_keeps_its_complete_answers():
    from synth.checklist import parse_judge_reply

    cut = '{"answers": [{"id": "a", "pass": true, "reason": "Execute shows 5"}, {"id": "b", "pass": false, "reas'
    verdicts, missing = parse_judge_reply(cut, ["a", "b", "c"])
    assert verdicts["a"].passed and verdicts["a"].reason == "Execute shows 5"
    assert verdicts["b"].passed is False and missing == ["c"]


def test_normalize_output_forgives_tmp_directories_and_a_python_installed_under_tmp():
    from synth.checklist.execution_rules import normalize_output

    bwrap, plain = 'File "/tmp/cell_1.py", line 2', 'File "/tmp/tmpab12_x/cell_1.py", line 2'
    assert normalize_output(bwrap) == normalize_output(plain)
    assert normalize_output(bwrap) != normalize_output('File "/tmp/cell_2.py", line 2')  # the file name counts
    # an audit: recorded where Python lived in /work, replayed by a checkout under /tmp
    recorded = 'File "/work/main/.venv/lib/python3.11/site-packages/pandas/core/generic.py", line 3002'
    replayed = 'File "/tmp/ciclone/.venv/lib/python3.11/site-packages/pandas/core/generic.py", line 3002'
    assert normalize_output(recorded, lenient=True) == normalize_output(replayed, lenient=True)
    assert normalize_output(recorded) != normalize_output(replayed)  # a replay on one machine stays strict


def test_groupby_keys_reads_pandas_and_sql():
    from synth.checklist.execution_rules import groupby_keys

    assert groupby_keys("df.groupby('cultivar')['alcohol'].mean()") == ["cultivar"]
    assert groupby_keys('t = df.groupby(["Genre", "MediaType"]).sum()') == ["Genre", "MediaType"]
    assert groupby_keys("df.groupby(by='Bytes').size(); df.groupby(df['Total']).size(); df.groupby(df.Name).size()") \
        == ["Bytes", "Total", "Name"]
    assert groupby_keys("df.groupby(pd.cut(df['Bytes'], 5)).size()") == []  # binned first: not a key per value
    sql = ('pd.read_sql("""SELECT g.Name, SUM(t.Bytes) FROM Track t JOIN Genre g ON t.GenreId = g.GenreId\n'
           'GROUP BY g.Name, t.MediaTypeId ORDER BY 2 DESC""", con)')
    assert groupby_keys(sql) == ["Name", "MediaTypeId"]
    assert groupby_keys("cur.execute('SELECT strftime(\"%Y\", d), SUM(x) FROM t GROUP BY 1')") == []


def test_groupby_keys_categorical_fails_a_group_per_measure_value():
    def ctx(code: str) -> RuleContext:
        turns = [Turn(text="<Code>x</Code>", code=code, result=ExecResult(stdout="ok\n")),
                 Turn(text="<Answer>a</Answer>")]
        return RuleContext(trajectory=Trajectory(prompt="# Instruction\nq", turns=turns, answer="a"))

    measures = {"continuous": ["Bytes", "Milliseconds"]}
    bad = check(ctx("print(df.groupby('bytes')['Milliseconds'].mean())"), "groupby_keys_categorical", **measures)
    assert not bad.passed and "cell 1 groups by bytes" in bad.reason
    assert check(ctx("print(df.groupby('GenreId')['Bytes'].sum())"), "groupby_keys_categorical", **measures).passed
    assert check(ctx("print(df.groupby(pd.cut(df['Bytes'], 4)).size())"), "groupby_keys_categorical",
                 **measures).passed
    assert check(ctx("print(df.groupby('Bytes').size())"), "groupby_keys_categorical").passed  # no measures named


def test_min_cells_counts_different_cells_only():
    def ctx(*codes: str) -> RuleContext:
        turns = [Turn(text="<Code>x</Code>", code=c, result=ExecResult(stdout="ok\n")) for c in codes]
        turns.append(Turn(text="<Answer>a</Answer>"))
        return RuleContext(trajectory=Trajectory(prompt="# Instruction\nq", turns=turns, answer="a"))

    assert check(ctx("print(1)", "print(2)", "print(3)"), "min_cells", n=3).passed
    padded = check(ctx("print(1)", "x = 2\nprint(x)", "x = 2\n\nprint(x)  "), "min_cells", n=3)
    assert not padded.passed and "2 different cell(s) ran (1 of 3 repeated" in padded.reason
    assert not check(ctx("print(1)"), "min_cells", n=3).passed
