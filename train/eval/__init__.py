"""`synth eval`: benchmark loaders, official scorers and the runner (DESIGN §11)."""

from train.eval.benchmarks import BENCHMARK_NAMES, Benchmark, EvalDataError, EvalItem, Score, get_benchmark
from train.eval.runner import EvalConfig, run_eval, summarize

__all__ = ["BENCHMARK_NAMES", "Benchmark", "EvalDataError", "EvalItem", "Score", "get_benchmark", "EvalConfig",
           "run_eval", "summarize"]
