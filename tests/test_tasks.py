"""Tasks from the user: every format maps onto instruction / files / reference / category / difficulty / id, and a
bad row is reported with its line while the others are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.tasks import TasksError, detect_format, read_tasks


def _sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "sales.csv").write_text("region,amount\nnorth,10\n")
    return src


def test_jsonl_rows_with_and_without_references_and_bad_rows(tmp_path: Path) -> None:
    src = _sources(tmp_path)
    path = tmp_path / "tasks.jsonl"
    rows = [{"id": "a", "instruction": "Total amount?", "files": ["sales.csv"], "reference": 10},
            {"instruction": "Which region?", "files": "sales.csv", "difficulty": "easy"},
            {"id": "c", "instruction": "", "files": ["sales.csv"]},
            {"id": "d", "instruction": "Mean?", "files": ["missing.csv"]},
            {"id": "e", "instruction": "Mean?", "files": ["sales.csv"], "category": "cooking"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    tasks = read_tasks(path, sources=src, categories=("data_analysis",))
    assert [t.id for t in tasks.tasks][0] == "a" and tasks.tasks[0].reference == 10
    second = tasks.tasks[1]
    assert second.reference is None and second.difficulty == "easy" and second.id.startswith("task-")
    assert second.category == "data_analysis"
    errors = [str(e) for e in tasks.errors]
    assert any(":3: empty instruction" in e for e in errors)
    assert any(":4: file 'missing.csv' not found" in e for e in errors)
    assert any(":5: unknown category 'cooking'" in e for e in errors)
    assert any(":6: not valid JSON" in e for e in errors)


def test_csv_parquet_and_format_detection(tmp_path: Path) -> None:
    src = _sources(tmp_path)
    csv_path = tmp_path / "tasks.csv"
    csv_path.write_text("id,instruction,files,reference\nx,Total amount?,sales.csv,10\n")
    assert read_tasks(csv_path, sources=src).tasks[0].files == ["sales.csv"]
    import pandas as pd

    pq = tmp_path / "tasks.parquet"
    pd.DataFrame([{"instruction": "Total?", "files": "sales.csv", "reference": None}]).to_parquet(pq)
    [task] = read_tasks(pq, sources=src).tasks
    assert task.reference is None  # a missing cell is no reference, not NaN
    assert detect_format(csv_path) == "csv" and detect_format(pq) == "parquet"
    with pytest.raises(TasksError, match="no such file"):
        read_tasks(tmp_path / "none.jsonl")


def test_benchmark_formats_map_their_fields(shared_data: Path, tmp_path: Path) -> None:
    infiagent = shared_data / "bench_samples" / "infiagent_sample"
    tasks = read_tasks(infiagent / "questions.jsonl", sources=infiagent / "tables")
    assert detect_format(infiagent / "questions.jsonl") == "infiagent" and not tasks.errors
    first = tasks.tasks[0]
    assert "@removed_outliers_count" in first.instruction and first.reference == "@removed_outliers_count[0]"
    assert first.difficulty in ("easy", "medium", "hard")
    withheld = tmp_path / "questions.jsonl"  # the labels withheld: no references
    withheld.write_text((infiagent / "questions.jsonl").read_text())
    assert all(t.reference is None for t in read_tasks(withheld, "infiagent").tasks)
    wikitq = read_tasks(shared_data / "instruct" / "wikitq_train_sample", sources=shared_data / "instruct" /
                        "wikitq_train_sample")
    assert len(wikitq.tasks) > 200 and wikitq.tasks[0].files[0].startswith("csv/")
    tablebench = read_tasks(shared_data / "bench_samples" / "tablebench_sample.jsonl")
    assert tablebench.tasks and all(t.files[0] in tablebench.inline_files for t in tablebench.tasks)
    assert any("chart questions" in str(e) for e in tablebench.errors)  # not closed-form: reported, skipped
