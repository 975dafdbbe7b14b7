"""The errors `synth train` shows a user: one line each, all `synth.errors.SynthError`s.

    TrainError        the base: a model that cannot be set up, not enough memory, a missing extra
    ConfigError       a bad training config (the codebase's one ConfigError, from synth.errors)
    train.data.DataError, train.masking.MaskingError, train.eval.EvalDataError derive from TrainError too.
"""

from __future__ import annotations

import importlib.util

from synth.errors import ConfigError, SynthError

TRAIN_INSTALL = "pip install 'ds-synth[train]'"
TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


class TrainError(SynthError, ValueError):
    """A training or evaluation step that cannot run; the message says what and how to fix it."""


def require_train_extra(*extra_modules: str) -> None:
    """TrainError naming the pip command when the `train` extra (or one of `extra_modules`) is not installed."""
    missing = [m for m in (*TRAIN_MODULES, *extra_modules) if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainError(f"training needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                         f"installed; install the train extra: {TRAIN_INSTALL}")


__all__ = ["TrainError", "ConfigError", "SynthError", "require_train_extra", "TRAIN_INSTALL"]
