"""The docker backend: one container per session (no network, memory/CPU/pids limits, read-only root, tmpfs /tmp),
the workspace bind-mounted at /workspace, cells run with `exec_run`. Needs the `docker` extra and an engine.

Image: built from synth/sandbox/Dockerfile (`DockerSandbox(build=True)` builds it when missing).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from synth.sandbox.base import ExecResult, ExecutionMode, Limits, SandboxError
from synth.sandbox.cells import CellSession, CellStream, OutputCapture, copy_sources, split_traceback

DEFAULT_IMAGE = "ds-synth-sandbox:latest"
DOCKERFILE_DIR = Path(__file__).resolve().parent
_CONTAINER_UID = 10001  # the `sandbox` user of the Dockerfile
_TIMEOUT_EXIT = 137  # `timeout -s KILL` -> killed by SIGKILL


def _client(client=None):
    if client is not None:
        return client
    try:
        import docker
    except ImportError as exc:
        raise ImportError("the docker sandbox needs the docker SDK: pip install 'ds-synth[docker]'") from exc
    try:
        found = docker.from_env()
        found.ping()
    except Exception as exc:  # docker.errors.DockerException and socket errors alike
        raise SandboxError(f"no Docker engine answers ({exc.__class__.__name__}: {exc})") from exc
    return found


def _read_capped(path: Path, limit: int) -> str:
    """A file's text, head and tail only past `limit` (the file itself may be huge)."""
    if not path.exists():
        return ""
    capture = OutputCapture(limit)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= 2 * limit:
            capture.feed(fh.read())
        else:
            capture.feed(fh.read(limit))
            capture.total += size - 2 * limit  # the unread middle still counts as dropped
            fh.seek(size - limit)
            capture.feed(fh.read())
    return capture.text(limit)


