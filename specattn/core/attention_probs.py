"""Causal attention probabilities for a block of query rows: the one reference computation that
the draft capture, the layer alignment and the oracle share."""

from __future__ import annotations

import torch


def causal_keys(rows: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``(R, n_keys)`` bool: key ``k`` is visible to the row at position ``r`` iff ``k <= r``."""
    return torch.arange(n_keys, device=rows.device)[None, :] <= rows[:, None]


def causal_probs(queries: torch.Tensor, keys: torch.Tensor, scaling: float, rows: torch.Tensor,
                 visible: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of query rows over their causal keys (and, with ``visible``, only those), in float32.

    Args:
        queries: ``(Hq, R, D)`` the rows' queries; ``rows`` ``(R,)`` their positions.
        keys: ``(Hkv, K, D)`` keys of positions ``[0, K)``; query head ``h`` uses KV head
            ``h // (Hq / Hkv)`` (grouped-query attention, no key copies).
        visible: optional ``(R, >= n)`` bool, the keys each row may see besides causality (a sparse read);
            each row must see at least one causal key.
    Returns:
        ``(Hq, R, n)`` probabilities over keys ``[0, n)``, ``n = max(rows) + 1``.
    """
    n_heads, n_rows, dim = queries.shape
    n_kv, n_keys = keys.shape[0], int(rows.max()) + 1
    grouped = queries.float().reshape(n_kv, -1, dim)  # (Hkv, group * R, D)
    scores = torch.bmm(grouped, keys[:, :n_keys].float().transpose(1, 2)).reshape(n_heads, n_rows, n_keys)
    allowed = causal_keys(rows, n_keys) if visible is None else causal_keys(rows, n_keys) & visible[:, :n_keys]
    scores.mul_(scaling).masked_fill_(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def weighted_values(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(Hq, R, n)`` probabilities times ``(Hkv, K >= n, D)`` values -> ``(Hq, R, D)`` (GQA, no copies)."""
    n_heads, n_rows, n_keys = probs.shape
    n_kv = values.shape[0]
    out = torch.bmm(probs.to(values.dtype).reshape(n_kv, -1, n_keys), values[:, :n_keys])
    return out.reshape(n_heads, n_rows, -1)
