"""Draft top-k: SpecAttn with a fixed number of keys per draft row instead of a nucleus.

Everything but the per-row rule is SpecAttn's (layer map, head aggregation, OR over the step's
draft rows, pooling to chunks), so comparing the two isolates top-p against top-k. Each draft row
keeps its ``top_k`` highest-weight keys (the step's own tokens among them, as for the nucleus);
pooled to chunks and OR-ed over the step's rows, a step reads the chunks of at most
``gamma * top_k`` prefix keys (the KV accounting reports what it read).
"""

from __future__ import annotations

import torch

from ..errors import SpecAttnError
from .specattn import SpecAttn


class DraftTopK(SpecAttn):
    name = "draft_topk"

    def __init__(self, top_k: int = 64):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise SpecAttnError(f"top_k={top_k!r} must be a positive integer: keys kept per draft row (e.g. top_k=64)")
        self.top_k = top_k

    def params(self) -> dict:
        return {"top_k": self.top_k}

    def key_mask(self, attention: torch.Tensor) -> torch.Tensor:
        """``(H, R, K)`` bool: each row's ``top_k`` largest weights (all keys of shorter rows)."""
        k = min(self.top_k, attention.shape[-1])
        mask = torch.zeros(attention.shape, dtype=torch.bool, device=attention.device)
        return mask.scatter_(-1, attention.topk(k, dim=-1).indices, True)
