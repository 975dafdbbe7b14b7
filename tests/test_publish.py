"""Publishing: `--to DIR` loads with datasets.load_dataset per config (offline); the card parses and merges; Hub
uploads retry transient failures (an injected api object and a real HfApi against a local fake endpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_export import interaction_record, make_run, make_sources, reasoning_record, sandbox_trajectory

from synth.dataset.card import BEGIN, END, build_card, split_card
from synth.dataset.publish import PublishError, is_transient, publish_hub, publish_local, with_retries


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A generate run (real sandbox trajectories) and a refine run (reasoning records)."""
    base = tmp_path_factory.mktemp("publish")
    sources = make_sources(base / "sources")
    traj = sandbox_trajectory(sources, "Which region earns the most revenue?")
    interaction = [
        interaction_record(traj, sources, instruction="Which region earns the most revenue?"),
        interaction_record(traj, sources, instruction="Which region earns the most revenue??"),  # duplicate
        interaction_record(traj, sources, instruction="What is the total of all orders?", source_name="db/shop.sqlite"),
    ]
    gen = make_run(base / "gen", sources, interaction)
    ref = make_run(base / "ref", sources, [reasoning_record("Which city has the larger population?", variant=v)
                                           for v in ("distilled", "refined")])
    return gen, ref


def _load_offline(folder: Path, name: str) -> list[dict]:
    """load_dataset in a fresh process with the Hub switched off, as a user without network would."""
    code = ("import json, sys, datasets; ds = datasets.load_dataset(sys.argv[1], sys.argv[2], split='train'); "
            "print(json.dumps(ds.to_list()))")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(folder.parent / "hf-home"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, str(folder), name], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_publish_to_dir_loads_each_config(runs, tmp_path):
    gen, ref = runs
    out = tmp_path / "dataset"
    result = publish_local([gen, ref], out, dedup=True)
    assert result.rows == {"interaction": 2, "reasoning": 2, "rl": 4}
    assert "exact_duplicate: 1" in result.filter_summary
    assert set(result.datasets) == {"interaction", "reasoning", "rl"}
    interaction = _load_offline(out, "interaction")
    assert len(interaction) == 2 and all("<Execute>" in r["messages"][1]["content"] for r in interaction)
    assert all(r["execute_spans"] for r in interaction)
    reasoning = _load_offline(out, "reasoning")
    assert sorted(r["variant"] for r in reasoning) == ["distilled", "refined"]
    rl = _load_offline(out, "rl")
    with_workspace = [r for r in rl if r["workspace"]]
    assert len(with_workspace) == 2
    for row in with_workspace:
        with tarfile.open(out / "data" / "rl" / row["workspace"]) as tar:
            assert tar.getnames()[0] in ("sales.csv", "db/shop.sqlite")


