"""Save open matplotlib figures as numbered files in the cwd (figure_1.png, figure_2.png, ... across a session)."""

from __future__ import annotations

import os
import re
import sys

_FIGURE_NAME = re.compile(r"^figure_(\d+)\.png$")


def _next_number() -> int:
    numbers = [int(m.group(1)) for name in os.listdir(".") if (m := _FIGURE_NAME.match(name))]
    return max(numbers, default=0) + 1


def save_open_figures() -> list[str]:
    """Write every open figure to a file, close them all, and print one `[figure saved: NAME]` line each."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:  # the cell never touched pyplot: nothing to save, and importing it would cost ~0.3 s
        return []
    saved = []
    for number in plt.get_fignums():
        name = f"figure_{_next_number()}.png"
        try:
            plt.figure(number).savefig(name, dpi=100, bbox_inches="tight")
        except Exception as exc:  # a broken figure must not hide the cell's own result
            print(f"[figure not saved: {exc}]", file=sys.stderr)
            continue
        saved.append(name)
    plt.close("all")
    for name in saved:
        print(f"[figure saved: {name}]")
    sys.stdout.flush()
    return saved
