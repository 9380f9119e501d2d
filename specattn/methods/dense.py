"""Dense attention: every layer reads the whole KV cache (the reference every table compares to)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method


@dataclass(frozen=True)
class Dense(Method):
    """Reads everything: no scorer, no selector."""

    name = "dense"

    def scorer(self) -> None:
        return None

    def selector(self) -> None:
        return None

    def keep_everything(self) -> "Dense":
        return self
