"""The rules an audit added to the standing checklists: a cut answer, an answer without a result, an answer about
another task's columns, a malformed trajectory — each caught by code, not left to the judge."""

from __future__ import annotations

import pytest

from synth import checklist as cl
from synth.checklist import RuleContext, load_checklist
from synth.sandbox.base import ExecResult
from synth.trajectory import Trajectory, Turn

PRINTED = "   rate_marriage  children\nmean        4.11      1.40\n"
CODE = "import pandas as pd\ndf = pd.read_csv('affairs.csv')\nprint(df[['rate_marriage', 'children']].describe())"


def ctx(answer: str, *, printed: str = PRINTED, task: str = "What is the average rate_marriage?") -> RuleContext:
    turns = [Turn(text=f"<Analyze>Look.</Analyze>\n<Code>\n{CODE}\n</Code>", code=CODE, result=ExecResult(stdout=printed)),
             Turn(text=f"<Understand>Seen.</Understand>\n<Answer>{answer}</Answer>")]
    return RuleContext(trajectory=Trajectory(prompt=f"# Instruction\n{task}", turns=turns, answer=answer))


def check(rule: str, c: RuleContext) -> cl.ItemResult:
    spec = cl.get_rule(rule)
    return spec.fn(c, **spec.validate_params({}))


@pytest.mark.parametrize("answer, why", [
    ("The average rat", "mid-word"),
    ("The average rate_marriage is", "'is'"),
    ("The averages are:", "':'"),
    ("The mean (computed over 6366 rows", "unclosed"),
    ("The average rate_marriage in the survey is clearly higher than", "'than'"),
    ("The average rate_marriage of all respondents comes out at about four", "no ending"),
])
def test_answer_complete_catches_cut_answers(answer, why):
    result = check("answer_complete", ctx(answer))
    assert not result.passed and why in result.reason


@pytest.mark.parametrize("answer", [
    "The average rate_marriage is 4.11.",
    "Average rate_marriage: 4.11",
    "- rate_marriage\n- children",  # a list item needs no full stop
    "| column | mean |\n|---|---|\n| rate_marriage | 4.11 |",
    "The mean is 4.11 (over all rows)",
])
def test_answer_complete_lets_finished_answers_pass(answer):
    assert check("answer_complete", ctx(answer)).passed


def test_answer_states_result():
    assert check("answer_states_result", ctx("The average rate_marriage is 4.11.")).passed
    named = ctx("The most common region is Oceania.", printed="region\nOceania    12\n",
                task="Which region is most common?")
    assert check("answer_states_result", named).passed
    empty = check("answer_states_result", ctx("I computed the average rate_marriage with pandas describe."))
    assert not empty.passed and "states no result" in empty.reason
    echo = ctx("I listed the top 5 rows.", task="Show the top 5 rows by rate_marriage.")
    assert not check("answer_states_result", echo).passed  # 5 is only repeated from the task


def test_answer_names_known_catches_another_tasks_answer():
    assert check("answer_names_known", ctx("The average rate_marriage is 4.11.")).passed
    assert check("answer_names_known", ctx("The mean is 4.11.")).passed
    foreign = check("answer_names_known", ctx("The patient_id with the most ages is 1 and `bill_length_mm` is 3."))
    assert not foreign.passed and "'patient_id'" in foreign.reason and "'bill_length_mm'" in foreign.reason


def test_protocol_valid():
    good = ctx("The average rate_marriage is 4.11.")
    text = "<Analyze>Look.</Analyze>\n<Code>\nx\n</Code>\n<Execute>\n1\n</Execute>\n<Answer>1</Answer>"
    assert check("protocol_valid", RuleContext(trajectory=good.trajectory, assistant_text=text)).passed
    for bad, code in [("<Analyze>a</Analyze>\n<Code>\nx\n</Code>\n<Answer>1</Answer>", "code_not_executed"),
                      ("<Analyze>a</Analyze>\n<Execute>\n1\n</Execute>\n<Answer>1</Answer>", "orphan_execute"),
                      ("<Analyze>a</Analyze>\nstray words\n<Answer>1</Answer>", "text_outside_tags"),
                      ("<Analyze>a</Analyze>\n<Answer>cut", "unclosed_tag")]:
        result = check("protocol_valid", RuleContext(trajectory=good.trajectory, assistant_text=bad))
        assert not result.passed and code in result.reason, (bad, result.reason)


