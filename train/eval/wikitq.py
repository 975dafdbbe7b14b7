"""WikiTableQuestions: a folder with questions.tsv (id, utterance, context, targetValue) and the csv/ tables it
names (read by synth.instruct_data), scored by denotation accuracy (synth.matchers.wikitq_match)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.instruct_data import InstructDataError, read_items
from synth.matchers import answer_candidates, reference_values, wikitq_match
from train.eval.benchmarks import Benchmark, EvalDataError, EvalItem, Score, final_answer


def load(path: Path, limit: int | None = None) -> list[EvalItem]:
    path = Path(path)
    try:
        items = read_items(path, "wikitq", limit=limit)
    except InstructDataError as exc:
        raise EvalDataError(str(exc).replace("--input", "--data")) from None
    base = path if path.is_dir() else path.parent
    out: list[EvalItem] = []
    for item in items:
        table = base / item.meta["table_path"]
        out.append(EvalItem(
            id=item.id, instruction=build_prompt(item.question, table.name), reference=item.answer,
            category="wikitq", files={table.name: table}, meta={"table_path": item.meta["table_path"]}))
    return out


def build_prompt(question: str, table_name: str) -> str:
    return (f"Answer the question using the table in {table_name}.\nQuestion: {question.strip()}\n"
            "End your <Answer> with a line `Final Answer: VALUE`; when the answer has several values, separate "
            "them with ` | `.")


def score(item: EvalItem, prediction: str | None, sandbox: Any = None) -> Score:
    value, source = final_answer(prediction)
    # The `Final Answer:` value is the prediction; without one, the usual final-answer spots in the text are tried.
    candidates = [value] if source == "final_answer_line" else answer_candidates(prediction or "")
    hit = next((c for c in candidates if c and wikitq_match(c, item.reference)), None)
    return Score(score=1.0 if hit is not None else 0.0, correct=hit is not None, details={
        "metric": "denotation", "prediction": hit if hit is not None else value, "parsed_from": source,
        "target": reference_values(item.reference)})


BENCHMARK = Benchmark(name="wikitq", load=load, score=score, metric="denotation accuracy")
