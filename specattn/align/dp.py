"""Monotonic draft-to-verifier layer alignment by dynamic programming."""

from __future__ import annotations

import numpy as np

from ..core.errors import SpecAttnError


def monotonic_alignment(similarity) -> list[int]:
    """Map each verifier layer to a draft layer, non-decreasing, maximising the summed similarity.

    Args:
        similarity: ``(n_draft, n_verifier)`` array; ``similarity[i, j]`` scores serving verifier
            layer ``j`` with draft layer ``i`` (higher is better). One draft layer may serve several
            verifier layers; the map never goes back to a shallower draft layer.
    Returns:
        ``f`` with ``f[j]`` the draft layer of verifier layer ``j``; among optimal maps, the
        lexicographically smallest. O(n_draft * n_verifier) time.
    """
    scores = np.asarray(similarity, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise SpecAttnError(f"similarity must be a non-empty (n_draft, n_verifier) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise SpecAttnError("similarity has NaN or infinite entries: check the metric's smoothing")
    n_draft, n_verifier = scores.shape
    # best[j, i]: the best total of verifier layers j.. when layer j uses draft layer i
    best = np.empty_like(scores.T)
    best[-1] = scores[:, -1]
    for j in range(n_verifier - 2, -1, -1):
        suffix_max = np.maximum.accumulate(best[j + 1][::-1])[::-1]  # max over draft layers >= i
        best[j] = scores[:, j] + suffix_max
    mapping, low = [], 0
    for j in range(n_verifier):
        # the smallest draft layer >= the previous one that still attains the optimum
        candidates = best[j, low:]
        choice = low + int(np.flatnonzero(candidates == candidates.max())[0])
        mapping.append(choice)
        low = choice
    return mapping
