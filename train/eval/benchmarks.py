"""The benchmark registry of `synth eval`: name → loader, prompt builder and official scorer.

Each benchmark module (infiagent, wikitq, tablebench, ds1000) defines a `BENCHMARK`; `get_benchmark(name)` finds it.
A loader turns the benchmark's files into `EvalItem`s (the instruction the agent gets, the files placed in its
sandbox workspace, the reference); a scorer turns the agent's final answer into a `Score` with the benchmark's own
rules. Scorers that execute code (DS-1000, TableBench charts) get a sandbox to run it in.
"""

from __future__ import annotations

import importlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from synth.sandbox.base import Sandbox
from train.errors import TrainError

BENCHMARK_NAMES: tuple[str, ...] = ("infiagent", "wikitq", "tablebench", "ds1000")


class EvalDataError(TrainError):
    """Benchmark data that cannot be read; the message names the file (and line) and what is wrong."""


@dataclass
class EvalItem:
    id: str
    instruction: str  # what the agent is asked (the `# Instruction` of its prompt)
    reference: Any  # the label the scorer compares against
    category: str = ""  # the summary groups results by this
    files: dict[str, Path] = field(default_factory=dict)  # workspace name → source file (copied, never modified)
    texts: dict[str, str] = field(default_factory=dict)  # workspace name → content written for the item
    meta: dict[str, Any] = field(default_factory=dict)

    def stage(self, directory: Path) -> list[Path]:
        """Write the item's workspace files into `directory`; return the top-level paths to give a sandbox."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, source in self.files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        for name, text in self.texts.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return sorted(directory.iterdir())


@dataclass
class Score:
    score: float  # in [0, 1]; the benchmark's metric for this item
    correct: bool  # the item counts as solved
    details: dict[str, Any] = field(default_factory=dict)  # always holds "metric" and "prediction"


Loader = Callable[[Path, Optional[int]], list[EvalItem]]
Scorer = Callable[[EvalItem, Optional[str], Optional[Sandbox]], Score]
Summariser = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    load: Loader  # (data path, limit) → items
    score: Scorer  # (item, the agent's final answer or None, sandbox for scorers that run code) → Score
    metric: str  # what `score` means, for the summary table
    extra_metrics: Summariser | None = None  # benchmark-specific figures over result records (e.g. per sub-answer)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARK_NAMES:
        raise EvalDataError(f"--bench {name!r}: choose from {', '.join(BENCHMARK_NAMES)}")
    return importlib.import_module(f"train.eval.{name}").BENCHMARK


# --- helpers shared by the benchmark modules ---------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z0-9]+")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased alphanumeric tokens (as the `rouge_score` package tokenises), LCS based."""
    pred = _TOKEN_RE.findall(str(prediction).lower())
    ref = _TOKEN_RE.findall(str(reference).lower())
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


_FINAL_ANSWER_RE = re.compile(r"final answer\s*[:：]\s*(.+)", re.IGNORECASE)


def final_answer(text: str | None) -> tuple[str, str]:
    """The value after the last `Final Answer:` line, else the last non-empty line; and where it came from."""
    if not text:
        return "", "none"
    found = _FINAL_ANSWER_RE.findall(text)
    if found:
        return _strip_markup(found[-1]), "final_answer_line"
    lines = [line for line in text.splitlines() if line.strip()]
    return (_strip_markup(lines[-1]), "last_line") if lines else ("", "none")


def _strip_markup(value: str) -> str:
    value = value.strip().replace("**", "").strip()
    return value.strip("`").strip()


_FENCE_RE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def code_blocks(text: str | None) -> list[str]:
    """The fenced code blocks of `text`, in order."""
    return [m.group(1) for m in _FENCE_RE.finditer(text or "")]


__all__ = [
    "BENCHMARK_NAMES", "Benchmark", "EvalDataError", "EvalItem", "Score", "get_benchmark", "rouge_l",
    "final_answer", "code_blocks",
]
