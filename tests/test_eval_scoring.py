"""Official scorers of `synth eval`, checked by hand against real benchmark samples (shared/data)."""

from __future__ import annotations

import json

import pytest

from train.eval import EvalDataError, get_benchmark
from train.eval.benchmarks import final_answer, rouge_l


@pytest.fixture(scope="module")
def sandbox():
    from synth.sandbox import get_sandbox

    return get_sandbox("local")


def _items(shared_data, bench, rel):
    return {item.id: item for item in get_benchmark(bench).load(shared_data / rel, None)}


# --- InfiAgent-DABench ------------------------------------------------------------------------------------------


def test_infiagent_loader_gives_question_format_and_table(shared_data):
    items = _items(shared_data, "infiagent", "bench_samples/infiagent_sample")
    assert len(items) == 10
    item = items["75"]
    assert item.reference == [["daily_return_std", "0.94"], ["daily_return_mean", "-0.14"]]
    assert "@daily_return_mean[mean]" in item.instruction and "microsoft.csv" in item.instruction
    assert list(item.files) == ["microsoft.csv"] and item.files["microsoft.csv"].is_file()
    assert item.category == "medium"


def test_infiagent_closed_form_right_partial_and_wrong(shared_data):
    bench = get_benchmark("infiagent")
    item = _items(shared_data, "infiagent", "bench_samples/infiagent_sample")["75"]
    right = bench.score(item, "The mean is @daily_return_mean[-0.14] and the std @daily_return_std[0.94].", None)
    assert right.correct and right.score == 1.0 and right.details["sub_correct"] == 2
    # Numbers differing by < 1e-6 count as equal; a later occurrence of a name replaces an earlier one.
    numeric = bench.score(item, "@daily_return_std[0.5] @daily_return_mean[-0.1400000] @daily_return_std[0.940]", None)
    assert numeric.correct
    partial = bench.score(item, "@daily_return_mean[-0.14], @daily_return_std[0.95]", None)
    assert not partial.correct and partial.details["sub_correct"] == 1 and partial.details["sub_total"] == 2
    missing = bench.score(item, "@daily_return_mean[-0.14]", None)
    assert not missing.correct and missing.details["sub_correct"] == 1
    assert not bench.score(item, None, None).correct


def test_infiagent_extra_metrics_per_question_and_sub_question():
    bench = get_benchmark("infiagent")
    records = [{"correct": True, "details": {"sub_correct": 2, "sub_total": 2}},
               {"correct": False, "details": {"sub_correct": 1, "sub_total": 2}},
               {"correct": False, "details": {"sub_correct": 0, "sub_total": 1}}]
    extra = bench.extra_metrics(records)
    assert extra["accuracy_by_question"] == pytest.approx(1 / 3)
    assert extra["accuracy_by_sub_question"] == pytest.approx(3 / 5)


def test_infiagent_missing_labels_is_a_clear_error(shared_data, tmp_path):
    src = shared_data / "bench_samples" / "infiagent_sample"
    (tmp_path / "questions.jsonl").write_text((src / "questions.jsonl").read_text())
    (tmp_path / "labels.jsonl").write_text('{"id": 35, "common_answers": [["removed_outliers_count", "0"]]}\n')
    (tmp_path / "tables").symlink_to(src / "tables")
    with pytest.raises(EvalDataError, match=r"questions.jsonl:2: question id 75 has no `common_answers`"):
        get_benchmark("infiagent").load(tmp_path, None)


# --- WikiTQ -----------------------------------------------------------------------------------------------------


def test_wikitq_denotation_accuracy(shared_data):
    bench = get_benchmark("wikitq")
    items = _items(shared_data, "wikitq", "instruct/wikitq_train_sample")
    single, number, listed = items["nt-5305"], items["nt-2471"], items["nt-1028"]
    assert list(single.files) == ["640.csv"] and single.files["640.csv"].is_file()
    assert bench.score(single, "It was him.\nFinal Answer: Andrew Bertie", None).correct
    assert not bench.score(single, "Final Answer: Vajiravudh", None).correct
    assert bench.score(number, "Final Answer: 20.0", None).correct
    assert not bench.score(number, "Final Answer: 30", None).correct
    # Lists: same values in any order, same count.
    assert bench.score(listed, "Final Answer: The Verdict | Three Strangers | Devotion", None).correct
    assert not bench.score(listed, "Final Answer: The Verdict | Three Strangers", None).correct
    # Without a Final Answer line the usual spots are read ("The answer is X").
    assert bench.score(single, "The answer is Andrew Bertie.", None).correct


