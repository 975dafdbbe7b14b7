"""Exports: records → sft / swift / rl / raw → read back. Interaction records come from code really run in the
local sandbox; the rl workspaces must hold the real sources."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
import yaml

from synth import protocol
from synth.checklist import ItemVerdict, JudgedItem, RuleItem, Verdict
from synth.dataset.export import ExportError, decode_reward_spec, export, read_rows
from synth.dataset.record import Record, RewardSpec, SourceRef, read_records, write_records
from synth.sandbox import get_sandbox
from synth.sandbox.base import Limits
from synth.trajectory import Trajectory, Turn

SALES_CSV = "region,product,units,price\nnorth,tea,10,2.5\nsouth,tea,4,2.5\nnorth,coffee,7,4.0\nwest,coffee,3,4.0\n"
CHECKLIST = [
    RuleItem(id="answered", rule="has_answer", description="the trajectory ends with an <Answer>"),
    JudgedItem(id="grounded", question="Is the answer computed from the data rather than guessed?"),
]


def make_sources(folder: Path) -> Path:
    """A source folder: one CSV and one SQLite database in a subfolder (names are root-relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sales.csv").write_text(SALES_CSV)
    (folder / "db").mkdir(exist_ok=True)
    with sqlite3.connect(folder / "db" / "shop.sqlite") as con:
        con.execute("CREATE TABLE orders (id INTEGER, total REAL)")
        con.executemany("INSERT INTO orders VALUES (?, ?)", [(1, 9.5), (2, 20.0), (3, 4.25)])
    return folder


def sandbox_trajectory(sources: Path, instruction: str) -> Trajectory:
    """Two real cells in the local sandbox; the second prints tag strings, which must stay inside <Execute>."""
    prompt = protocol.build_user_prompt(instruction, [sources / "sales.csv"])
    cells = [
        ("Load the table and look at it.", "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)"),
        ("Total revenue per region.",
         "import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf['rev'] = df.units * df.price\n"
         "print(df.groupby('region').rev.sum().to_dict())\nprint('<Answer> looks like a tag but is output')"),
    ]
    turns = []
    with get_sandbox("local").open([sources / "sales.csv"], mode="script", limits=Limits(timeout_s=60)) as session:
        for analyze, code in cells:
            text = f"<Analyze>\n{analyze}\n</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>"
            turns.append(Turn(text=text, code=code, result=session.run(code)))
    turns.append(Turn(text="<Understand>\nNorth leads.\n</Understand>\n<Answer>\nnorth: 53.0\n</Answer>"))
    return Trajectory(prompt=prompt, turns=turns, answer="north: 53.0", mode="script", model="scripted")


def accepted_verdict() -> Verdict:
    return Verdict(items=[ItemVerdict(id="answered", kind="rule", passed=True, reason="has an answer"),
                          ItemVerdict(id="grounded", kind="judged", passed=True, reason="computed with pandas")],
                   decision="accept", score=1.0)


def interaction_record(trajectory: Trajectory, sources: Path, *, instruction: str, category: str = "data_analysis",
                       difficulty: str = "easy", source_name: str = "sales.csv") -> Record:
    from synth.hashing import path_sha256

    prompt = protocol.build_user_prompt(instruction, [sources / source_name])
    traj = Trajectory(prompt=prompt, turns=trajectory.turns, answer=trajectory.answer, mode="script", model="m")
    return Record.from_trajectory(
        traj, category=category, difficulty=difficulty, instruction=instruction,
        sources=[(source_name, path_sha256(sources / source_name))], checklist=CHECKLIST,
        verdict=accepted_verdict(), reference={"value": {"north": 53.0}, "verified_by": "program"},
        usage={"prompt_tokens": 900, "completion_tokens": 300, "cost_usd": 0.0012, "llm_calls": 4},
    )


def reasoning_record(question: str, *, variant: str = "distilled") -> Record:
    prompt = f"# Instruction\n{question}\n\n| city | pop |\n|---|---|\n| A | 3 |\n| B | 5 |"
    text = ("<Analyze>\nLet's take a closer look at the table: B has 5, A has 3.\n</Analyze>\n"
            "<Understand>\nB is larger.\n</Understand>\n<Answer>\nB\n</Answer>")
    return Record(
        id=f"r-{abs(hash((question, variant))) % 10**8}", kind="reasoning", category="table_qa", variant=variant,
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
        reference="B", reward_spec=RewardSpec(method="qa", ground_truth="B"),
        sources=[SourceRef(name=f"wikitq:{question[:10]}", sha256="0" * 64)], keywords=["closer look"],
        verdict=Verdict(decision="accept", score=1.0),
        usage={"prompt_tokens": 200, "completion_tokens": 80, "llm_calls": 2},
    )


def make_run(run_dir: Path, sources: Path, records: list[Record], *, rejected: list[dict] | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"sources": str(sources), "model": "scripted",
                                                         "max_rounds": 8, "categories": ["data_analysis"]}))
    write_records(run_dir / "records.jsonl", records)
    with open(run_dir / "rejected.jsonl", "w") as fh:
        for row in rejected or []:
            fh.write(json.dumps(row) + "\n")
    (run_dir / "stats.json").write_text(json.dumps({"accepted": len(records), "rejected": len(rejected or [])}))
    return run_dir


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A run dir with two interaction records (real sandbox output) and one reasoning record."""
    base = tmp_path_factory.mktemp("export")
    sources = make_sources(base / "sources")
    traj = sandbox_trajectory(sources, "Which region earns the most revenue?")
    assert all(t.result.ok for t in traj.turns if t.result), [t.result for t in traj.turns]
    records = [
        interaction_record(traj, sources, instruction="Which region earns the most revenue?"),
        interaction_record(traj, sources, instruction="How many orders are above 5?", source_name="db/shop.sqlite",
                           category="data_insight", difficulty="medium"),
        reasoning_record("Which city has the larger population?"),
    ]
    return make_run(base / "run", sources, records), sources, records


def test_sft_parquet_round_trip_and_masks_cover_exactly_execute(real_run, tmp_path):
    run, _, records = real_run
    result = export([run], "sft", tmp_path / "sft.parquet")
    rows = read_rows(result.out)
    assert [r["id"] for r in rows] == [r.id for r in records]
    for row, record in zip(rows, records):
        assert row["messages"] == record.messages
        text = row["messages"][-1]["content"]
        spans = [tuple(s) for s in row["execute_spans"]]
        masked = "".join(text[s:e] for s, e in spans)
        if record.kind == "interaction":
            assert len(spans) == 2
            for s, e in spans:
                assert text[s:e].startswith("<Execute>") and text[s:e].endswith("</Execute>")
            assert "(4, 4)" in masked and "looks like a tag" in masked  # the real outputs are masked …
            unmasked = "".join(text[a:b] for a, b in _complement(spans, len(text)))
            assert "<Execute>" not in unmasked and "(4, 4)" not in unmasked  # … and nothing else is
            assert "<Analyze>" in unmasked and "<Answer>\nnorth: 53.0\n</Answer>" in unmasked
        else:
            assert spans == []


def _complement(spans, length):
    pos, out = 0, []
    for s, e in spans:
        out.append((pos, s))
        pos = e
    out.append((pos, length))
    return out


def test_sft_jsonl_and_kind_filter(real_run, tmp_path):
    run, _, records = real_run
    export([run], "sft", tmp_path / "sft.jsonl", kind="reasoning")
    rows = read_rows(tmp_path / "sft.jsonl")
    assert [r["id"] for r in rows] == [r.id for r in records if r.kind == "reasoning"]


def test_swift_layout(real_run, tmp_path):
    run, _, records = real_run
    export([run], "swift", tmp_path / "swift.jsonl")
    lines = (tmp_path / "swift.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(r) for r in rows] == [["messages"]] * 3
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert "<Execute>" in rows[0]["messages"][1]["content"]
    assert rows[0]["messages"][0]["content"].startswith("# Instruction\n")
    export([run], "swift", tmp_path / "swift.json")
    assert json.loads((tmp_path / "swift.json").read_text()) == rows


def test_raw_round_trip(real_run, tmp_path):
    run, _, records = real_run
    export([run], "raw", tmp_path / "raw.jsonl")
    assert read_records(tmp_path / "raw.jsonl") == records


def test_rl_rows_reference_archives_holding_the_sources(real_run, tmp_path):
    run, sources, records = real_run
    out = tmp_path / "rl" / "prompts.parquet"
    result = export([run], "rl", out)
    assert result.workspaces == 2
    rows = read_rows(out)
    assert len(rows) == 3
    by_id = {r["id"]: r for r in rows}
    for record in records:
        row = by_id[record.id]
        assert row["prompt"] == record.messages[:-1]
        assert row["max_turns"] == 8
        spec = decode_reward_spec(row["reward_spec"])
        # The checklist that filtered the SFT data is the reward spec.
        assert spec == record.reward_spec.model_dump(mode="json")
        if record.kind == "reasoning":
            assert row["workspace"] is None
            continue
        archive = out.parent / row["workspace"]
        assert archive.is_file()
        with tarfile.open(archive) as tar:
            name = record.sources[0].name
            assert tar.getnames() == [name]
            assert tar.extractfile(name).read() == (sources / name).read_bytes()
    assert by_id[records[0].id]["reward_spec"]["method"] == "qa"
    assert json.loads(by_id[records[0].id]["reward_spec"]["checklist"])[1]["question"].startswith("Is the answer")


def test_rl_refuses_changed_or_missing_sources(real_run, tmp_path):
    run, sources, records = real_run
    copy = make_sources(tmp_path / "moved")
    (copy / "sales.csv").write_text(SALES_CSV + "east,tea,1,2.5\n")
    with pytest.raises(ExportError, match="changed since the run"):
        export([run], "rl", tmp_path / "a.parquet", sources_root=copy)
    (copy / "sales.csv").unlink()
    with pytest.raises(ExportError, match="'sales.csv' not found"):
        export([run], "rl", tmp_path / "b.parquet", sources_root=copy)


def test_bad_inputs_give_one_line_errors(real_run, tmp_path):
    run, _, _ = real_run
    with pytest.raises(ExportError, match="no such run directory"):
        export([tmp_path / "nope"], "sft", tmp_path / "x.parquet")
    with pytest.raises(ExportError, match="--format 'csv'"):
        export([run], "csv", tmp_path / "x.csv")
    with pytest.raises(ExportError, match="unsupported extension .txt"):
        export([run], "sft", tmp_path / "x.txt")
    with pytest.raises(ExportError, match="would overwrite a run file"):
        export([run], "raw", run / "records.jsonl")


def test_cli_export(real_run, tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    run, _, _ = real_run
    result = CliRunner().invoke(app, ["export", str(run), "--format", "swift", "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    assert "3 swift rows" in result.output
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--format", "sft", "--out", str(tmp_path / "x.parquet")])
    assert bad.exit_code == 1 and "no such run directory" in bad.output


def _tiny_tokenizer(folder: Path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>"] + protocol.SPECIAL_TOKENS
    vocab = {t: i for i, t in enumerate(specials)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                               eos_token="<eos>")
    tok.add_tokens(protocol.SPECIAL_TOKENS)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {{ m['content'] }}"
                         "{% else %}<|assistant|> {% generation %}{{ m['content'] }}<eos>{% endgeneration %}"
                         "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return tok, len(vocab) + len(protocol.SPECIAL_TOKENS)


def test_trl_sft_trainer_accepts_the_sft_export(real_run, tmp_path):
    pytest.importorskip("trl", reason="TRL is in the `train` extra; install it to check SFTTrainer compatibility")
    torch = pytest.importorskip("torch")
    import transformers
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    run, _, records = real_run
    export([run], "sft", tmp_path / "sft.parquet")
    dataset = load_dataset("parquet", data_files=str(tmp_path / "sft.parquet"), split="train")
    tok, vocab_size = _tiny_tokenizer(tmp_path)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096))
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=1, report_to=[],
                     assistant_only_loss=True, use_cpu=True, save_strategy="no", max_length=4096)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    prepared = trainer.train_dataset
    assert len(prepared) == len(records)
    assert "input_ids" in prepared.column_names
    first = prepared[0]
    # Only the assistant message is trained on (labels -100 on the user turn).
    if "labels" in prepared.column_names:
        trained = [t != -100 for t in first["labels"]]
    else:
        trained = [bool(m) for m in first["assistant_masks"]]
    assert any(trained) and not all(trained)
    execute_id = tok.convert_tokens_to_ids("<Execute>")
    assert execute_id in first["input_ids"]
