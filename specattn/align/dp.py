"""Monotonic draft-to-verifier layer alignment by dynamic programming."""

from __future__ import annotations

import numpy as np

from ..core.errors import SpecAttnError


def monotonic_alignment(similarity, max_draft_layers: int | None = None, dense_layers: int = 0) -> list[int]:
    """Map each verifier layer to a draft layer, non-decreasing, maximising the summed similarity.

    Args:
        similarity: ``(n_draft, n_verifier)`` array; ``similarity[i, j]`` scores serving verifier
            layer ``j`` with draft layer ``i`` (higher is better). One draft layer may serve several
            verifier layers; the map never goes back to a shallower draft layer.
        max_draft_layers: at most this many distinct draft layers serve verifier layers ``dense_layers..``
            (the layers that select from draft rows; the decoder recomputes each distinct draft layer's rows
            from its keys every step, so this bounds that read); None: no bound.
        dense_layers: the first verifier layers, attended densely: their entries are not counted.
    Returns:
        ``f`` with ``f[j]`` the draft layer of verifier layer ``j``; among optimal maps, the
        lexicographically smallest. O(n_draft * n_verifier) time unbounded, O(n_draft^2 * n_verifier *
        max_draft_layers) bounded.
    """
    scores = np.asarray(similarity, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise SpecAttnError(f"similarity must be a non-empty (n_draft, n_verifier) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise SpecAttnError("similarity has NaN or infinite entries: check the metric's smoothing")
    n_draft, n_verifier = scores.shape
    if max_draft_layers is not None:
        if isinstance(max_draft_layers, bool) or not isinstance(max_draft_layers, (int, np.integer)) \
                or max_draft_layers < 1:
            raise SpecAttnError(f"align.max_draft_layers={max_draft_layers!r} must be a whole number >= 1 "
                                "(or null: no bound)")
        if not 0 <= dense_layers <= n_verifier:
            raise SpecAttnError(f"dense_layers={dense_layers} must be in [0, {n_verifier}] (the verifier's layers)")
        if max_draft_layers < min(n_draft, n_verifier - dense_layers):
            return _bounded(scores, int(max_draft_layers), dense_layers)
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


def _bounded(scores: np.ndarray, budget: int, dense_layers: int) -> list[int]:
    """:func:`monotonic_alignment` with at most ``budget`` distinct draft layers over the columns ``dense_layers..``:
    a new one is counted at column ``dense_layers`` and wherever the map moves to a deeper layer after it."""
    n_draft, n_verifier = scores.shape

    def cost(j: int, stay: bool) -> int:  # budget spent by column j >= 1 (staying on the previous column's layer?)
        return int(j == dense_layers or (j > dense_layers and not stay))

    # best[j, i, r]: the best total of columns j.. with f[j] = i and at most r new layers counted after column j
    best = np.full((n_verifier, n_draft, budget + 1), -np.inf)
    best[-1] = scores[:, -1:]
    for j in range(n_verifier - 2, -1, -1):
        nxt = best[j + 1]
        for i in range(n_draft):
            stay = nxt[i] if cost(j + 1, True) == 0 else _spend(nxt[i])
            deeper = nxt[i + 1:].max(axis=0, initial=-np.inf) if i + 1 < n_draft else np.full(budget + 1, -np.inf)
            move = deeper if cost(j + 1, False) == 0 else _spend(deeper)
            best[j, i] = scores[i, j] + np.maximum(stay, move)
    left = budget - int(dense_layers == 0)
    mapping = [int(np.flatnonzero(best[0, :, left] == best[0, :, left].max())[0])]
    for j in range(1, n_verifier):
        prev = mapping[-1]
        spent = [cost(j, i == prev) for i in range(n_draft)]
        values = np.array([best[j, i, left - spent[i]] if i >= prev and left >= spent[i] else -np.inf
                           for i in range(n_draft)])
        choice = int(np.flatnonzero(values == values.max())[0])
        left -= spent[choice]
        mapping.append(choice)
    return mapping


def _spend(values: np.ndarray) -> np.ndarray:
    """``values`` indexed by the budget left after one more layer is counted: ``out[r] = values[r - 1]``."""
    return np.concatenate(([-np.inf], values[:-1]))
