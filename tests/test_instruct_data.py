from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from synth.instruct_data import InstructDataError, Table, detect_format, read_items


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_wikitq_layout_reader_on_the_real_sample(shared_data):
    folder = shared_data / "instruct" / "wikitq_train_sample"
    before = _tree_hash(folder)
    assert detect_format(folder) == "wikitq"
    items = read_items(folder)
    assert len(items) == 300 and len({i.id for i in items}) == 300
    first = items[0]
    assert first.id == "nt-5305" and first.answer == "Andrew Bertie" and first.dataset == "wikitq"
    assert first.table.columns == ["Name", "College", "Years", "Reign"]
    assert first.meta["table_path"] == "csv/203-csv/640.csv"
    prompt = first.prompt()
    assert prompt.startswith("# Instruction\nvajiravhud went to college at christ church.")
    assert "# Table\n| Name | College | Years | Reign |" in prompt
    lists = [i for i in items if isinstance(i.answer, list)]
    assert lists and all(len(i.answer) > 1 for i in lists)
    assert read_items(folder, limit=5)[4].id == items[4].id
    assert _tree_hash(folder) == before  # the input is only read


def test_tablebench_reader_on_the_real_sample(shared_data):
    path = shared_data / "bench_samples" / "tablebench_sample.jsonl"
    assert detect_format(path) == "tablebench"
    items = read_items(path)
    assert len(items) == 40
    first = items[0]
    assert first.question == 'What is the average value of the "Pin (Tip)" column?' and first.answer == "38"
    assert first.category == "NumericalReasoning" and first.meta["qsubtype"] == "Aggregation"
    assert first.table.columns == ["Color", "Pin (Tip)", "Pin (Ring)", "Color.1"] and len(first.table.rows) == 25


def test_table_rendering_respects_limits():
    table = Table(["a", "b|c"], [[str(i), "x" * 200] for i in range(100)])
    text = table.render(max_rows=5, max_cell_chars=10)
    lines = text.splitlines()
    assert lines[0] == "| a | b\\|c |" and len(lines) == 2 + 5 + 1
    assert lines[2] == "| 0 | xxxxxxxxx… |"
    assert lines[-1] == "… (95 more rows not shown; the table has 100 rows)"
    small = table.render(max_rows=100, max_chars=300)
    assert len(small) < 400 and "more rows not shown" in small


def _rows():
    return [
        {"qid": "a1", "q": "Which is larger?", "gold": "B", "tbl": [["name", "size"], ["A", "1"], ["B", "2"]],
         "note": "sizes in m"},
        {"qid": "a2", "q": "Sum of sizes?", "gold": "3", "tbl": [["name", "size"], ["A", "1"], ["B", "2"]],
         "note": ""},
    ]


def test_jsonl_with_field_mapping(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    items = read_items(path, question_field="q", answer_field="gold", table_field="tbl", context_field="note",
                       id_field="qid")
    assert [i.id for i in items] == ["a1", "a2"]
    assert items[0].table.columns == ["name", "size"] and items[0].table.rows == [["A", "1"], ["B", "2"]]
    assert items[0].context == "sizes in m" and items[1].context is None
    assert "# Context\nsizes in m" in items[0].prompt()


def test_default_field_names_and_generated_ids(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps([{"question": "What?", "answer": ["x", "y"], "table": "| a |\n| 1 |"}]))
    (item,) = read_items(path)
    assert item.answer == ["x", "y"] and item.table_text == "| a |\n| 1 |" and len(item.id) == 16
    assert item.prompt().endswith("# Table\n| a |\n| 1 |")


def test_csv_tsv_with_table_paths(tmp_path):
    (tmp_path / "tables").mkdir()
    with open(tmp_path / "tables" / "t1.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["city", "pop"], ["Oslo", "700,000"]])
    for name, delimiter in (("items.csv", ","), ("items.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter=delimiter)
            writer.writerows([["id", "question", "answer", "table"], ["c1", "Population of Oslo?", "700000",
                                                                        "tables/t1.csv"]])
        (item,) = read_items(tmp_path / name)
        assert item.table.rows == [["Oslo", "700,000"]] and item.answer == "700000"


def test_parquet_and_saved_hf_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": r["q"], "gold": r["gold"], "tbl": {"columns": ["name", "size"], "data": [["A", "1"], ["B", "2"]]}}
            for r in _rows()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    items = read_items(tmp_path / "d.parquet", question_field="q", answer_field="gold", table_field="tbl")
    assert [i.answer for i in items] == ["B", "3"] and items[0].table.rows[1] == ["B", "2"]

    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    assert detect_format(tmp_path / "hf") == "hf"
    items = read_items(tmp_path / "hf", question_field="q", answer_field="gold", table_field="tbl", limit=1)
    assert len(items) == 1 and items[0].table.columns == ["name", "size"]


@pytest.mark.parametrize("content,fmt,message", [
    ('{"question": "q"}\n', "jsonl", r"data\.jsonl:1: no answer field \(tried answer"),
    ('{"question": "q", "answer": "a"}\nnot json\n', "jsonl", r"data\.jsonl:2: not valid JSON"),
    ('{"question": "q", "answer": "a", "table": 5}\n', "jsonl", r"data\.jsonl:1: cannot read a table from a int"),
    ('{"question": "q", "answer": "a", "table": "missing.csv"}\n', "jsonl", r"table file missing\.csv not found"),
    ('{"id": 1, "question": "q", "answer": "a"}\n{"id": 1, "question": "r", "answer": "b"}\n', "jsonl",
     r"item id '1' appears twice"),
    ('{"question": "q", "answer": "a"}\n', "parquet", r"not a readable Parquet file"),
    ('{"question": "q", "answer": "a"}\n', "xml", r"--format 'xml'"),
])
def test_bad_input_gets_a_one_line_error(tmp_path, content, fmt, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(InstructDataError, match=message) as info:
        read_items(path, fmt)
    assert "\n" not in str(info.value)


def test_named_field_missing_and_unknown_paths(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(InstructDataError, match=r"no field 'prompt' \(--question-field\); fields: question, answer"):
        read_items(path, question_field="prompt")
    with pytest.raises(InstructDataError, match="no such file"):
        read_items(tmp_path / "nope.jsonl")
    with pytest.raises(InstructDataError, match="cannot tell the format"):
        (tmp_path / "x.txt").write_text("hi")
        read_items(tmp_path / "x.txt")
    bad = tmp_path / "wtq"
    bad.mkdir()
    (bad / "questions.tsv").write_text("id\tutterance\tcontext\ttargetValue\nnt-1\tq?\tcsv/none.csv\t3\n")
    with pytest.raises(InstructDataError, match=r"questions\.tsv:2: table csv/none\.csv not found"):
        read_items(bad)
