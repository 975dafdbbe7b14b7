"""Uploaded and generated files, stored on disk as OpenAI-style file objects.

Layout: `<root>/<file id>/meta.json` + `<root>/<file id>/<filename>`. Metadata is re-read at start-up, so a server
restarted on the same --workspace-root still knows its files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from synth.errors import SynthError


class FileTooLarge(SynthError):
    """The upload went past the size limit."""


class FileNotFound(SynthError, KeyError):
    """No file has this id."""

    def __str__(self) -> str:
        return f"file {self.args[0]!r} not found"


@dataclass
class FileObject:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str  # "assistants" (uploaded) | "assistants_output" (written by the agent)
    object: str = "file"
    status: str = "processed"
    thread_id: str | None = None  # the thread whose agent wrote it (generated files only)

    def to_dict(self) -> dict:
        return asdict(self)


def safe_filename(name: str | None) -> str:
    """The last path component of an uploaded name; ValueError when nothing usable is left."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or "\x00" in base or base.startswith("."):
        raise ValueError(f"unusable file name {name!r}: give a plain name like data.csv")
    return base[:200]


class FileStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, FileObject] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        for meta in self.root.glob("*/meta.json"):
            try:
                obj = FileObject(**json.loads(meta.read_text()))
            except (ValueError, TypeError):
                continue  # a half-written entry from a crash: ignore it
            if (meta.parent / obj.filename).is_file():
                self._files[obj.id] = obj

    def add_stream(self, stream: BinaryIO, filename: str, *, purpose: str, max_bytes: int | None = None,
                   thread_id: str | None = None) -> FileObject:
        """Store `stream` under a new id, counting bytes as it goes; FileTooLarge past `max_bytes`."""
        filename = safe_filename(filename)
        file_id = "file-" + secrets.token_hex(12)
        folder = self.root / file_id
        folder.mkdir()
        size = 0
        try:
            with open(folder / filename, "wb") as out:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise FileTooLarge(f"file {filename!r} is larger than {max_bytes} bytes")
                    out.write(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self._register(FileObject(file_id, size, int(time.time()), filename, purpose, thread_id=thread_id))

    def add_path(self, path: Path, *, filename: str | None = None, purpose: str = "assistants_output",
                 thread_id: str | None = None) -> FileObject:
        with open(path, "rb") as stream:
            return self.add_stream(stream, filename or Path(path).name, purpose=purpose, thread_id=thread_id)

    def add_bytes(self, data: bytes, filename: str, *, purpose: str, thread_id: str | None = None) -> FileObject:
        import io

        return self.add_stream(io.BytesIO(data), filename, purpose=purpose, thread_id=thread_id)

    def _register(self, obj: FileObject) -> FileObject:
        folder = self.root / obj.id
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(obj.to_dict()))
        os.replace(tmp, folder / "meta.json")
        with self._lock:
            self._files[obj.id] = obj
        return obj

    def get(self, file_id: str) -> FileObject:
        with self._lock:
            obj = self._files.get(file_id)
        if obj is None:
            raise FileNotFound(file_id)
        return obj

    def path(self, file_id: str) -> Path:
        obj = self.get(file_id)
        return self.root / obj.id / obj.filename

    def list(self, purpose: str | None = None) -> list[FileObject]:
        with self._lock:
            objs = list(self._files.values())
        objs = [o for o in objs if purpose is None or o.purpose == purpose]
        return sorted(objs, key=lambda o: (o.created_at, o.id))

    def delete(self, file_id: str) -> FileObject:
        with self._lock:
            obj = self._files.pop(file_id, None)
        if obj is None:
            raise FileNotFound(file_id)
        shutil.rmtree(self.root / file_id, ignore_errors=True)
        return obj

    def delete_thread_outputs(self, thread_id: str) -> int:
        """Remove the files a thread's agent wrote (they go with the thread)."""
        doomed = [o.id for o in self.list() if o.thread_id == thread_id]
        for file_id in doomed:
            try:
                self.delete(file_id)
            except FileNotFound:
                pass
        return len(doomed)
