"""The session-mode worker: one long-lived interpreter that runs cells in a shared namespace (like a notebook).

Protocol (one JSON object per line): the host writes {"code", "token", "cell", "cpu_seconds"} on the control-in fd;
the worker runs the cell with its stdout/stderr going to fds 1/2 (pipes the host reads), then writes the end marker
`\\0\\1ds-synth:<token>\\0\\1` on fds 1 and 2 and answers {"token", "error"} on the control-out fd.
"""

from __future__ import annotations

import builtins
import json
import linecache
import os
import resource
import signal
import sys
import traceback

from _figures import save_open_figures


def _format_error(exc: BaseException, filename: str) -> str:
    tb = exc.__traceback__
    # Drop the worker's own frames so the traceback starts at the cell, as a standalone script's would.
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n")


def _give_cpu_budget(seconds: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _run_cell(code: str, cell: int, namespace: dict) -> str | None:
    filename = f"<cell {cell}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"SystemExit: {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - every failure of model code is reported, never raised
        return _format_error(exc, filename)
    return None


def main() -> None:
    in_fd = int(os.environ.pop("DS_SYNTH_CTL_IN"))
    if in_fd == 0:  # docker backend: requests arrive on stdin, which cells must not be able to read
        in_fd = os.dup(0)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    ctl_in = os.fdopen(in_fd, "rb", buffering=0)
    out_spec = os.environ.pop("DS_SYNTH_CTL_OUT")
    # An fd number (local backend), or a file the host polls (docker backend: an exec has only fds 0-2).
    ctl_out = os.fdopen(int(out_spec), "wb", buffering=0) if out_spec.isdigit() else open(out_spec, "ab", buffering=0)
    # Past RLIMIT_FSIZE a write should fail with an error the cell sees, not kill the whole session.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.path.insert(0, os.getcwd())
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    while True:
        line = ctl_in.readline()
        if not line:
            return
        request = json.loads(line)
        _give_cpu_budget(int(request["cpu_seconds"]))
        error = _run_cell(request["code"], int(request["cell"]), namespace)
        try:
            save_open_figures()
        except BaseException as exc:  # noqa: BLE001
            error = error or f"saving figures failed: {exc!r}"
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the cell may have closed or replaced the stream
                pass
        marker = b"\0\1ds-synth:" + request["token"].encode() + b"\0\1"
        os.write(1, marker)
        os.write(2, marker)
        ctl_out.write((json.dumps({"token": request["token"], "error": error}) + "\n").encode())


if __name__ == "__main__":
    main()
