"""Head aggregation: reduce the draft's per-head attention to the rows a selection uses.

The draft and verifier may have different head layouts (TinyLlama: 32 query / 4 KV heads;
Llama-2-7B: 32 / 32), so the draft's attention is aggregated before selection:

* ``mean``: mean over all query heads -> one row shared by every verifier KV head;
* ``max``: element-wise max over query heads -> one row (mass > 1; the nucleus uses the row's mass);
* ``kv_group``: mean over the query heads of each draft KV group, then mapped onto the verifier's
  KV heads (repeated when the verifier has more, averaged when it has fewer) -> one row per
  verifier KV head.
"""

from __future__ import annotations

import torch

from .errors import SpecAttnError

HEAD_AGGREGATIONS = ("mean", "max", "kv_group")


def check_head_layout(mode: str, draft_kv_heads: int, verifier_kv_heads: int) -> None:
    """Raise before any work if ``mode`` cannot map the draft's KV heads onto the verifier's."""
    if mode not in HEAD_AGGREGATIONS:
        raise SpecAttnError(f"head_agg={mode!r} is unknown: allowed are {', '.join(HEAD_AGGREGATIONS)}")
    if mode == "kv_group" and max(draft_kv_heads, verifier_kv_heads) % min(draft_kv_heads, verifier_kv_heads):
        raise SpecAttnError(
            f"head_agg=kv_group needs one of the draft ({draft_kv_heads}) and verifier ({verifier_kv_heads}) "
            "KV head counts to divide the other: use head_agg=mean"
        )


def aggregate_heads(probs: torch.Tensor, mode: str, draft_kv_heads: int, verifier_kv_heads: int) -> torch.Tensor:
    """``(Hq, R, K)`` draft probabilities -> ``(1, R, K)`` or ``(verifier_kv_heads, R, K)``."""
    if mode == "mean":
        return probs.mean(dim=0, keepdim=True)
    if mode == "max":
        return probs.amax(dim=0, keepdim=True)
    groups = probs.reshape(draft_kv_heads, -1, *probs.shape[1:]).mean(dim=1)  # (Hkv_draft, R, K)
    if verifier_kv_heads >= draft_kv_heads:
        return groups.repeat_interleave(verifier_kv_heads // draft_kv_heads, dim=0)
    return groups.reshape(verifier_kv_heads, -1, *groups.shape[1:]).mean(dim=1)
