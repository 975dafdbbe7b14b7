"""Throughput of the openai backend against the local fake server, and what the response cache saves.

With a fixed server latency L and client concurrency C the ideal rate is C/L requests per second; the backend
should reach >= 0.9 of it. A second identical run through the SQLite cache should be >= 50x faster.

    python benchmarks/llm_concurrency.py [--requests 256] [--concurrency 32] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from synth.llm import load_model
from synth.llm.testing_server import FakeOpenAIServer


async def _run(model, requests: int) -> float:
    prompts = [[{"role": "user", "content": f"question number {i}"}] for i in range(requests)]
    start = time.perf_counter()
    results = await asyncio.gather(*(model.chat(p, max_tokens=16) for p in prompts))
    elapsed = time.perf_counter() - start
    assert len(results) == requests and all(r.text for r in results)
    return elapsed


async def main(requests: int, concurrency: int, latency: float) -> None:
    ideal = concurrency / latency
    with FakeOpenAIServer(reply="a short fixed answer", latency_s=latency) as server:
        model = load_model("openai:bench", base_url=server.base_url, max_concurrency=concurrency)
        await _run(model, concurrency)  # warm the connection pool
        elapsed = await _run(model, requests)
        await model.aclose()
        rate = requests / elapsed
        print(f"concurrency: {requests} requests, C={concurrency}, L={latency}s -> {rate:.1f} req/s "
              f"(ideal {ideal:.1f}); ratio {rate / ideal:.3f} (goal >= 0.9); server max in flight "
              f"{server.max_in_flight}")

        with tempfile.TemporaryDirectory() as tmp:
            cached = load_model("openai:bench", base_url=server.base_url, max_concurrency=concurrency,
                                cache_path=Path(tmp) / "cache.sqlite")
            first = await _run(cached, requests)
            calls_before = server.count
            second = await _run(cached, requests)
            assert server.count == calls_before, "the repeated run reached the server"
            await cached.aclose()
        print(f"cache: first run {first:.3f}s, repeated run {second:.4f}s; speed-up {first / second:.1f}x "
              f"(goal >= 50x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.latency))
