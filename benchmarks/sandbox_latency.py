"""Per-cell latency of the local sandbox, as a ratio to a bare `python -c` subprocess doing the same work.

Goals: session mode <= 0.2x, script mode <= 1.5x. Run: python benchmarks/sandbox_latency.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from synth.sandbox import Limits, get_sandbox

CELLS = {
    "sum of a range": "print(sum(range(100_000)))",
    "import pandas": "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2, 3]}).a.sum())",
}


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page cache, lazily built caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sandbox = get_sandbox()
    limits = Limits(timeout_s=120)
    print(f"{'cell':<16} {'bare python -c':>15} {'script':>16} {'session':>16}")
    with sandbox.open(mode="script", limits=limits) as script, sandbox.open(mode="session", limits=limits) as session:
        isolation = "bwrap" if script._jail.bwrap else "rlimits only"
        for name, code in CELLS.items():
            bare = _median_seconds(lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, check=True), args.repeats)
            in_script = _median_seconds(lambda: script.run(code), args.repeats)
            in_session = _median_seconds(lambda: session.run(code), args.repeats)
            print(
                f"{name:<16} {bare * 1000:>12.1f} ms {in_script * 1000:>8.1f} ms {in_script / bare:>5.2f}x"
                f" {in_session * 1000:>8.1f} ms {in_session / bare:>5.3f}x"
            )
    print(f"(isolation: {isolation}; medians of {args.repeats} runs after a warm-up; goals: script <= 1.5x, session <= 0.2x)")


if __name__ == "__main__":
    main()
