"""What a long run shows while it works: plain log lines, and a live done/accepted/rejected/tokens/cost/ETA line."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, TextIO


class RunLog:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class RunProgress:
    """done/accepted/rejected, tokens, cost, ETA: a rich live line on a TTY, plain log lines otherwise."""

    def __init__(self, total: int, out: TextIO, *, live: bool | None, unit: str = "episode") -> None:
        self.total = total
        self.unit = unit
        self.out = out
        self.live_enabled = out.isatty() if live is None else live
        self.counts: Counter = Counter()
        self.tokens = 0
        self.cost = 0.0
        self.started = time.monotonic()
        self._live = None

    def start(self) -> None:
        self.started = time.monotonic()
        if self.live_enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.out), refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._print(f"running {self.total} {self.unit}(s)")

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None
        else:
            self._print(self._status())

    def skip(self) -> None:
        self.counts["skipped"] += 1
        self._refresh()

    def error(self, episode_id: str, exc: BaseException) -> None:
        self.counts["error"] += 1
        message = " ".join(str(exc).split())[:300]
        self._print(f"{self.unit} {episode_id} failed ({type(exc).__name__}: {message}); --resume retries it")
        self._refresh()

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        if kind != "done":
            return
        self.counts[payload.get("outcome", "?")] += 1
        usage = payload.get("usage") or {}
        self.tokens += int(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        self.cost += float(usage.get("cost_usd", 0.0))
        if self._live is None:
            self._print(f"{self.unit} {payload.get('episode')}: {payload.get('outcome')} — {self._status()}")
        self._refresh()

    def _done(self) -> int:
        return sum(self.counts[k] for k in ("accepted", "rejected", "duplicate", "error", "skipped"))

    def _status(self) -> str:
        done = self._done()
        elapsed = time.monotonic() - self.started
        worked = done - self.counts["skipped"]
        eta = (elapsed / worked * (self.total - done)) if worked else None
        eta_text = f"{eta:.0f}s" if eta is not None else "?"
        return (f"{done}/{self.total} done, {self.counts['accepted']} accepted, {self.counts['rejected']} rejected"
                f"{', %d duplicate' % self.counts['duplicate'] if self.counts['duplicate'] else ''}"
                f"{', %d error' % self.counts['error'] if self.counts['error'] else ''}"
                f" | {self.tokens} tokens, ${self.cost:.4f} | {elapsed:.0f}s elapsed, ETA {eta_text}")

    def _render(self):
        from rich.text import Text

        return Text(self._status())

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)
