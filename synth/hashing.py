"""Content hashes: the one sha256 of a file, and of a directory as the sorted (relative path, file hash) pairs."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def path_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes; for a directory, of its sorted (relative path, file hash) pairs."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode() + b"\0" + file_sha256(child).encode() + b"\n")
        return digest.hexdigest()
    return file_sha256(path)


__all__ = ["file_sha256", "path_sha256"]
