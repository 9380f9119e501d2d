"""Draft top-k: SpecAttn with a fixed number of keys per draft row instead of a nucleus.

Everything but the per-row rule is SpecAttn's (layer map, head aggregation, OR over the step's draft
rows, pooling to chunks), so comparing the two isolates top-p against top-k. A step reads the chunks
of at most ``gamma * top_k`` keys (the KV accounting reports what it read).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import Method
from .draft_rows import DraftAttention
from .selectors import TopKeys


@dataclass(frozen=True)
class DraftTopK(Method):
    """The ``top_k`` highest draft weights per row, OR-ed over the step's rows."""

    name = "draft_topk"
    top_k: int = 64

    def scorer(self) -> DraftAttention:
        return DraftAttention()

    def selector(self) -> TopKeys:
        return TopKeys(self.top_k)

    def keep_everything(self) -> "DraftTopK":
        return dataclasses.replace(self, top_k=10**9)

    def sparse_example(self) -> "DraftTopK":
        return dataclasses.replace(self, top_k=8)
