"""Single-turn generation throughput: our LLM pipeline vs a peer toolkit (distilabel), same fake endpoint.

Workload: N prompts, one chat completion each, against one local FakeOpenAIServer with a fixed latency (so the
numbers measure the clients' orchestration, not a model). Both sides get the same concurrency:
- ours:  synth.llm `openai:` backend (bounded concurrency, retries) behind the SQLite response cache (fresh, so
         every call is a miss and is written), results appended to a JSONL file — what `synth refine`'s steps do;
- peer:  distilabel 1.x Pipeline `LoadDataFromDicts >> TextGeneration(OpenAILLM)` with input_batch_size = the
         concurrency (distilabel sends one batch's requests concurrently), writing its Distiset to disk.
Wall time covers everything from start to results on disk (distilabel's process start-up included: it is part of
using it). Prints both throughputs and the ratio ours/peer.

The peer is not a dependency of ds-synth. Install it into the same environment first:
    pip install distilabel            # tested with distilabel 1.5.3
Run: python benchmarks/peer_throughput.py [--prompts 200] [--concurrency 32] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from synth.llm.testing_server import FakeOpenAIServer

REPLY = "The mean of the column is 12.5, computed over 4 rows; the median is 10."


def prompts(n: int) -> list[str]:
    return [f"Question {i}: what is the mean of column amount in table t{i % 7}? Answer briefly." for i in range(n)]


async def ours(base_url: str, items: list[str], concurrency: int, out: Path) -> float:
    from synth.llm import load_model
    from synth.llm.cache import CachedChatModel

    model = CachedChatModel(load_model("openai:fake", base_url=base_url, max_concurrency=concurrency),
                            out / "cache.sqlite")
    started = time.perf_counter()

    async def one(prompt: str) -> dict:
        completion = await model.chat([{"role": "user", "content": prompt}], max_tokens=64, temperature=0.0)
        return {"instruction": prompt, "generation": completion.text}

    rows = await asyncio.gather(*(one(p) for p in items))
    with open(out / "ours.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    elapsed = time.perf_counter() - started
    await model.aclose()
    if sum(1 for r in rows if r["generation"] == REPLY) != len(items):
        raise SystemExit("ours: some generations are missing or wrong")
    return elapsed


def peer(base_url: str, items: list[str], concurrency: int, out: Path) -> float:
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "ERROR")
    try:
        from distilabel.models import OpenAILLM
        from distilabel.pipeline import Pipeline
        from distilabel.steps import LoadDataFromDicts
        from distilabel.steps.tasks import TextGeneration
    except ImportError:
        raise SystemExit("the peer toolkit is not installed; run: pip install distilabel") from None

    os.environ.setdefault("DISTILABEL_CACHE_DIR", str(out / "distilabel-cache"))
    started = time.perf_counter()
    with Pipeline(name="peer-throughput", cache_dir=out / "distilabel-cache") as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in items], batch_size=concurrency)
        generate = TextGeneration(
            llm=OpenAILLM(model="fake", base_url=base_url, api_key="not-needed", max_retries=6,
                          generation_kwargs={"max_new_tokens": 64, "temperature": 0.0}),
            input_batch_size=concurrency,
        )
        load >> generate
    distiset = pipeline.run(use_cache=False)
    distiset.save_to_disk(out / "peer-distiset")
    elapsed = time.perf_counter() - started
    rows = distiset["default"]["train"]
    if sum(1 for g in rows["generation"] if g == REPLY) != len(items):
        raise SystemExit("peer: some generations are missing or wrong")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake server takes per request")
    args = parser.parse_args()
    items = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(reply=REPLY, latency_s=args.latency) as server:
        root = Path(tmp)
        ours_s = asyncio.run(ours(server.base_url, items, args.concurrency, root))
        ours_peak, server.max_in_flight = server.max_in_flight, 0
        peer_s = peer(server.base_url, items, args.concurrency, root)
        peer_peak = server.max_in_flight
    ideal = args.prompts / args.concurrency * args.latency
    print(f"workload: {args.prompts} prompts, concurrency {args.concurrency}, server latency {args.latency}s "
          f"(ideal wall {ideal:.2f}s)")
    print(f"ours (synth.llm openai + cache):  {ours_s:6.2f}s  {args.prompts / ours_s:7.1f} req/s  "
          f"peak in flight {ours_peak}")
    print(f"peer (distilabel TextGeneration): {peer_s:6.2f}s  {args.prompts / peer_s:7.1f} req/s  "
          f"peak in flight {peer_peak}")
    print(f"ratio ours/peer throughput: {peer_s / ours_s:.2f}x")
    sys.exit(0)


if __name__ == "__main__":
    main()
