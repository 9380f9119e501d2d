"""Draft top-k: SpecAttn with a fixed number of keys per draft row instead of a nucleus.

Everything but the per-row rule is SpecAttn's (layer map, head aggregation, OR over the step's
draft rows, pooling to chunks), so comparing the two isolates top-p against top-k.
"""

from __future__ import annotations

from ..core.checks import positive_int
from .rows import TopK
from .specattn import DraftRowSelection


class DraftTopK(DraftRowSelection):
    """SpecAttn with the ``top_k`` highest draft weights per row instead of the nucleus: a step reads
    the chunks of at most ``gamma * top_k`` keys (the KV accounting reports what it read)."""

    name = "draft_topk"

    def __init__(self, top_k: int = 64):
        super().__init__(TopK(positive_int(top_k, "top_k", "64")))
        self.top_k = top_k

    def params(self) -> dict:
        return {"top_k": self.top_k}
