"""The `synth` commands, one module each. A command reads its options, calls the engine, prints the outcome and
returns an exit code (0 done, 1 partly failed, 2 bad input, 130 interrupted); engine modules never print.
`synth/cli.py` mounts them on the Typer app."""

from __future__ import annotations

import sys
from typing import TextIO


def print_error(message: object, out: TextIO | None = None) -> None:
    """The one way a command reports a user error: `error: <one line>` on stderr."""
    print(f"error: {' '.join(str(message).split()) or type(message).__name__}", file=out or sys.stderr)
