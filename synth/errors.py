"""One base for every error ds-synth shows a user.

A `SynthError` message is one line saying what went wrong and where (a file, an option, a row); commands print it
as `error: <message>` and exit with code 2, without a traceback. Each part of the engine raises its own subclass
(`ConfigError`, `ChecklistError`, `SourceError` …) so callers can catch one part's errors or all of them.
"""

from __future__ import annotations


class SynthError(Exception):
    """Base of every user-facing ds-synth error."""


class ConfigError(SynthError, ValueError):
    """A config file or option is invalid; the message says which option and why."""


__all__ = ["SynthError", "ConfigError"]
