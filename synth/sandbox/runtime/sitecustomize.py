"""Loaded by every sandboxed interpreter (PYTHONPATH points here): quiet plt.show(), save figures at exit."""

import os
import warnings

# Agg cannot show windows; plt.show() returns at once and would only print this warning.
warnings.filterwarnings("ignore", message=".*non-interactive, and thus cannot be shown")

if os.environ.get("DS_SYNTH_SAVE_FIGURES_AT_EXIT") == "1":
    import atexit
    import sys

    def _save_at_exit() -> None:
        from _figures import save_open_figures

        save_open_figures()

    class _AfterPyplot:  # a meta-path finder (importlib.abc is not imported: it costs every cell startup time)
        """pyplot closes every figure in its own atexit hook; ours must be registered after it to run before it."""

        def find_spec(self, name, path=None, target=None):
            if name != "matplotlib.pyplot":
                return None
            sys.meta_path.remove(self)
            spec = next((s for f in sys.meta_path if (s := f.find_spec(name, path, target)) is not None), None)
            if spec is None or spec.loader is None:
                return spec
            original = spec.loader.exec_module

            def exec_module(module):
                original(module)
                atexit.register(_save_at_exit)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _AfterPyplot())