def test_card_parses_and_describes_the_runs(runs, tmp_path):
    from huggingface_hub import DatasetCard

    gen, ref = runs
    publish_local([gen, ref], tmp_path / "d")
    card = DatasetCard.load(tmp_path / "d" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and "synthetic" in data["tags"]
    assert data["size_categories"] == ["n<1K"] and "text-generation" in data["task_categories"]
    assert [c["config_name"] for c in data["configs"]] == ["interaction", "reasoning", "rl"]
    assert data["configs"][2]["data_files"][0]["path"] == "data/rl/*.parquet"
    for section in ("## How it was made", "## Statistics", "## Limitations", "max_rounds: 8"):
        assert section in card.text


def test_merge_keeps_existing_metadata_and_text(runs, tmp_path):
    from huggingface_hub import DatasetCard

    gen, ref = runs
    out = tmp_path / "d"
    out.mkdir()
    (out / "README.md").write_text(
        "---\nlicense: cc-by-4.0\npretty_name: Our DS data\ntags:\n- finance\nsize_categories:\n- 1M<n<10M\n"
        "configs:\n- config_name: extra\n  data_files: extra/*.csv\n---\n\n# Our data\n\nHand-written intro.\n")
    publish_local([gen], out)
    first = (out / "README.md").read_text()
    data = DatasetCard(first).data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["pretty_name"] == "Our DS data"
    assert data["tags"][0] == "finance" and "synthetic" in data["tags"]
    assert data["size_categories"] == ["n<1K"]  # derived from the data, not kept
    assert [c["config_name"] for c in data["configs"]] == ["interaction", "rl", "extra"]
    assert "Hand-written intro." in first and first.count(BEGIN) == 1
    # Publishing again replaces the generated block only.
    publish_local([gen, ref], out)
    second = (out / "README.md").read_text()
    assert second.count(BEGIN) == 1 and second.count(END) == 1 and "Hand-written intro." in second
    assert "| reasoning | 2 |" in second
    assert (out / "data" / "reasoning").is_dir()


def test_card_with_bad_yaml_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid YAML"):
        build_card({"interaction": 1}, stats={}, run_configs=[], existing="---\nlicense: [\n---\nbody\n")
    assert split_card("no front matter") == ({}, "no front matter")


def test_publish_to_dir_refuses_a_run_folder(runs):
    gen, _ = runs
    with pytest.raises(PublishError, match="inside the run"):
        publish_local([gen], gen / "out")


class _Status(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.response = type("R", (), {"status_code": status})()


class FakeApi:
    """Stands in for HfApi: fails the first calls of each method as scripted, records what it was asked."""

    def __init__(self, failures: dict[str, list[BaseException]], card: str | None = None):
        self.failures = failures
        self.card = card
        self.calls: list[str] = []
        self.uploaded: dict[str, bytes] = {}

    def _maybe_fail(self, name):
        self.calls.append(name)
        queue = self.failures.get(name) or []
        if queue:
            raise queue.pop(0)

    def create_repo(self, *, repo_id, repo_type, private, exist_ok):
        self._maybe_fail("create_repo")
        assert repo_type == "dataset" and exist_ok

    def hf_hub_download(self, *, repo_id, filename, repo_type, **_):
        self._maybe_fail("hf_hub_download")
        if self.card is None:
            raise _Status(404)
        path = Path(self.tmp) / "README.md"
        path.write_text(self.card)
        return str(path)

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        self._maybe_fail("upload_folder")
        root = Path(folder_path)
        self.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_hub_push_retries_transient_failures(runs, tmp_path):
    gen, ref = runs
    api = FakeApi({"create_repo": [ConnectionError("reset")], "hf_hub_download": [_Status(503)],
                   "upload_folder": [_Status(502), TimeoutError("slow")]},
                  card="---\nlicense: mit\n---\nOld text.\n")
    api.tmp = tmp_path
    delays, logs = [], []
    result = publish_hub([gen, ref], "org/ds", api=api, sleep=delays.append, log=logs.append)
    assert api.calls == ["create_repo"] * 2 + ["hf_hub_download"] * 2 + ["upload_folder"] * 3
    assert delays == [2.0, 2.0, 2.0, 4.0] and len(logs) == 4
    assert "README.md" in api.uploaded and "data/rl/train-00000-of-00001.parquet" in api.uploaded
    assert any(name.startswith("data/rl/workspaces/") for name in api.uploaded)
    assert "license: mit" in api.uploaded["README.md"].decode() and result.rows["interaction"] == 3


def test_hub_push_gives_up_on_permanent_errors(runs, tmp_path):
    gen, _ = runs
    api = FakeApi({"create_repo": [_Status(401)]})
    with pytest.raises(PublishError, match="Hub org/ds: _Status: HTTP 401"):
        publish_hub([gen], "org/ds", api=api, sleep=lambda s: None)
    assert api.calls == ["create_repo"]
    api = FakeApi({"upload_folder": [_Status(503)] * 5}, card=None)
    api.tmp = tmp_path
    with pytest.raises(PublishError, match="503"):
        publish_hub([gen], "org/ds", api=api, sleep=lambda s: None, attempts=3)
    assert api.calls.count("upload_folder") == 3
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish_hub([gen], "nope", api=api)


def test_real_hfapi_errors_from_a_local_endpoint_are_classified(monkeypatch):
    """A real HfApi against a local HTTP server that answers 503 twice, then creates the repo."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import HfApi

    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.append(self.path)
            status, body = (503, b'{"error": "busy"}') if len(hits) <= 2 else (200, b'{"url": "x/datasets/org/ds"}')
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = HfApi(endpoint=f"http://127.0.0.1:{server.server_port}", token="hf_fake")
        errors = []

        def create():
            try:
                return api.create_repo(repo_id="org/ds", repo_type="dataset", exist_ok=True)
            except Exception as exc:
                errors.append(exc)
                raise

        with_retries(create, what="create", sleep=lambda s: None)
    finally:
        server.shutdown()
    assert len(errors) == 2 and all(is_transient(e) for e in errors)
    assert all(path.startswith("/api/repos/create") for path in hits) and len(hits) == 3
    assert not is_transient(ValueError("bad"))


def test_cli_publish_to_dir(runs, tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    gen, ref = runs
    result = CliRunner().invoke(app, ["publish", str(gen), str(ref), "--to", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "interaction: 3 rows, reasoning: 2 rows, rl: 5 rows" in result.output
    both = CliRunner().invoke(app, ["publish", str(gen), "--to", str(tmp_path / "d"), "--repo-id", "a/b"])
    assert both.exit_code == 1 and "exactly one of" in both.output