@pytest.mark.parametrize("category", ["data_preparation", "data_cleaning", "data_analysis", "data_insight", "modeling",
                                      "report_generation", "open_research"])
def test_every_standing_checklist_catches_a_cut_answer(category):
    ids = {i.rule for i in load_checklist(category).rule_items}
    assert "answer_complete" in ids
    if category in ("data_analysis", "data_insight", "modeling"):
        assert {"answer_states_result", "answer_names_known"} <= ids


FORMAT_TASK = ("Question: What are the mean and std of Close?\nFormat: @mean_close[mean], @std_close[std] where both "
               "are rounded to two decimal places.\nGive every requested value exactly in the @name[value] format "
               "above, e.g. @mean[1.23].")  # the notation and its example are not requested fields


@pytest.mark.parametrize("answer, passed, why", [
    ("@mean_close[4.11], @std_close[1.40]", True, "all 2"),
    ("@mean_close[4], @std_close[1.4]", True, "all 2"),  # fewer decimals than asked is not looser
    ("The mean is 4.11 and the std is 1.40.", False, "no @mean_close[...], @std_close[...]; the task asks for: "
                                                    "@mean_close[mean] @std_close[std]"),
    ("@mean_close[4.11]", False, "no @std_close[...]"),
    ("@mean_close[4.11], @std_close[]", False, "no @std_close[...]"),
    ("@mean_close[4.1134], @std_close[1.40]", False, "@mean_close[4.1134] has 4 decimals where the task asks for 2"),
])
def test_answer_format_followed(answer, passed, why):
    result = check("answer_format_followed", ctx(answer, task=FORMAT_TASK))
    assert result.passed is passed and why in result.reason


def test_answer_format_followed_skips_tasks_without_a_format_or_with_unattributed_rounding():
    assert check("answer_format_followed", ctx("The average rate_marriage is 4.11.")).passed
    mixed = "Format: @r[r] rounded to two decimal places, @p[p] rounded to four decimal places."
    assert check("answer_format_followed", ctx("@r[0.12345], @p[0.123456]", task=mixed)).passed
    assert not check("answer_format_followed", ctx("@r[0.12]", task=mixed)).passed


# InfiAgent-DABench's own formats: a rounding stated per field, in its brackets or in a `where "x" …` clause.
IN_BRACKETS = ('Format: @correlation_type[A string that should be either "Positive Correlation" or "No Correlation"] '
               '@correlation_coefficient[The Pearson correlation coefficient, rounded to two decimal places] '
               '@p_value[The p-value of the correlation test, rounded to three decimal places]')
IN_CLAUSES = ('Format: @correlation_coefficient[r_value]\n@p_value[p_value]\nwhere "r_value" is a number between -1 '
              'and 1, rounded to two decimal places.\nwhere "p_value" is a number between 0 and 1, rounded to four '
              'decimal places.')


@pytest.mark.parametrize("task, answer, passed, why", [
    (IN_BRACKETS, "@correlation_type[Positive Correlation] @correlation_coefficient[0.99] @p_value[0.000]", True,
     "all 3"),
    (IN_BRACKETS, "@correlation_type[Positive Correlation] @correlation_coefficient[0.9915] @p_value[0.0]", False,
     "@correlation_coefficient[0.9915] has 4 decimals where the task asks for 2"),
    (IN_CLAUSES, "@correlation_coefficient[0.12] @p_value[0.1234]", True, "all 2"),
    (IN_CLAUSES, "@correlation_coefficient[0.12] @p_value[0.12345]", False, "asks for 4"),
    (IN_CLAUSES, "@correlation_coefficient[0.123] @p_value[0.1234]", False, "asks for 2"),
])
def test_answer_format_followed_reads_a_rounding_per_field(task, answer, passed, why):
    result = check("answer_format_followed", ctx(answer, task=task))
    assert result.passed is passed and why in result.reason
