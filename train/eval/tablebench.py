"""TableBench: JSONL items (id, qtype, qsubtype, table {columns, data}, question, answer[, chart_type]).

The table is written into the workspace as table.csv. Scoring by kind (`kind_of(qtype, qsubtype)`):
    exact      FactChecking, NumericalReasoning, ImpactAnalysis — the `Final Answer:` value equals the reference
               (normalised text; comma-separated parts compared in order; numbers compared as numbers)
    tolerance  CorrelationAnalysis, TrendForecasting, StatisticalAnalysis — as exact, but numbers within 10 %
    rouge      the descriptive DataAnalysis types (DescriptiveAnalysis, AnomalyDetection, …) — ROUGE-L F1
    chart      Visualization — the answer's python code runs in the sandbox against table.csv; the plotted y values
               (rounded to 2 decimals, pie as fractions) must equal `y_references` (TableBench's pass@1)
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from synth.matchers import normalize_answer
from synth.instruct_data import InstructDataError, read_items
from synth.sandbox.base import Limits
from train.eval.benchmarks import Benchmark, EvalDataError, EvalItem, Score, code_blocks, final_answer, rouge_l

EXACT_TYPES = ("FactChecking", "NumericalReasoning", "ImpactAnalysis")
TOLERANCE_TYPES = ("CorrelationAnalysis", "TrendForecasting", "StatisticalAnalysis")
NUMERIC_TOLERANCE = 0.10
CHART_TIMEOUT_S = 60.0

_ANSWER_RULES = (
    "End your <Answer> with one line `Final Answer: AnswerName1, AnswerName2...`: each AnswerName a number or an "
    "entity name, as short as possible, without explanation.")
_ANALYSIS_RULES = (
    "End your <Answer> with one line `Final Answer: Answer1, Answer2...` followed by a brief explanation on the "
    "same line when the question asks for one.")
_CHART_RULES = (
    "Put the final chart code in your <Answer> as one ```python block that starts with\n"
    "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('table.csv')\n"
    "and ends with plt.show(). Draw a {chart} chart.")


def kind_of(qtype: str, qsubtype: str) -> str:
    if qtype == "Visualization":
        return "chart"
    if qtype in EXACT_TYPES or qsubtype in EXACT_TYPES:
        return "exact"
    if qsubtype in TOLERANCE_TYPES:
        return "tolerance"
    return "rouge"


def load(path: Path, limit: int | None = None) -> list[EvalItem]:
    try:
        items = read_items(Path(path), "tablebench", limit=limit)
    except InstructDataError as exc:
        raise EvalDataError(str(exc).replace("--input", "--data")) from None
    out: list[EvalItem] = []
    for item in items:
        qtype, qsubtype = str(item.meta.get("qtype", "")), str(item.meta.get("qsubtype", ""))
        kind = kind_of(qtype, qsubtype)
        assert item.table is not None  # the tablebench reader requires one
        out.append(EvalItem(
            id=item.id, instruction=build_prompt(item.question, kind, item.meta.get("chart_type")),
            reference=item.answer, category=f"{qtype}/{qsubtype}" if qsubtype else qtype,
            texts={"table.csv": _to_csv(item.table.columns, item.table.rows)},
            meta={"kind": kind, "qtype": qtype, "qsubtype": qsubtype, "chart_type": item.meta.get("chart_type")}))
    return out


def build_prompt(question: str, kind: str, chart_type: str | None = None) -> str:
    rules = {"chart": _CHART_RULES.format(chart=chart_type or "suitable"), "rouge": _ANALYSIS_RULES}.get(
        kind, _ANSWER_RULES)
    return f"Answer the question about the table in table.csv.\nQuestion: {question.strip()}\n{rules}"


def score(item: EvalItem, prediction: str | None, sandbox: Any = None) -> Score:
    kind = item.meta.get("kind") or kind_of(item.meta.get("qtype", ""), item.meta.get("qsubtype", ""))
    if kind == "chart":
        return _score_chart(item, prediction, sandbox)
    value, source = final_answer(prediction)
    details: dict[str, Any] = {"metric": kind, "prediction": value, "parsed_from": source}
    if kind == "rouge":
        value_score = rouge_l(value, item.reference)
        details["metric"] = "rougeL"
        return Score(score=value_score, correct=value_score >= 0.5, details=details)
    ok = answers_equal(value, str(item.reference), tolerance=NUMERIC_TOLERANCE if kind == "tolerance" else 0.0)
    return Score(score=1.0 if ok else 0.0, correct=ok, details=details)


def answers_equal(prediction: str, reference: str, *, tolerance: float = 0.0) -> bool:
    """Equal as normalised text, or part by part (comma-separated, in order) with numbers within `tolerance`
    (relative; 0 = numerically equal)."""
    if not prediction.strip():
        return False
    if normalize_answer(prediction) == normalize_answer(reference):
        return True
    pred_parts, ref_parts = _parts(prediction), _parts(reference)
    if len(pred_parts) != len(ref_parts):
        return False
    return all(_part_equal(p, r, tolerance) for p, r in zip(pred_parts, ref_parts))


def _parts(text: str) -> list[str]:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 is one number, not two parts
    return [p.strip() for p in re.split(r"[,;]", text) if p.strip()]


def _number(text: str) -> float | None:
    s = text.strip().replace("−", "-").rstrip("%").strip()
    try:
        return float(s)
    except ValueError:
        return None


def _part_equal(pred: str, ref: str, tolerance: float) -> bool:
    p, r = _number(pred), _number(ref)
    if p is not None and r is not None:
        if tolerance == 0.0 or r == 0.0:
            return abs(p - r) < 1e-9
        return abs(p - r) <= tolerance * abs(r)
    return normalize_answer(pred) == normalize_answer(ref)


# --- charts ----------------------------------------------------------------------------------------------------

_PROBE = r'''
import json as _json
import matplotlib.pyplot as _plt
from matplotlib.patches import Wedge as _Wedge
_kind, _ys = {chart!r}, []
for _ax in _plt.gcf().axes:
    if _kind == "line":
        _ys += [[float(v) for v in _line.get_ydata()] for _line in _ax.get_lines()]
    elif _kind == "pie":
        _ys.append([(w.theta2 - w.theta1) / 360.0 for w in _ax.patches if isinstance(w, _Wedge)])
    elif _kind == "scatter":
        _ys += [[float(v) for v in _c.get_offsets()[:, 1]] for _c in _ax.collections]
    elif _kind == "hbar":
        _ys.append([float(p.get_width()) for p in _ax.patches])
    else:
        _ys.append([float(p.get_height()) for p in _ax.patches])
print("@@Y_PREDICTIONS@@" + _json.dumps([y for y in _ys if y]))
'''


def _score_chart(item: EvalItem, prediction: str | None, sandbox: Any) -> Score:
    details: dict[str, Any] = {"metric": "chart", "prediction": None}
    blocks = code_blocks(prediction)
    try:
        references = _y_references(str(item.reference))
    except ValueError as exc:
        details["error"] = str(exc)
        return Score(0.0, False, details)
    if not blocks:
        details["error"] = "no ```python block in the answer"
        return Score(0.0, False, details)
    if sandbox is None:
        raise ValueError("TableBench chart items need a sandbox to run the answer's code")
    code = "\n".join(line for line in blocks[-1].splitlines() if "plt.show()" not in line)
    chart = str(item.meta.get("chart_type") or "bar")
    program = "import matplotlib\nmatplotlib.use('Agg')\n" + code + "\n" + _PROBE.format(chart=chart)
    with tempfile.TemporaryDirectory(prefix="ds-synth-eval-") as tmp:
        paths = item.stage(Path(tmp) / "ws")
        with sandbox.open(paths, mode="script", limits=Limits(timeout_s=CHART_TIMEOUT_S)) as session:
            result = session.run(program, CHART_TIMEOUT_S)
    marker = next((line for line in result.stdout.splitlines() if line.startswith("@@Y_PREDICTIONS@@")), None)
    if not result.ok or marker is None:
        details["error"] = (result.error or "the code drew nothing")[-2000:]
        return Score(0.0, False, details)
    predicted = json.loads(marker[len("@@Y_PREDICTIONS@@"):])
    details["prediction"] = predicted
    if chart == "pie":
        references = [[v / sum(ref) for v in ref] if sum(ref) else ref for ref in references]
    ok = _rounded(references) == _rounded(predicted)
    return Score(1.0 if ok else 0.0, ok, details)


def _y_references(answer: str) -> list[list[float]]:
    _, _, value = answer.partition("=")
    try:
        parsed = ast.literal_eval((value or answer).strip())
    except (ValueError, SyntaxError):
        raise ValueError(f"chart reference is not `y_references = [[…]]`: {answer[:80]!r}") from None
    return [[float(v) for v in series] for series in parsed]


def _rounded(series: list[list[float]]) -> list[float]:
    return sorted(round(float(v), 2) for values in series for v in values)


def _to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue()


BENCHMARK = Benchmark(name="tablebench", load=load, score=score, metric="score (EM / ROUGE-L / chart pass)")
