"""The agent loop with a scripted model (test double) and the REAL local sandbox."""

import pytest
from doubles import ScriptedChatModel

from synth import protocol
from synth.agent import AgentConfig, run_agent
from synth.sandbox import get_sandbox
from synth.sandbox.base import Limits

CSV = "city,price\nBerlin,12.5\nParis,20\nBerlin,17.5\nRome,9\n"


@pytest.fixture
def open_session(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text(CSV)
    sessions = []

    def _open(mode="script", timeout_s=30.0):
        session = get_sandbox("local").open([data / "orders.csv"], mode=mode, limits=Limits(timeout_s=timeout_s))
        sessions.append(session)
        return session

    yield _open
    for s in sessions:
        s.close()
    assert (data / "orders.csv").read_text() == CSV  # source never modified


class StopIgnoringModel(ScriptedChatModel):
    """An engine that ignores the stop string (the upstream 'invented Execute' problem)."""

    async def chat(self, messages, *, stop=None, **kw):
        self.stop_seen = stop
        return await super().chat(messages, stop=None, **kw)


class StopReturningModel(ScriptedChatModel):
    """An engine that stops at the stop string but returns it inside the content (llama.cpp server)."""

    async def chat(self, messages, *, stop=None, **kw):
        completion = await super().chat(messages, stop=stop, **kw)
        if stop and "<Code>" in completion.text:
            completion.text += stop[0]
        return completion


def code_turn(code, analyze="Compute it."):
    return f"<Analyze>\n{analyze}\n</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>"


MEAN_CODE = "import pandas as pd\ndf = pd.read_csv('orders.csv')\nprint(df[df.city == 'Berlin'].price.mean())"
ANSWER = "<Understand>\nThe mean is 15.0.\n</Understand>\n<Answer>\n15.0\n</Answer>"


async def test_normal_finish(open_session):
    model = ScriptedChatModel([code_turn(MEAN_CODE), ANSWER], strict=True)
    traj = await run_agent(model, open_session(), "Mean price in Berlin?")
    assert traj.stop_reason == "answer" and traj.answer == "15.0"
    assert len(traj.turns) == 2 and traj.turns[0].result.stdout.strip() == "15.0"
    assert traj.prompt.startswith("# Instruction\nMean price in Berlin?\n\n# Data\nFile 1:\n")
    assert '"name": "orders.csv"' in traj.prompt
    text = traj.assistant_text()
    assert protocol.validate(text) == []
    assert "<Execute>\n15.0\n</Execute>" in text
    first, second = model.calls
    assert first["stop"] == ["</Code>"]
    assert first["messages"][0]["role"] == "system" and "<Answer>" in first["messages"][0]["content"]
    assert first["messages"][1]["role"] == "user"  # the few-shot example follows the system prompt
    assert first["messages"][-1] == {"role": "user", "content": traj.prompt}
    feedback = second["messages"][-1]
    assert feedback["role"] == "user" and feedback["content"].startswith("<Execute>\n15.0\n</Execute>")
    assert second["messages"][-2] == {"role": "assistant", "content": traj.turns[0].text}
    assert traj.mode == "script" and traj.model == "scripted"


async def test_a_task_with_an_answer_format_is_repeated_where_the_model_answers(open_session):
    task = ('Mean price in Berlin?\nFormat: @mean_price[mean] @city[name] where "mean" is rounded to two decimal '
            'places. Give every value in the @name[value] format, e.g. @mean[1.23].')
    model = ScriptedChatModel([code_turn(MEAN_CODE), "<Answer>@mean_price[15.00] @city[Berlin]</Answer>"], strict=True)
    await run_agent(model, open_session(), task)
    reminder = model.calls[1]["messages"][-1]["content"]
    assert reminder.startswith("<Execute>\n15.0\n</Execute>")
    assert reminder.rstrip().endswith("in this form: @mean_price[mean] @city[name] (decimal places: mean_price to 2).")
    plain = ScriptedChatModel([code_turn(MEAN_CODE), ANSWER], strict=True)
    await run_agent(plain, open_session(), "Mean price in Berlin?")
    assert "in this form" not in plain.calls[1]["messages"][-1]["content"]


async def test_invented_execute_is_replaced_by_the_real_output(open_session):
    invented = code_turn("print(6 * 7)") + "\n<Execute>\n99999\n</Execute>\n<Answer>\n99999\n</Answer>"
    model = StopIgnoringModel([invented, "<Understand>42</Understand><Answer>42</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "What is 6*7?")
    assert traj.answer == "42" and traj.stop_reason == "answer"
    text = traj.assistant_text()
    assert "99999" not in text
    assert "<Execute>\n42\n</Execute>" in text
    assert any("invented" in n for n in traj.turns[0].notes)
    assert protocol.validate(text) == []


async def test_answer_with_code_in_same_reply_runs_code_and_asks_again(open_session):
    blind = code_turn("print(2 + 2)") + "\n<Answer>\n5\n</Answer>"
    model = StopIgnoringModel([blind, "<Understand>4</Understand><Answer>4</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "2+2?")
    assert traj.answer == "4" and len(traj.turns) == 2
    assert "<Answer>" not in traj.turns[0].text and traj.turns[0].result.stdout.strip() == "4"


@pytest.mark.parametrize("model_cls", [ScriptedChatModel, StopReturningModel])
async def test_stop_string_reappended_exactly_once(open_session, model_cls):
    model = model_cls([code_turn("print(1)"), "<Answer>1</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.turns[0].text.count("</Code>") == 1
    assert traj.turns[0].text.endswith("</Code>")
    assert traj.assistant_text().count("</Code>") == 1


async def test_reply_without_tags_is_wrapped(open_session):
    model = ScriptedChatModel(["I should look at the data.", code_turn("print(3)"), "<Answer>3</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.turns[0].text == "<Analyze>\nI should look at the data.\n</Analyze>"
    assert traj.turns[0].notes and traj.answer == "3"
    assert protocol.validate(traj.assistant_text()) == []


async def test_reply_without_tags_reprompted(open_session):
    model = ScriptedChatModel(["no tags here", "<Analyze>a</Analyze><Answer>b</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(on_no_tags="reprompt"))
    assert [t.text for t in traj.turns] == ["<Analyze>a</Analyze><Answer>b</Answer>"]
    second = model.calls[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": "no tags here"}
    assert second[-1]["role"] == "user" and "tags" in second[-1]["content"]


async def test_fenced_code_outside_tags_is_run(open_session):
    reply = "Let me compute.\n```python\nprint(10 // 3)\n```"
    model = ScriptedChatModel([reply, "<Answer>3</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.turns[0].code == "print(10 // 3)" and traj.turns[0].result.stdout.strip() == "3"
    assert traj.turns[0].text.startswith("<Analyze>\nLet me compute.\n</Analyze>\n<Code>")
    assert protocol.validate(traj.assistant_text()) == []


async def test_endless_loop_hits_round_cap(open_session):
    model = ScriptedChatModel([lambda msgs: code_turn(f"print({len(msgs)})")])
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(max_rounds=4))
    assert traj.stop_reason == "max_rounds" and traj.answer is None
    assert len(model.calls) == 4 and len(traj.turns) == 4
    assert all(t.result is not None and t.result.ok for t in traj.turns)


async def test_repeated_code_is_flagged_then_stopped(open_session):
    model = ScriptedChatModel([code_turn("print('same')")])
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(max_repeated_code=3))
    assert traj.stop_reason == "repeated_code"
    assert len(traj.turns) == 2 and len(model.calls) == 3
    assert "already ran exactly this code" in model.calls[2]["messages"][-1]["content"]


async def test_code_error_then_recovery(open_session):
    bad = "import pandas as pd\ndf = pd.read_csv('orders.csv')\nprint(df['Price'].mean())"
    model = ScriptedChatModel([code_turn(bad), code_turn(MEAN_CODE, "Fix the column."), ANSWER], strict=True)
    traj = await run_agent(model, open_session(), "Mean price in Berlin?")
    first, second = traj.turns[0].result, traj.turns[1].result
    assert not first.ok and "KeyError" in first.error
    assert second.ok and second.stdout.strip() == "15.0"
    fed = model.calls[1]["messages"][-1]["content"]
    assert "[Error]:" in fed and "KeyError" in fed
    assert traj.answer == "15.0"


async def test_cell_timeout(open_session):
    model = ScriptedChatModel([code_turn("import time\ntime.sleep(30)"), "<Answer>too slow</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(cell_timeout_s=1, refuse_unsupported_answer=0))
    result = traj.turns[0].result
    assert result.timed_out and not result.ok and result.duration_s < 15
    assert traj.answer == "too slow"


async def test_answer_right_after_a_failed_cell_is_refused_once(open_session):
    bad = "import pandas as pd\ndf = pd.read_csv('orders.csv')\nprint(df['Price'].mean())"
    guess = "<Answer>12.5</Answer>"
    model = ScriptedChatModel([code_turn(bad), guess, code_turn(MEAN_CODE, "Fix the column."), ANSWER], strict=True)
    traj = await run_agent(model, open_session(), "Mean price in Berlin?")
    assert "fix the code" in model.calls[2]["messages"][-1]["content"]
    assert traj.answer == "15.0" and "12.5" not in traj.assistant_text()
    assert [t.result.ok for t in traj.turns if t.result] == [False, True]


async def test_answer_after_a_cell_that_printed_nothing_is_refused_once(open_session):
    silent = "import pandas as pd\ndf = pd.read_csv('orders.csv')\nmean = df[df.city == 'Berlin'].price.mean()"
    invented = "<Answer>The mean is 177.99.</Answer>"
    model = ScriptedChatModel([code_turn(silent), invented, code_turn("print(mean)", "Print it."), ANSWER],
                              strict=True)
    traj = await run_agent(model, open_session("session"), "Mean price in Berlin?")
    assert "printed nothing" in model.calls[1]["messages"][-1]["content"]  # the note on the silent cell
    assert "not supported by any output" in model.calls[2]["messages"][-1]["content"]  # the refusal
    assert traj.answer == "15.0" and "177.99" not in traj.assistant_text()
    assert [t.result.output() for t in traj.turns if t.result] == ["", "15.0"]


async def test_refusal_is_bounded(open_session):
    model = ScriptedChatModel([code_turn("1/0"), "<Answer>a</Answer>", code_turn("1/0 + 1"), "<Answer>b</Answer>"],
                              strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.answer == "b" and traj.stop_reason == "answer" and len(model.calls) == 4


async def test_answer_before_the_tasks_steps_is_refused_and_the_steps_are_reminded(open_session):
    early = "<Answer>15.0</Answer>"
    model = ScriptedChatModel([early, code_turn("print(len(open('orders.csv').read().splitlines()))"), early,
                               code_turn("print('cities')"), code_turn(MEAN_CODE), ANSWER], strict=True)
    traj = await run_agent(model, open_session(), "Mean price in Berlin, in 3 steps?", config=AgentConfig(min_cells=3))
    assert "at least 3 separate steps" in model.calls[1]["messages"][-1]["content"]  # 0 cells: refused
    assert "1 ran so far" in model.calls[2]["messages"][-1]["content"]  # the reminder after the first output
    assert "not accepted yet" in model.calls[3]["messages"][-1]["content"]  # refused again after 1 cell
    assert "2 ran so far" in model.calls[4]["messages"][-1]["content"]
    assert "ran so far" not in model.calls[5]["messages"][-1]["content"]  # 3 cells: no more reminder
    assert traj.answer == "15.0" and len([t for t in traj.turns if t.result]) == 3
    assert "<Answer>" not in "".join(t.text for t in traj.turns[:-1])  # the refused answers are no steps


async def test_a_cell_rerun_unchanged_is_no_new_step(open_session):
    model = ScriptedChatModel([code_turn("print(1)"), code_turn("print(1) "), "<Answer>1</Answer>",
                               code_turn("print(2)"), "<Answer>1 2</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(min_cells=2))
    assert "1 ran so far" in model.calls[2]["messages"][-1]["content"]  # after the repeat: still one step
    assert "not accepted yet" in model.calls[3]["messages"][-1]["content"]
    assert traj.answer == "1 2" and traj.steps() == 2 and len(traj.results()) == 3


async def test_early_answer_refusal_is_bounded_and_absent_without_a_step_requirement(open_session):
    model = ScriptedChatModel(["<Answer>a</Answer>"] * 3, strict=True)
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(min_cells=3))
    assert traj.answer == "a" and len(model.calls) == 3 and not traj.turns[0].code  # refused twice, then it stands
    model = ScriptedChatModel([code_turn("print(1)"), "<Answer>1</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.answer == "1" and "ran so far" not in model.calls[1]["messages"][-1]["content"]


@pytest.mark.parametrize("mode, expected", [("session", "42"), ("script", "NameError")])
async def test_session_versus_script_state(open_session, mode, expected):
    model = ScriptedChatModel([code_turn("x = 41"), code_turn("print(x + 1)"), "<Answer>done</Answer>"], strict=True)
    traj = await run_agent(model, open_session(mode), "q")
    second = traj.turns[1].result
    assert expected in (second.stdout + (second.error or ""))
    assert traj.mode == mode
    system = model.calls[0]["messages"][0]["content"]
    assert ("notebook" in system) == (mode == "session")


async def test_deepanalyze_family_gets_no_system_prompt_and_execute_role(open_session):
    model = ScriptedChatModel([code_turn("print(5)"), "<Answer>5</Answer>"], family="deepanalyze", strict=True)
    traj = await run_agent(model, open_session(), "q")
    first, second = model.calls
    assert [m["role"] for m in first["messages"]] == ["user"]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "execute"]
    assert "<Execute>\n5\n</Execute>" in second["messages"][-1]["content"]
    assert traj.answer == "5"


async def test_deepanalyze_turns_without_code_continue_one_assistant_message(open_session):
    model = ScriptedChatModel(["<Analyze>Look first.</Analyze>", "<Understand>Then sum.</Understand>",
                               code_turn("print(5)"), "<Answer>5</Answer>"], family="deepanalyze", strict=True)
    traj = await run_agent(model, open_session(), "q")
    for call in model.calls:  # llama.cpp refuses two assistant messages at the end of a request
        roles = [m["role"] for m in call["messages"]]
        assert all(a != "assistant" or b != "assistant" for a, b in zip(roles, roles[1:])), roles
    last = model.calls[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "execute"]
    assert last[1]["content"].startswith("<Analyze>Look first.</Analyze><Understand>Then sum.</Understand>")
    assert traj.answer == "5" and len(traj.turns) == 4


async def test_model_error_stops_with_message(open_session):
    class Failing(ScriptedChatModel):
        async def chat(self, messages, **kw):
            raise ConnectionError("endpoint unreachable")

    traj = await run_agent(Failing([]), open_session(), "q")
    assert traj.stop_reason == "model_error" and "endpoint unreachable" in traj.error
    assert traj.to_dict()["error"] == traj.error


async def test_empty_replies_bounded(open_session):
    model = ScriptedChatModel(["  "])
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(max_empty_replies=2))
    assert traj.stop_reason == "empty_reply" and len(model.calls) == 3 and traj.turns == []


async def test_context_overflow_truncates_old_outputs_for_the_model_only(open_session):
    big = code_turn("print('x' * 6000)")
    model = ScriptedChatModel([big, code_turn("print('y' * 6000)"), "<Answer>ok</Answer>"], strict=True)
    cfg = AgentConfig(max_context_chars=9000)
    traj = await run_agent(model, open_session(), "q", config=cfg)
    assert len(traj.turns[0].result.stdout.strip()) == 6000  # the record keeps the real output
    last = model.calls[2]["messages"]
    assert "output truncated" in last[-3]["content"]  # the oldest Execute was shortened
    assert sum(len(m["content"]) for m in last) <= 9000 + 2000


async def test_token_budget(open_session):
    model = ScriptedChatModel([lambda msgs: code_turn(f"print({len(msgs)})")])
    traj = await run_agent(model, open_session(), "q", config=AgentConfig(token_budget=10))
    assert traj.stop_reason == "token_budget" and len(traj.turns) >= 1


async def test_events_and_feedback(open_session):
    events = []

    async def on_event(kind, payload):
        events.append(kind)

    model = ScriptedChatModel([code_turn("print(1)"), ANSWER], strict=True)
    cfg = AgentConfig(feedback="Use the price column.")
    traj = await run_agent(model, open_session(), "q", config=cfg, on_event=on_event)
    assert events == ["Analyze", "Code", "Execute", "Understand", "Answer", "stop"]
    assert "Use the price column." in model.calls[0]["messages"][-1]["content"]
    assert "Use the price column." not in traj.prompt


async def test_history_and_explicit_files(open_session):
    model = ScriptedChatModel(["<Analyze>a</Analyze><Answer>b</Answer>"], strict=True)
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "<Answer>x</Answer>"}]
    traj = await run_agent(model, open_session(), "q", files=[("other.csv", 2048)], history=history)
    assert '"name": "other.csv"' in traj.prompt and "orders.csv" not in traj.prompt
    msgs = model.calls[0]["messages"]
    assert msgs[-3:-1] == history


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="max_round"):
        AgentConfig(max_round=3)


# --- synth analyze (CLI) with the scripted model in place of a real one -------------------------------------


@pytest.fixture
def cli_model(monkeypatch):
    import synth.llm

    def install(replies):
        model = ScriptedChatModel(replies, strict=True)
        monkeypatch.setattr(synth.llm, "load_model", lambda spec=None, **kw: model)
        return model

    return install


def test_cli_analyze_writes_report_and_created_files(tmp_path, cli_model):
    import json

    from typer.testing import CliRunner

    from synth.cli import app

    data = tmp_path / "orders.csv"
    data.write_text(CSV)
    write = "import pandas as pd\nm = pd.read_csv('orders.csv').price.mean()\nopen('summary.txt', 'w').write(str(m))\nprint(m)"
    cli_model([code_turn(write), "<Understand>ok</Understand><Answer>\nMean price: 14.75\n</Answer>"])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", "Mean price?", "--data", str(data), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["answer"] == "Mean price: 14.75" and payload["turns"] == 2 and payload["stop_reason"] == "answer"
    assert payload["trajectory"]["turns"][0]["result"]["stdout"].strip() == "14.75"
    assert set(payload["usage"]) >= {"prompt_tokens", "completion_tokens"}
    assert "Mean price: 14.75" in (out / "report.md").read_text()
    assert json.loads((out / "trajectory.json").read_text())["answer"] == payload["answer"]
    assert (out / "files" / "summary.txt").read_text() == "14.75"
    assert data.read_text() == CSV and not (tmp_path / "summary.txt").exists()


def test_cli_analyze_live_output_and_unanswered_exit_code(tmp_path, cli_model):
    from typer.testing import CliRunner

    from synth.cli import app

    data = tmp_path / "orders.csv"
    data.write_text(CSV)
    cli_model([code_turn("print('looping')")] * 2)
    result = CliRunner().invoke(app, ["analyze", "q", "--data", str(data), "--max-rounds", "2"])
    assert result.exit_code == 1
    assert "<Code>" in result.output and "looping" in result.output and "max_rounds" in result.output


def test_cli_analyze_bad_data_path(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    result = CliRunner().invoke(app, ["analyze", "q", "--data", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "nope.csv" in result.output and "no such file" in result.output


async def test_reply_that_is_only_an_invented_execute_counts_as_empty(open_session):
    model = StopIgnoringModel(["<Execute>\n42\n</Execute>", "<Analyze>a</Analyze><Answer>b</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert [t.text for t in traj.turns] == ["<Analyze>a</Analyze><Answer>b</Answer>"]
    assert "42" not in traj.assistant_text()


async def test_echoed_execute_block_is_dropped_not_treated_as_invented(open_session):
    echo = "<Execute>\n5\n</Execute>\nContinue: ...\n<Understand>It is 5.</Understand>\n<Answer>5</Answer>"
    model = ScriptedChatModel([code_turn("print(5)"), echo], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.answer == "5" and traj.stop_reason == "answer"
    assert "copy of the previous <Execute>" in traj.turns[-1].notes[0]
    assert traj.assistant_text().count("<Execute>") == 1


async def test_invented_execute_that_differs_from_the_real_output_is_still_cut(open_session):
    fake = "<Execute>\n6\n</Execute>\n<Answer>6</Answer>"
    model = ScriptedChatModel([code_turn("print(5)"), fake, "<Answer>5</Answer>"], strict=True)
    traj = await run_agent(model, open_session(), "q")
    assert traj.answer == "5" and "6" not in traj.assistant_text().replace("</Execute>", "")


async def test_a_database_in_the_data_brings_the_database_example(open_session, tmp_path):
    import sqlite3

    database = tmp_path / "shop.sqlite"
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE Purchase (Total REAL)")
    plain_model = ScriptedChatModel([ANSWER], strict=True)
    await run_agent(plain_model, open_session(), "Mean price?")
    session = get_sandbox("local").open([database], mode="session")
    try:
        db_model = ScriptedChatModel([ANSWER], strict=True)
        await run_agent(db_model, session, "Largest purchase?")
    finally:
        session.close()
    plain = " ".join(m["content"] for m in plain_model.calls[0]["messages"])
    with_db = db_model.calls[0]["messages"]
    assert "sqlite_master" not in plain and "orders.csv" in plain
    assert with_db[0]["role"] == "system" and "shop.sqlite is a database" in with_db[0]["content"]
    assert any("sqlite_master" in m["content"] for m in with_db if m["role"] == "assistant")
    assert "orders.csv" not in " ".join(m["content"] for m in with_db)
