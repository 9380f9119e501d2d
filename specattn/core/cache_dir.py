"""Where specattn keeps what it builds once: converted models, layer maps, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path

from .atomic_files import write_probe
from .errors import SpecAttnError


def cache_root() -> Path:
    """``$SPECATTN_CACHE`` or ``~/.cache/specattn``."""
    return Path(os.environ.get("SPECATTN_CACHE", Path.home() / ".cache" / "specattn"))


def check_cache_writable(why: str) -> None:
    """Refuse a cache that cannot be written (``why``: what will be written there, for the message): a
    file where the folder should be, or a folder that is read-only, not permitted or full."""
    root = cache_root()
    named = f"SPECATTN_CACHE={root}" if "SPECATTN_CACHE" in os.environ else f"the cache folder {root}"
    existing = next(folder for folder in (root, *root.parents) if folder.exists())
    if not existing.is_dir():
        problem = "is a file, not a folder" if existing == root else f"cannot be created: {existing} is a file"
        raise SpecAttnError(f"{named} {problem} ({why}): set SPECATTN_CACHE=<a writable folder>")
    try:
        write_probe(existing)
    except OSError as error:
        raise SpecAttnError(f"{named} is not writable ({error.strerror or error}; {why}): set "
                            "SPECATTN_CACHE=<a writable folder>, or free space there") from None