# --- TableBench -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tablebench(shared_data):
    return {i.id[:8]: i for i in get_benchmark("tablebench").load(
        shared_data / "bench_samples" / "tablebench_sample.jsonl", None)}


def test_tablebench_loader_writes_the_table_and_picks_the_scoring_kind(tablebench, shared_data):
    import csv
    import io

    item = tablebench["1e0891ff"]
    raw = next(json.loads(line) for line in (shared_data / "bench_samples" / "tablebench_sample.jsonl").open()
               if json.loads(line)["id"] == item.id)
    rows = list(csv.reader(io.StringIO(item.texts["table.csv"])))
    assert rows[0] == raw["table"]["columns"]
    assert rows[1:] == [[str(v) for v in row] for row in raw["table"]["data"]]
    assert item.category == "NumericalReasoning/Aggregation"
    kinds = {i.meta["qsubtype"]: i.meta["kind"] for i in tablebench.values()}
    assert kinds["MatchBased"] == kinds["Aggregation"] == kinds["ImpactAnalysis"] == "exact"
    assert kinds["CorrelationAnalysis"] == kinds["TrendForecasting"] == kinds["StatisticalAnalysis"] == "tolerance"
    assert kinds["DescriptiveAnalysis"] == kinds["AnomalyDetection"] == "rouge"
    assert kinds["ChartGeneration"] == "chart"


def test_tablebench_exact_match(tablebench):
    score = get_benchmark("tablebench").score
    assert score(tablebench["1e0891ff"], "I summed it.\nFinal Answer: 38", None).correct  # reference '38'
    assert not score(tablebench["1e0891ff"], "Final Answer: 39", None).correct
    assert not score(tablebench["1e0891ff"], "Final Answer: 38.5", None).correct  # no tolerance here
    assert score(tablebench["daa1e132"], "Final Answer: Benin, Quebec, Cape Verde, Ivory Coast", None).correct
    assert not score(tablebench["daa1e132"], "Final Answer: Benin, Quebec", None).correct
    assert score(tablebench["6ba14be1"], "Final Answer: 146.25%", None).correct  # reference '146.25%'
    assert not score(tablebench["6ba14be1"], "Final Answer: 146.3%", None).correct
    assert score(tablebench["dc21011c"], "Final Answer: Total viewers, share", None).correct  # ImpactAnalysis
    assert not score(tablebench["dc21011c"], "Final Answer: rating", None).correct
    assert not score(tablebench["1e0891ff"], None, None).correct


def test_tablebench_ten_percent_tolerance(tablebench):
    score = get_benchmark("tablebench").score
    corr = tablebench["6ebaaae2"]  # 'Strong positive correlation, 0.81'
    assert score(corr, "Final Answer: Strong positive correlation, 0.85", None).correct  # 4.9 % off
    assert not score(corr, "Final Answer: Strong positive correlation, 0.95", None).correct  # 17 % off
    assert not score(corr, "Final Answer: Weak positive correlation, 0.81", None).correct
    stat = tablebench["5a118654"]  # StatisticalAnalysis '58.86'
    assert score(stat, "Final Answer: 63.5", None).correct
    assert not score(stat, "Final Answer: 65", None).correct
    trend = tablebench["8375929c"]  # TrendForecasting '85'
    assert score(trend, "Final Answer: 80", None).correct and not score(trend, "Final Answer: 70", None).correct


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat on the mat") = 5: P = 5/5, R = 5/6, F1 = 10/11.
    assert rouge_l("the cat on the mat", "The cat sat on the mat.") == pytest.approx(10 / 11)
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)
    assert rouge_l("", "x") == 0.0


