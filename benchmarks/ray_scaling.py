"""`synth generate` on the Ray executor, one machine: overhead vs the local executor, and 1 vs 2 Ray workers.

All runs use the same plan against one FakeOpenAIServer with a fixed latency (so episodes wait on the "model",
not on the CPU) and real sandbox cells, checklists and run-dir writes.
1. local executor vs Ray executor (2 workers) at the same concurrency: episodes/s and the ratio ray/local
   (what the actor hop, result shipping and driver-side writes cost; 1.0 = free).
2. Ray with 1 worker vs 2 workers, each worker running `--per-worker` episodes at once (a worker stands for a
   machine of fixed capacity): episodes/s and the speed-up 2 workers / 1 worker (ideal 2.0).

Needs the ray extra: pip install 'ds-synth[ray]'.
Run: python benchmarks/ray_scaling.py [--episodes 24] [--per-worker 4] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from generate_overhead import CATEGORIES, reply, write_workload  # noqa: E402  (the same scripted workload)

from synth.config import GenerateConfig  # noqa: E402
from synth.generate import generate  # noqa: E402
from synth.llm.testing_server import FakeOpenAIServer  # noqa: E402


def _run(root: Path, name: str, base_url: str, episodes: int, concurrency: int, executor) -> float:
    config = GenerateConfig(sources=root / "src", out=root / name, model="openai:bench", base_url=base_url,
                            limit=episodes, categories=list(CATEGORIES), checklists=root / "checklists",
                            concurrency=concurrency, max_rounds=4, max_revisions=0, seed=1)
    started = time.perf_counter()
    summary = asyncio.run(generate(config, out=io.StringIO(), live=False, scheduler=executor))
    elapsed = time.perf_counter() - started
    finished = summary.accepted + summary.rejected + summary.duplicates  # the plan repeats some task kinds
    if finished != episodes or summary.errors:
        raise SystemExit(f"{name}: only {finished} of {episodes} episodes finished ({summary.errors} errors)")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--per-worker", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.3)
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        raise SystemExit("ray is not installed; run: pip install 'ds-synth[ray]'") from None
    from synth.scheduler import LocalScheduler, RayScheduler

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(reply=reply, latency_s=args.latency) as server:
            root = Path(tmp)
            write_workload(root)
            n, c = args.episodes, 2 * args.per_worker
            local_s = _run(root, "local", server.base_url, n, c, LocalScheduler())
            ray2_s = _run(root, "ray2", server.base_url, n, c, RayScheduler(workers=2))
            ray1_s = _run(root, "ray1", server.base_url, n, args.per_worker, RayScheduler(workers=1))
    finally:
        ray.shutdown()
    print(f"workload: {n} episodes x 4 LLM calls + sandbox cells, server latency {args.latency}s, 2 CPUs")
    print(f"local executor, concurrency {c}:        {local_s:6.2f}s  {n / local_s:5.2f} episodes/s")
    print(f"ray executor, 2 workers x {args.per_worker}:         {ray2_s:6.2f}s  {n / ray2_s:5.2f} episodes/s")
    print(f"ray executor, 1 worker  x {args.per_worker}:         {ray1_s:6.2f}s  {n / ray1_s:5.2f} episodes/s")
    print(f"ratio ray/local throughput (same concurrency): {local_s / ray2_s:.2f}x")
    print(f"ratio 2 workers / 1 worker throughput:         {ray1_s / ray2_s:.2f}x")


if __name__ == "__main__":
    main()
