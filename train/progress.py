"""What a training run shows and records while it works, and how Ctrl-C stops it with a usable checkpoint.

- `TrainLog` (a transformers `TrainerCallback`): every logged step becomes one JSON line in OUT/train_log.jsonl
  (stage, step, loss, learning rate, tokens, tokens/s, elapsed, peak RSS) — the loss curve — and, when a stream is
  given, a progress line: `stage 1/2 reasoning  step 7/20 ▕████░░░░▏ loss 1.234  38 tok/s  ETA 12m03s`
  (rewritten in place on a terminal, one line per log otherwise).
- `GracefulStop`: while installed, the first Ctrl-C asks the trainer to stop after the current micro-batch (the
  stage's model is then saved as usual and the run reports `interrupted`); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

try:  # the callback base class; train needs transformers anyway, this keeps the module importable without it
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised only without the train extra
    TrainerCallback = object  # type: ignore[misc,assignment]


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class GracefulStop:
    """A SIGINT handler for the duration of a `with` block (main thread only; elsewhere it does nothing)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.requested = False
        self.out = out
        self._previous: Any = None
        self._installed = False

    def request(self) -> None:
        self.requested = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: abort now
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        if self.out is not None:
            print("\nCtrl-C: stopping after this micro-batch and saving the model (Ctrl-C again aborts without "
                  "saving)", file=self.out, flush=True)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False


class TrainLog(TrainerCallback):  # type: ignore[misc]
    """Loss curve to a JSONL file, a progress line to a stream, and the trainer stopped when `stop` asks."""

    def __init__(self, *, stage: str, stage_index: int, stages: int, log_path: Path | None = None,
                 out: TextIO | None = None, stop: GracefulStop | None = None) -> None:
        self.stage = stage
        self.stage_index = stage_index
        self.stages = stages
        self.log_path = log_path
        self.out = out
        self.stop = stop
        self.entries: list[dict[str, Any]] = []
        self.max_steps = 0
        self.started = time.monotonic()
        self._last_tokens = 0
        self._last_time = self.started
        self._tty = bool(out is not None and getattr(out, "isatty", lambda: False)())
        self.stopped_early = False

    # --- trainer events ---

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.max_steps = int(state.max_steps or 0)
        self.started = self._last_time = time.monotonic()
        self._render(step=0, loss=None, rate=None)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check_stop(control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check_stop(control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now = time.monotonic()
        tokens = int(logs.get("num_tokens") or 0)
        rate = (tokens - self._last_tokens) / (now - self._last_time) if tokens and now > self._last_time else None
        self._last_tokens, self._last_time = tokens or self._last_tokens, now
        entry = {"stage": self.stage, "step": int(state.global_step), "max_steps": self.max_steps,
                 "epoch": round(float(state.epoch or 0.0), 4), "loss": float(logs["loss"]),
                 "learning_rate": float(logs.get("learning_rate") or 0.0), "tokens": tokens,
                 "tokens_per_second": round(rate, 2) if rate else None,
                 "mean_token_accuracy": logs.get("mean_token_accuracy"),
                 "elapsed_s": round(now - self.started, 2), "peak_rss_bytes": peak_rss_bytes()}
        self.entries.append(entry)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        self._render(step=entry["step"], loss=entry["loss"], rate=rate)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.out is not None and self._tty:
            print(file=self.out, flush=True)

    # --- helpers ---

    def _check_stop(self, control: Any) -> None:
        if self.stop is not None and self.stop.requested:
            control.should_training_stop = True
            self.stopped_early = True

    def _render(self, *, step: int, loss: float | None, rate: float | None) -> None:
        if self.out is None:
            return
        total = self.max_steps or 1
        width = 20
        filled = int(width * min(step, total) / total)
        bar = "█" * filled + "░" * (width - filled)
        elapsed = time.monotonic() - self.started
        eta = elapsed / step * (total - step) if step else None
        parts = [f"stage {self.stage_index}/{self.stages} {self.stage}", f"step {step}/{total}", f"▕{bar}▏"]
        parts.append(f"loss {loss:.4f}" if loss is not None else "loss -")
        parts.append(f"{rate:.0f} tok/s" if rate else "- tok/s")
        parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA -")
        line = "  ".join(parts)
        if self._tty:
            print("\r" + line, end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)


def default_stream() -> TextIO:
    return sys.stderr


__all__ = ["TrainLog", "GracefulStop", "peak_rss_bytes", "format_duration"]