def test_tablebench_rouge_for_descriptive_types(tablebench):
    score = get_benchmark("tablebench").score
    item = tablebench["bdb2b516"]  # AnomalyDetection 'No anomalies are detected in the table.'
    same = score(item, "Final Answer: No anomalies are detected in the table.", None)
    assert same.score == pytest.approx(1.0) and same.details["metric"] == "rougeL"
    close = score(item, "Final Answer: No anomalies were detected in the table.", None)
    assert close.score == pytest.approx(6 / 7)  # LCS 6 of 7 tokens on both sides
    far = score(item, "Final Answer: Row 3 has a suspicious value of 999.", None)
    assert far.score < 0.2 and not far.correct


_CHART = """```python
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('table.csv')
row = df[df['Month'] == 'Record high °F (°C)'].iloc[0]
months = df.columns[1:13]
values = [float(str(row[m]).split('(')[{part}].rstrip(')').replace('−', '-')) for m in months]
plt.bar(months, values)
plt.show()
```"""


def test_tablebench_chart_runs_the_code_in_the_sandbox(tablebench, sandbox):
    score = get_benchmark("tablebench").score
    item = tablebench["77f8372a"]  # bar chart of record highs in °C; y_references = [[24, 30, …, 26]]
    right = score(item, "Here it is.\n" + _CHART.format(part=1), sandbox)
    assert right.correct and right.details["prediction"][0][:3] == [24.0, 30.0, 36.0]
    fahrenheit = score(item, _CHART.format(part=0), sandbox)
    assert not fahrenheit.correct and fahrenheit.details["prediction"][0][0] == 76.0
    broken = score(item, _CHART.format(part=1).replace("'Month'", "'Mnth'"), sandbox)
    assert not broken.correct and "KeyError" in broken.details["error"]
    assert not score(item, "A bar chart.", sandbox).correct


# --- DS-1000 ----------------------------------------------------------------------------------------------------


def test_ds1000_reference_passes_and_wrong_code_fails_in_the_sandbox(shared_data, sandbox):
    bench = get_benchmark("ds1000")
    items = _items(shared_data, "ds1000", "bench_samples/ds1000_sample.jsonl")
    assert len(items) == 20 and items["4"].category == "Pandas" and "BEGIN SOLUTION" in items["4"].instruction
    pandas_item, numpy_item = items["4"], items["301"]
    passed = bench.score(pandas_item, pandas_item.reference, sandbox)
    assert passed.correct, passed.details.get("error")
    wrong = bench.score(pandas_item, "    return df\n", sandbox)
    assert not wrong.correct and "AssertionError" in wrong.details["error"]
    # An agent's answer: a fenced, dedented block inside a function body is re-indented to fit.
    fenced = "Tested above.\n```python\n" + "\n".join(l[4:] for l in pandas_item.reference.splitlines()) + "\n```"
    agent = bench.score(pandas_item, fenced, sandbox)
    assert agent.correct and agent.details["reindented"]
    assert bench.score(numpy_item, numpy_item.reference, sandbox).correct
    assert not bench.score(numpy_item, "```python\nresult = None\n```", sandbox).correct
    assert not bench.score(numpy_item, "I could not solve it.", sandbox).correct


def test_ds1000_code_that_hangs_is_killed_and_fails(shared_data, sandbox):
    from train.eval import ds1000

    item = _items(shared_data, "ds1000", "bench_samples/ds1000_sample.jsonl")["301"]
    hung = ds1000.score(item, "```python\nwhile True:\n    pass\n```", sandbox, timeout_s=2)
    assert not hung.correct and hung.details["timed_out"]


def test_ds1000_bad_line_is_a_clear_error(tmp_path):
    path = tmp_path / "ds.jsonl"
    path.write_text(json.dumps({"prompt": "p", "code_context": "x = 1"}) + "\n")
    with pytest.raises(EvalDataError, match=r"ds.jsonl:1: code_context defines no test_execution"):
        get_benchmark("ds1000").load(path, None)


def test_final_answer_takes_the_last_final_answer_line():
    assert final_answer("Final Answer: 1\nmore\nFinal Answer: **2**") == ("2", "final_answer_line")
    assert final_answer("just\n  42  \n") == ("42", "last_line")
    assert final_answer(None) == ("", "none")


def test_unknown_bench_is_a_clear_error():
    with pytest.raises(EvalDataError, match="--bench 'mmlu': choose from infiagent, wikitq, tablebench, ds1000"):
        get_benchmark("mmlu")
