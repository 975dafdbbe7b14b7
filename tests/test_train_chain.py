"""The whole loop on one machine, on the tiny offline model: generate (a fake OpenAI-compatible teacher) → SFT →
GGUF export of base and trained → eval of both through the same agent loop → `synth eval --model hf:CKPT`,
`synth generate --solver-model hf:CKPT` and `synth serve --model hf:CKPT` each answering with the checkpoint.

The teacher is the scripted RoleScript server (a test double for the LLM only): the code in its trajectories
runs for real in the sandbox, the records are real records, training, export, llama.cpp and scoring are real.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.llm.testing_server import FakeOpenAIServer, RoleScript
from train.tiny import build_tiny_model

CSV = "region,amount\nnorth,10\nsouth,5\nnorth,20\neast,7\n"
CHECKLIST = """\
category: data_analysis
items:
  - rule: answer_present
  - rule: sources_unchanged
  - rule: execute_blocks_authentic
"""
CODE = ("<Analyze>Look at the data.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
        "df = pd.read_csv('sales.csv')\nprint(df.groupby('region')['amount'].sum().to_string())\n```\n</Code>")
ANSWER = "<Understand>north sums to 30.</Understand>\n<Answer>north has the largest total, 30.</Answer>"
TASKS = ["Sum the amount column per region and report which region has the largest total.",
         "Count how many rows each region has in sales.csv and report the largest count."]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    root.chmod(0o755)  # sandbox workers may run as another uid
    src = root / "src"
    src.mkdir()
    (src / "sales.csv").write_text(CSV)
    checklists = root / "checklists"
    checklists.mkdir()
    (checklists / "data_analysis.yaml").write_text(CHECKLIST)
    base = build_tiny_model(root / "tiny-base", vocab_size=512)
    return {"root": root, "src": src, "checklists": checklists, "base": base}


def _task(category: str, difficulty: str, file: str) -> str:
    return TASKS[0] if difficulty == "easy" else TASKS[1]


def test_generate_train_export_eval_serve(workspace, shared_data):
    ws = workspace
    exp = ws["root"] / "exp"
    tablebench = shared_data / "bench_samples" / "tablebench_sample.jsonl"
    runner = CliRunner(env={"COLUMNS": "200"})
    with FakeOpenAIServer(reply=RoleScript(_task, CODE, ANSWER)) as server:
        result = runner.invoke(app, [
            "experiment", "--out", str(exp), "--base", str(ws["base"]), "--sources", str(ws["src"]),
            "--records", "2", "--teacher", "openai:fake", "--base-url", server.base_url,
            "--generate-arg=--checklists", f"--generate-arg={ws['checklists']}",
            "--generate-arg=--categories=data_analysis", "--generate-arg=--difficulties=easy,medium",
            "--generate-arg=--max-rounds=4", "--train-arg=--max-steps=2",
            "--bench", f"tablebench={tablebench}", "--limit", "1", "--max-rounds", "2", "--max-tokens-per-turn", "48", "--backend", "gguf"])
    assert result.exit_code == 0, result.output
    report = json.loads((exp / "experiment.json").read_text())

    # data: two accepted interaction records, made by the agent loop with real execution
    records = [json.loads(line) for line in (exp / "data" / "interaction-1" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "<Execute>\nregion\neast" in records[0]["messages"][-1]["content"]
    # train: the tiny base fine-tuned on them (LoRA on CPU), the checkpoint carries the tag tokens
    assert report["training"]["rows"] == 2 and report["training"]["stages"][0]["steps"] == 2
    assert all(isinstance(x, float) for x in report["training"]["stages"][0]["losses"])
    sft = json.loads((exp / "model" / "sft_result.json").read_text())
    assert sft["settings"]["lora"] is True and sft["settings"]["device"] == "cpu"
    # models: both exported with the same type and evaluated on llama.cpp; the trained one as deepanalyze
    assert report["backend"] == "gguf" and report["gguf_type"] == "q8_0"
    assert report["base_spec"].endswith("base-q8_0.gguf?family=instruct")
    assert report["trained_spec"].endswith("trained-q8_0.gguf?family=deepanalyze")
    # eval: one TableBench item each, the same scorer, compliance and rounds reported side by side
    [row] = report["results"]
    for side in ("base", "trained"):
        figures = row[side]
        assert figures["n"] == 1 and figures["errors"] == 0
        assert 0.0 <= figures["compliance"] <= 1.0 and 1 <= figures["mean_rounds"] <= 2
    assert "base compliance" in result.output and "trained rounds" in result.output  # the printed table
    names = [s["name"] for s in report["steps"]]
    assert names == ["generate-1", "train", "export-base", "export-trained", "eval-base-tablebench",
                     "eval-trained-tablebench"]
    assert all(s["peak_rss_bytes"] > 0 and s["returncode"] == 0 for s in report["steps"])
    assert "| tablebench | 1 |" in (exp / "report.md").read_text()

    # Rerunning continues: everything is already there, nothing is trained again.
    again = runner.invoke(app, ["experiment", "--out", str(exp), "--base", str(ws["base"]),
                                "--runs", str(exp / "data" / "interaction-1"), "--bench", f"tablebench={tablebench}",
                                "--limit", "1", "--max-rounds", "2", "--max-tokens-per-turn", "48"])
    assert again.exit_code == 0, again.output
    assert "== train: skipped" in again.output and "== export-trained: skipped" in again.output

    ckpt = exp / "model"
    spec = f"hf:{ckpt}?device=cpu&seed=0&default_max_tokens=24"
    # synth eval --model hf:CKPT answers one benchmark question
    out = ws["root"] / "eval-hf"
    evaluated = runner.invoke(app, ["eval", "--bench", "tablebench", "--data", str(tablebench), "--model", spec,
                                    "--limit", "1", "--max-rounds", "1", "--max-tokens-per-turn", "24", "--out", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    [item] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert item["status"] == "done" and item["replies"] == 1

    # synth generate --solver-model hf:CKPT: the checkpoint solves, the scripted teacher asks and inspects
    with FakeOpenAIServer(reply=RoleScript(_task, CODE, ANSWER)) as server:
        generated = runner.invoke(app, [
            "generate", "--sources", str(ws["src"]), "--out", str(ws["root"] / "gen-hf"), "--limit", "1",
            "--model", "openai:fake", "--solver-model", spec, "--base-url", server.base_url,
            "--checklists", str(ws["checklists"]), "--categories", "data_analysis", "--max-rounds", "1",
            "--max-revisions", "0"])
    assert generated.exit_code == 0, generated.output
    stats = json.loads((ws["root"] / "gen-hf" / "stats.json").read_text())
    assert stats["accepted"] + stats["rejected"] == 1

    # synth serve --model hf:CKPT answers one question over the OpenAI-style API
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.config import ServeConfig

    config = ServeConfig(model=spec, max_rounds=1, max_tokens_per_turn=24, workspace_root=ws["root"] / "serve")
    with TestClient(create_app(config)) as client:
        response = client.post("/v1/chat/completions", json={
            "model": "agent", "messages": [{"role": "user", "content": "What is the total amount?"}]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert body["usage"]["completion_tokens"] > 0
        assert client.get("/v1/models").status_code == 200
