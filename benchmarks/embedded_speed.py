"""Decode speed of the embedded backend vs llama.cpp's own figure for the same request.

llama.cpp reports its decode rate (timings.predicted_per_second) in every response. We time the same request
end to end through EmbeddedChatModel.chat (thread hop, request building, stop handling, result conversion) with
the prompt already in llama.cpp's prompt cache, so the wall time is decode plus our overhead. Ratio goal >= 0.9.

    python benchmarks/embedded_speed.py [--model embedded:0.5b] [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from synth.llm import load_model

PROMPT = [{"role": "user", "content": "Write a long, detailed story about a data scientist cleaning a messy CSV "
                                      "file. Use at least 400 words."}]


async def main(spec: str, tokens: int, runs: int) -> None:
    model = load_model(spec, seed=0)
    start = time.perf_counter()
    await model.load()
    print(f"{spec}: loaded in {time.perf_counter() - start:.1f}s, {model._key.n_threads} threads")
    await model.chat(PROMPT, max_tokens=tokens, temperature=0.0)  # warm-up: fills the prompt cache

    ours, theirs, raw = [], [], []
    server = model.raw_server()
    body = model.request_body(PROMPT, max_tokens=tokens, temperature=0.0)
    for _ in range(runs):
        start = time.perf_counter()
        completion = await model.chat(PROMPT, max_tokens=tokens, temperature=0.0)
        wall = time.perf_counter() - start
        ours.append(completion.usage.completion_tokens / wall)
        theirs.append(model.last_timings["predicted_per_second"])
        start = time.perf_counter()
        response = server.handle_chat_completions(body)
        raw.append(response["usage"]["completion_tokens"] / (time.perf_counter() - start))
    ours_median, theirs_median, raw_median = (statistics.median(v) for v in (ours, theirs, raw))
    print(f"decode tokens/s over {runs} runs of {tokens} tokens (median): ours end-to-end {ours_median:.1f}, "
          f"raw xllamacpp call {raw_median:.1f}, llama.cpp's own decode figure {theirs_median:.1f}")
    print(f"ratio ours / llama.cpp = {ours_median / theirs_median:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:0.5b")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.model, args.tokens, args.runs))
