"""`synth experiment`: does ds-synth data change a model? generate → SFT → evaluate base and trained, side by side.

Steps (each a `synth` subprocess, its output in EXP/logs/STEP.log; each skipped or resumed when its result is
already in EXP, so rerunning the same command continues an interrupted experiment):

1. data      `synth generate` on every --sources folder (interaction records) and `synth refine` on
             --reasoning-input (reasoning records), with the --teacher model; or the given --runs
2. train     `synth train sft` of the --base model on all of them → EXP/model
3. models    the same backend for both sides: `hf` evaluates the base folder and the checkpoint with
             transformers; `gguf` exports BOTH with `synth train export-gguf --type T` and runs them on llama.cpp
             (never the bundled Q4 base against a higher-precision checkpoint)
4. eval      `synth eval` of base and trained on every --bench NAME=PATH through the same agent loop, sandbox,
             round cap and scorer → EXP/eval/{base,trained}-NAME
5. report    EXP/experiment.json and EXP/report.md: per benchmark, items, both scores, protocol compliance (share
             of replies in the five-action format) and mean rounds per episode; wall time and peak RSS per step

The base model is evaluated as what it is (a general instruct model: the solver role's system prompt and
few-shot example); the checkpoint carries the ten tag tokens, so it runs as the deepanalyze family (no system
prompt, Execute inline), exactly the format it was trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from train.errors import TrainError

BACKENDS = ("hf", "gguf")


@dataclass
class ExperimentConfig:
    out: Path
    base: str = "embedded:0.5b"
    sources: list[Path] = field(default_factory=list)
    records: int = 20  # episodes per sources folder
    reasoning_input: Path | None = None
    reasoning_format: str = "auto"
    reasoning_limit: int = 20
    runs: list[Path] = field(default_factory=list)
    teacher: str = "embedded"
    base_url: str | None = None
    generate_args: list[str] = field(default_factory=list)  # extra `synth generate` options
    train_config: Path | None = None
    train_args: list[str] = field(default_factory=list)  # extra `synth train sft` options
    benches: list[tuple[str, Path]] = field(default_factory=list)
    limit: int | None = None
    max_rounds: int = 10
    max_tokens_per_turn: int = 1024
    backend: str = "gguf"
    gguf_type: str = "q8_0"
    model_options: str = ""  # spec options for both sides, e.g. "n_threads=1" (gguf) or "dtype=bfloat16" (hf)
    eval_args: list[str] = field(default_factory=list)  # extra `synth eval` options

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.backend not in BACKENDS:
            raise TrainError(f"--backend {self.backend!r}: choose hf or gguf")
        if not self.benches:
            raise TrainError("--bench NAME=PATH is needed at least once (e.g. --bench infiagent=DIR)")
        if not (self.sources or self.runs or self.reasoning_input):
            raise TrainError("no training data: give --sources DIR, --reasoning-input PATH or --runs RUN")


@dataclass
class Step:
    name: str
    command: list[str]
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    returncode: int = 0
    skipped: bool = False


class Experiment:
    def __init__(self, config: ExperimentConfig, *, echo: TextIO | None = None, python: str | None = None) -> None:
        self.cfg = config
        self.echo = echo
        self.python = python or sys.executable
        self.steps: list[Step] = []
        (config.out / "logs").mkdir(parents=True, exist_ok=True)

    # --- the steps ---

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        data = self.data()
        model = self.train(data)
        base_spec, trained_spec = self.models(model)
        results = {bench: {"base": self.evaluate("base", bench, path, base_spec),
                           "trained": self.evaluate("trained", bench, path, trained_spec)}
                   for bench, path in self.cfg.benches}
        return self.report(results, base_spec, trained_spec, time.monotonic() - started)

    def data(self) -> list[Path]:
        runs = [Path(r) for r in self.cfg.runs]
        teacher = ["--model", self.cfg.teacher] + (["--base-url", self.cfg.base_url] if self.cfg.base_url else [])
        for index, sources in enumerate(self.cfg.sources):
            run = self.cfg.out / "data" / f"interaction-{index + 1}"
            resume = ["--resume"] if (run / "config.yaml").is_file() else []
            self._run(f"generate-{index + 1}", ["generate", "--sources", str(sources), "--out", str(run),
                                                "--limit", str(self.cfg.records), *teacher, *resume,
                                                *self.cfg.generate_args], ok=(0, 1))
            runs.append(run)
        if self.cfg.reasoning_input is not None:
            run = self.cfg.out / "data" / "reasoning"
            resume = ["--resume"] if (run / "config.yaml").is_file() else []
            self._run("refine", ["refine", "--input", str(self.cfg.reasoning_input), "--format",
                                 self.cfg.reasoning_format, "--out", str(run), "--limit",
                                 str(self.cfg.reasoning_limit), *teacher, *resume], ok=(0, 1))
            runs.append(run)
        usable = [r for r in runs if _count_records(r) > 0]
        if not usable:
            raise TrainError(f"no accepted records in {', '.join(map(str, runs))}; nothing to train on")
        return usable

    def train(self, data: Sequence[Path]) -> Path:
        model = self.cfg.out / "model"
        result = model / "sft_result.json"
        if result.is_file() and not json.loads(result.read_text()).get("interrupted"):
            self._skip("train", f"{model} is trained")
            return model
        args = ["train", "sft", *[a for run in data for a in ("--data", str(run))], "--model", self.cfg.base,
                "--out", str(model)]
        if self.cfg.train_config is not None:
            args += ["--config", str(self.cfg.train_config)]
        self._run("train", [*args, *self.cfg.train_args])
        return model

    def models(self, model: Path) -> tuple[str, str]:
        from synth.llm.transformers_backend import tokenizer_family
        from train.models import resolve_base_model

        base_folder = resolve_base_model(self.cfg.base).path
        family = tokenizer_family(model)
        extra = f"&{self.cfg.model_options}" if self.cfg.model_options else ""
        if self.cfg.backend == "hf":
            return f"hf:{base_folder}?family=instruct{extra}", f"hf:{model}?family={family}{extra}"
        files = {}
        for which, folder in (("base", base_folder), ("trained", model)):
            target = self.cfg.out / "gguf" / f"{which}-{self.cfg.gguf_type}.gguf"
            if target.is_file() and target.stat().st_mtime >= (folder / "config.json").stat().st_mtime:
                self._skip(f"export-{which}", f"{target} exists")
            else:
                self._run(f"export-{which}", ["train", "export-gguf", str(folder), "--out", str(target),
                                              "--type", self.cfg.gguf_type])
            files[which] = target
        return (f"embedded:{files['base']}?family=instruct{extra}",
                f"embedded:{files['trained']}?family={family}{extra}")

    def evaluate(self, which: str, bench: str, data: Path, spec: str) -> dict[str, Any]:
        out = self.cfg.out / "eval" / f"{which}-{bench}"
        args = ["eval", "--bench", bench, "--data", str(data), "--model", spec, "--out", str(out),
                "--max-rounds", str(self.cfg.max_rounds), "--max-tokens-per-turn", str(self.cfg.max_tokens_per_turn),
                "--concurrency", "1"]
        if self.cfg.limit is not None:
            args += ["--limit", str(self.cfg.limit)]
        self._run(f"eval-{which}-{bench}", [*args, *self.cfg.eval_args], ok=(0, 1))
        summary = out / "summary.json"
        if not summary.is_file():
            raise TrainError(f"eval of {which} on {bench} wrote no {summary}; see {self._log(f'eval-{which}-{bench}')}")
        return json.loads(summary.read_text(encoding="utf-8"))

    def report(self, results: dict[str, dict[str, Any]], base_spec: str, trained_spec: str, seconds: float
               ) -> dict[str, Any]:
        rows = []
        for bench, sides in results.items():
            row: dict[str, Any] = {"bench": bench, "metric": sides["base"].get("metric", "")}
            for which in ("base", "trained"):
                overall = sides[which]["overall"]
                row[which] = {k: overall.get(k) for k in ("n", "score", "accuracy", "errors", "compliance",
                                                          "mean_rounds", "mean_turns", "answered")}
            rows.append(row)
        training = _read_json(self.cfg.out / "model" / "sft_result.json")
        report = {
            "base": self.cfg.base, "base_spec": base_spec, "trained_spec": trained_spec, "backend": self.cfg.backend,
            "gguf_type": self.cfg.gguf_type if self.cfg.backend == "gguf" else None,
            "max_rounds": self.cfg.max_rounds, "max_tokens_per_turn": self.cfg.max_tokens_per_turn, "results": rows,
            "training": {"rows": sum(s.get("rows", 0) for s in training.get("stages", [])),
                         "stages": [{k: s.get(k) for k in ("name", "rows", "steps", "losses", "seconds",
                                                           "tokens_per_second", "peak_rss_bytes", "dropped_long",
                                                           "longest")}
                                    for s in training.get("stages", [])]},
            "steps": [asdict(s) for s in self.steps], "seconds": round(seconds, 1),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()},
        }
        (self.cfg.out / "experiment.json").write_text(json.dumps(report, indent=2, default=str) + "\n",
                                                      encoding="utf-8")
        (self.cfg.out / "report.md").write_text(render_markdown(report), encoding="utf-8")
        return report

    # --- subprocesses ---

    def _log(self, name: str) -> Path:
        return self.cfg.out / "logs" / f"{name}.log"

    def _skip(self, name: str, why: str) -> None:
        self.steps.append(Step(name, [], skipped=True))
        self._say(f"== {name}: skipped ({why})")

    def _say(self, text: str) -> None:
        if self.echo is not None:
            print(text, file=self.echo, flush=True)

    def _run(self, name: str, args: list[str], *, ok: tuple[int, ...] = (0,)) -> Step:
        command = [self.python, "-m", "synth", *args]
        step = Step(name, command)
        self._say(f"== {name}: {' '.join(args)}  (log: {self._log(name)})")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": os.environ.get("COLUMNS", "160")}
        started = time.monotonic()
        with open(self._log(name), "a", encoding="utf-8") as log:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    bufsize=1)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    if self.echo is not None:
                        self.echo.write(line)
                        self.echo.flush()
                _, status, usage = os.wait4(proc.pid, 0)
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
            proc.returncode = os.waitstatus_to_exitcode(status)
        step.seconds = round(time.monotonic() - started, 1)
        step.peak_rss_bytes = int(usage.ru_maxrss) * 1024
        step.returncode = proc.returncode
        self.steps.append(step)
        self._say(f"== {name}: exit {step.returncode}, {step.seconds:.0f} s, peak RSS "
                  f"{step.peak_rss_bytes / 2**30:.2f} GB")
        if step.returncode not in ok:
            raise TrainError(f"step {name} failed (exit {step.returncode}); see {self._log(name)}")
        return step


def _count_records(run: Path) -> int:
    path = Path(run) / "records.jsonl" if Path(run).is_dir() else Path(run)
    if not path.is_file():
        return 1 if Path(run).exists() else 0  # an export file or dataset folder: let train read it
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "-"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def comparison_rows(report: dict[str, Any]) -> list[list[str]]:
    """The side-by-side table: one row per benchmark."""
    rows = []
    for row in report["results"]:
        base, trained = row["base"], row["trained"]
        rows.append([row["bench"], str(base.get("n")), _num(base.get("score")), _num(trained.get("score")),
                     _pct(base.get("compliance")), _pct(trained.get("compliance")),
                     _num(base.get("mean_rounds"), 2), _num(trained.get("mean_rounds"), 2),
                     f"{base.get('errors', 0)}/{trained.get('errors', 0)}"])
    return rows


COLUMNS = ["bench", "items", "base score", "trained score", "base compliance", "trained compliance",
           "base rounds", "trained rounds", "errors b/t"]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Experiment: {report['base']} before and after SFT on ds-synth records", "",
             f"Backend: {report['backend']}" + (f" ({report['gguf_type']} for both)" if report.get("gguf_type") else "")
             + f"; round cap {report['max_rounds']}.", f"Base: `{report['base_spec']}`  ",
             f"Trained: `{report['trained_spec']}`", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in comparison_rows(report)]
    training = report.get("training") or {}
    lines += ["", f"Training: {training.get('rows', 0)} records."]
    for stage in training.get("stages", []):
        losses = stage.get("losses") or []
        curve = ", ".join(f"{x:.3f}" for x in losses)
        lines.append(f"- stage {stage['name']}: {stage['rows']} rows, {stage['steps']} steps, "
                     f"{(stage.get('seconds') or 0):.0f} s, {(stage.get('tokens_per_second') or 0):.1f} tokens/s, "
                     f"loss: {curve}")
    lines += ["", "| step | wall s | peak RSS GB | exit |", "|---|---|---|---|"]
    for step in report.get("steps", []):
        if step.get("skipped"):
            lines.append(f"| {step['name']} | skipped | | |")
        else:
            lines.append(f"| {step['name']} | {step['seconds']:.0f} | {step['peak_rss_bytes'] / 2**30:.2f} | "
                         f"{step['returncode']} |")
    lines.append(f"\nTotal {report['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


__all__ = ["ExperimentConfig", "Experiment", "render_markdown", "comparison_rows", "COLUMNS", "BACKENDS"]