class DockerSession(CellSession):
    """One episode's workspace bound into its own container; cells run through `docker exec`."""

    def __init__(self, client, image: str, workspace: Path, mode: ExecutionMode, limits: Limits, owns: bool):
        if mode not in ("script", "session"):
            raise ValueError(f"sandbox mode must be 'script' or 'session', got {mode!r}")
        super().__init__()
        from docker.types import Ulimit

        self.workspace = workspace
        self.mode: ExecutionMode = mode
        self.limits = limits
        self._owns = owns
        self._client = client
        self._cells_dir = Path(tempfile.mkdtemp(prefix="ds-synth-cells-"))
        self._worker = None  # (socket, streams, reply path, demux thread)
        self._state_lost_note: str | None = None
        for path in (self.workspace, self._cells_dir):
            os.chmod(path, 0o777)  # the container's unprivileged user writes here
        for root, dirs, files in os.walk(self.workspace):
            for name in [*dirs, *files]:
                os.chmod(os.path.join(root, name), 0o777 if name in dirs else 0o666)
        self._container = client.containers.run(
            image,
            command=["sleep", "infinity"],
            detach=True,
            network_mode="none",
            mem_limit=f"{limits.memory_mb}m",
            nano_cpus=1_000_000_000,
            pids_limit=limits.max_processes,
            read_only=True,
            tmpfs={"/tmp": "rw,size=512m"},
            volumes={
                str(workspace): {"bind": "/workspace", "mode": "rw"},
                str(self._cells_dir): {"bind": "/cells", "mode": "rw"},
            },
            working_dir="/workspace",
            user=str(_CONTAINER_UID),
            ulimits=[Ulimit(name="fsize", soft=limits.file_size_mb << 20, hard=limits.file_size_mb << 20)],
            labels={"ds-synth.sandbox": "1"},
        )

    def _run_script(self, code: str, timeout: float) -> ExecResult:
        n = self._cells
        (self._cells_dir / f"cell_{n}.py").write_text(code, encoding="utf-8")
        command = (
            f"timeout -s KILL {timeout:g} sh -c 'ulimit -t {self.limits.cpu_seconds}; "
            f"exec python /cells/cell_{n}.py' >/cells/{n}.out 2>/cells/{n}.err"
        )
        exit_code, _ = self._container.exec_run(
            ["sh", "-c", command], workdir="/workspace", environment={"DS_SYNTH_SAVE_FIGURES_AT_EXIT": "1"}
        )
        limit = self.limits.output_limit_chars
        stdout = _read_capped(self._cells_dir / f"{n}.out", limit)
        stderr = _read_capped(self._cells_dir / f"{n}.err", limit)
        for name in (f"cell_{n}.py", f"{n}.out", f"{n}.err"):
            (self._cells_dir / name).unlink(missing_ok=True)
        # Nothing a script cell started may outlive it (as on the local backend). kill -1 from inside reaches every
        # process of the container's user except the caller and the container's init, which ignores it.
        self._container.exec_run(["sh", "-c", "kill -KILL -1 2>/dev/null; true"])
        timed_out = exit_code == _TIMEOUT_EXIT
        error = None
        if timed_out:
            error = f"TimeoutError: cell exceeded {timeout:g} s wall clock and was killed"
        elif exit_code != 0:
            stderr, error = split_traceback(stderr)
            error = error or f"process exited with code {exit_code}"
        return ExecResult(stdout=stdout, stderr=stderr, error=error, timed_out=timed_out)

    # --- session mode: the same worker as the local backend, requests on the exec's stdin --------------------
    def _start_worker(self) -> None:
        reply = f"/cells/ctl-{secrets.token_hex(4)}.jsonl"
        exec_id = self._client.api.exec_create(
            self._container.id,
            ["python", "/opt/ds-synth-runtime/_worker.py"],
            stdin=True,
            workdir="/workspace",
            environment={"DS_SYNTH_CTL_IN": "0", "DS_SYNTH_CTL_OUT": reply},
        )["Id"]
        sock = self._client.api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        pipes = [os.pipe(), os.pipe()]
        streams = [CellStream(r, self.limits.output_limit_chars, lambda: None) for r, _ in pipes]
        writers = [w for _, w in pipes]
        thread = threading.Thread(target=self._demux, args=(raw, writers), daemon=True)
        thread.start()
        self._worker = (raw, streams, self._cells_dir / Path(reply).name, exec_id)
        self._reply_offset = 0

    @staticmethod
    def _demux(raw: socket.socket, writers: list[int]) -> None:
        """Docker multiplexes stdout/stderr frames (8-byte header) on one socket; split them into two pipes."""

        def read_exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = raw.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        try:
            while True:
                kind, size = struct.unpack(">BxxxL", read_exact(8))
                payload = read_exact(size)
                os.write(writers[1] if kind == 2 else writers[0], payload)
        except (EOFError, OSError):
            pass
        finally:
            for fd in writers:
                os.close(fd)

    def _read_reply(self, path: Path, deadline: float) -> dict | None:
        while time.monotonic() < deadline:
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(self._reply_offset)
                    line = fh.readline()
                if line.endswith(b"\n"):
                    self._reply_offset += len(line)
                    return json.loads(line)
            time.sleep(0.005)
        return None

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        raw, streams, _, exec_id = self._worker
        pid = self._client.api.exec_inspect(exec_id).get("Pid")
        if pid:
            # The worker runs as the container user; kill its whole tree from inside the container.
            self._container.exec_run(["sh", "-c", f"kill -KILL -- -$(ps -o pgid= {pid} 2>/dev/null) {pid} 2>/dev/null"])
        try:
            raw.close()
        except OSError:
            pass
        self._worker = None

    def _run_in_worker(self, code: str, timeout: float) -> ExecResult:
        note, self._state_lost_note = self._state_lost_note, None
        if self._worker is None:
            self._start_worker()
        raw, (out, err), reply_path, _ = self._worker
        token = secrets.token_hex(8)
        marker = b"\0\1ds-synth:" + token.encode() + b"\0\1"
        out.expect(marker)
        err.expect(marker)
        request = {"code": code, "token": token, "cell": self._cells, "cpu_seconds": self.limits.cpu_seconds}
        deadline = time.monotonic() + timeout
        raw.sendall((json.dumps(request) + "\n").encode())
        reply = self._read_reply(reply_path, deadline)
        finished = reply is not None and out.wait(deadline) and err.wait(deadline)
        error = reply.get("error") if reply else None
        timed_out = not finished
        if not finished:
            self._stop_worker()
            # Restarting the container is the only sure way to end every process the cell started.
            self._container.restart(timeout=0)
            error = (
                f"TimeoutError: cell exceeded {timeout:g} s wall clock and was killed\n"
                "[the session was restarted and its state was lost: variables and imports of earlier cells are gone]"
            )
            self._state_lost_note = "[note: the previous cell killed the session; earlier state is gone]"
        stdout, _ = out.take()
        stderr, _ = err.take()
        if note:
            stdout = f"{note}\n{stdout}" if stdout else note
        return ExecResult(stdout=stdout, stderr=stderr, error=error, timed_out=timed_out)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._worker = None
            try:
                self._container.remove(force=True)
            finally:
                shutil.rmtree(self._cells_dir, ignore_errors=True)
                if self._owns:
                    shutil.rmtree(self.workspace, ignore_errors=True)

    def __enter__(self) -> "DockerSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DockerSandbox:
    """`Sandbox` in containers. Every protection holds: the container has its own filesystem (read-only root, the
    workspace bind-mounted), no network, its own pid namespace and an unprivileged uid, memory/pids/fsize limits,
    `timeout -s KILL` per cell, only the image's environment, and the container runtime (never synth) as the cells'
    parent."""

    name = "docker"
    protections = frozenset({
        "private_filesystem", "no_network", "pid_namespace", "separate_uid", "rlimits", "process_limit",
        "wall_timeout", "scrubbed_env", "supervisor",
    })  # fmt: skip

    def __init__(self, image: str = DEFAULT_IMAGE, client=None, build: bool = False):
        self.client = _client(client)
        self.image = image
        try:
            self.client.images.get(image)
        except Exception as exc:
            if not build:
                raise SandboxError(
                    f"docker image {image!r} not found; build it with `docker build -t {image} -f "
                    f"{DOCKERFILE_DIR / 'Dockerfile'} {DOCKERFILE_DIR}` or pass build=True"
                ) from exc
            self.client.images.build(path=str(DOCKERFILE_DIR), dockerfile="Dockerfile", tag=image, rm=True)

    def open(
        self,
        workspace_files: Sequence[Path] = (),
        *,
        mode: ExecutionMode = "script",
        limits: Limits | None = None,
        workspace: Path | None = None,
    ) -> DockerSession:
        owns = workspace is None
        root = Path(tempfile.mkdtemp(prefix="ds-synth-ws-")) if owns else Path(workspace).resolve()
        root.mkdir(parents=True, exist_ok=True)
        try:
            copy_sources(list(workspace_files), root)
            return DockerSession(self.client, self.image, root, mode, limits or Limits(), owns)
        except BaseException:
            if owns:
                shutil.rmtree(root, ignore_errors=True)
            raise


__all__ = ["DEFAULT_IMAGE", "DockerSandbox", "DockerSession"]
