"""The SQLite response cache: key sensitivity, in-flight dedupe, errors, and concurrent writers in two processes.
(A hit answering without a second backend call is part of the contract: tests/test_chat_model_contract.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from synth.llm import load_model
from synth.llm.cache import CachedChatModel, ResponseCache
from synth.llm.testing_server import FakeOpenAIServer

USER = [{"role": "user", "content": "count the rows"}]


@pytest.mark.parametrize(
    "change",
    [
        {"stop": ["</Code>"]},
        {"max_tokens": 11},
        {"temperature": 0.7},
        {"response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "count the columns"}]},
        {"messages": [{"role": "system", "content": "count the rows"}]},
    ],
)
async def test_every_parameter_changes_the_key(tmp_path, scripted_model, change):
    inner = scripted_model(["a", "b"])
    model = CachedChatModel(inner, tmp_path / "cache.sqlite")
    base = {"messages": USER, "stop": None, "max_tokens": 10, "temperature": 0.0, "response_format": None}
    await model.chat(**base)
    second = await model.chat(**{**base, **change})
    assert second.text == "b" and len(inner.calls) == 2
    await model.aclose()


async def test_backend_name_and_seed_change_the_key(tmp_path, scripted_model):
    path = tmp_path / "cache.sqlite"
    one = CachedChatModel(scripted_model(["from one"], name="scripted:one"), path)
    two = CachedChatModel(scripted_model(["from two"], name="scripted:two"), path)
    assert (await one.chat(USER)).text == "from one"
    assert (await two.chat(USER)).text == "from two"
    seeded_inner = scripted_model(["seeded"], name="scripted:one")
    seeded_inner.seed = 5
    seeded = CachedChatModel(seeded_inner, path)
    assert (await seeded.chat(USER)).text == "seeded"
    # Same backend and seed in a fresh wrapper over the same file: served from disk.
    reread = CachedChatModel(scripted_model(["never asked"], name="scripted:one"), path)
    assert (await reread.chat(USER)).text == "from one"
    for model in (one, two, seeded, reread):
        await model.aclose()


async def test_identical_concurrent_requests_ask_the_model_once(tmp_path):
    with FakeOpenAIServer(reply="slow answer", latency_s=0.2) as server:
        model = load_model("openai:m", base_url=server.base_url, cache_path=tmp_path / "c.sqlite")
        results = await asyncio.gather(*(model.chat(USER) for _ in range(5)))
        await model.aclose()
    assert [r.text for r in results] == ["slow answer"] * 5
    assert server.count == 1
    assert sum(r.usage.cached for r in results) == 4


async def test_errors_are_not_cached(tmp_path, scripted_model):
    calls = {"n": 0}

    def flaky(messages):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("backend hiccup")
        return "recovered"

    model = CachedChatModel(scripted_model([flaky]), tmp_path / "cache.sqlite")
    with pytest.raises(RuntimeError, match="hiccup"):
        await model.chat(USER)
    assert (await model.chat(USER)).text == "recovered"
    await model.aclose()


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "cache.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(ValueError, match="cache.sqlite: not a usable SQLite database"):
        ResponseCache(bad)
    assert bad.read_text().startswith("this is not sqlite")


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from doubles import ScriptedChatModel
    from synth.llm.cache import CachedChatModel

    async def main(tag, path):
        model = CachedChatModel(ScriptedChatModel([lambda m: "answer to " + m[-1]["content"]]), path)
        # Half the prompts are shared with the other process, half are its own.
        prompts = [f"shared {{i}}" for i in range(60)] + [f"{{tag}} {{i}}" for i in range(60)]
        results = await asyncio.gather(*(model.chat([{{"role": "user", "content": p}}]) for p in prompts))
        assert all(r.text == "answer to " + p for r, p in zip(results, prompts)), "wrong answer"
        await model.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_two_processes_write_one_cache_concurrently(tmp_path):
    from conftest import REPO

    path = tmp_path / "shared.sqlite"
    script = _WRITER.format(tests=str(REPO / "tests"))
    procs = [subprocess.Popen([sys.executable, "-c", script, tag, str(path)], stderr=subprocess.PIPE, text=True)
             for tag in ("alpha", "beta")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT key, text FROM responses").fetchall())
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    texts = sorted(rows.values())
    assert len(rows) == 60 + 60 + 60
    assert texts == sorted({f"answer to shared {i}" for i in range(60)}
                           | {f"answer to alpha {i}" for i in range(60)}
                           | {f"answer to beta {i}" for i in range(60)})


def test_many_processes_open_one_fresh_cache_at_once(tmp_path):
    # Switching a new file to WAL can answer "database is locked" without waiting; every opener must still succeed.
    code = "import sys; from synth.llm.cache import ResponseCache; print(len(ResponseCache(sys.argv[1])))"
    for round_ in range(4):
        path = tmp_path / f"fresh{round_}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert out.strip() == "0"
