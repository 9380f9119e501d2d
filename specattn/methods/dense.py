"""Dense attention: every layer reads the whole KV cache (the reference every table compares to)."""

from __future__ import annotations

from .base import LayerView, SelectionMethod


class Dense(SelectionMethod):
    name = "dense"

    def select(self, view: LayerView) -> None:
        return None
