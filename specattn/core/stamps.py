"""Cheap stamps of input files: they change when a file's content does, without reading large files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

HASHED_BELOW = 1 << 20  # files up to 1 MiB are stamped by content, larger ones by size and modification time


def digest(parts: Iterable[str]) -> str:
    """Short hash of a sequence of strings."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() + b"\0")
    return hasher.hexdigest()[:16]


def file_stamp(path: Path) -> str:
    """Path, size and content hash (small files) or modification time (large ones) of one file."""
    stat = path.stat()
    if stat.st_size <= HASHED_BELOW:
        return f"{path.resolve()}:{stat.st_size}:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def folder_stamp(folder: Path) -> str:
    """Stamp of the files directly in ``folder`` (a saved model: config, weights, tokenizer)."""
    return digest(file_stamp(path) for path in sorted(folder.iterdir()) if path.is_file())
