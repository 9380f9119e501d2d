"""Where specattn keeps what it builds once: converted models, layer maps, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SPECATTN_CACHE`` or ``~/.cache/specattn``."""
    return Path(os.environ.get("SPECATTN_CACHE", Path.home() / ".cache" / "specattn"))
