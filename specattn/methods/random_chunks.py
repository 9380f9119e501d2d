"""Random chunks at a budget: the floor every selection method should beat (a sanity check).

Each (sparse layer, step) reads a uniformly random set of its prefix chunks filling the budget,
shared by all KV heads. The random scores are a hash of (sequence seed, layer, the step's first
row, chunk), the sequence seed drawn from the sequence's seeded generator: no table to hold, and a
step's selection depends only on where the step starts, not on how the evaluation or the decoder
walks through the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method
from .budget import Budget, Budgeted
from .context import ChunkScorer, LayerView
from .selectors import TopChunks

_MASK = 0xFFFFFFFF


def hashed_uniform(seed: int, layer: int, starts: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """``(S, n_chunks)`` float64 in [0, 1): a fixed pseudo-random number per (seed, layer, step start, chunk).

    ``starts``: ``(S,)`` the steps' first rows (< 2**31).
    """
    cells = ((starts[:, None].long() * 0x9E3779B1) & _MASK) ^ torch.arange(n_chunks)[None, :]
    x = (cells * 0x2545F491 + (seed ^ (layer * 0x9E3779B))) & _MASK
    for _ in range(2):  # 32-bit integer mixing (xor-shift-multiply); products stay below 2**63
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK
    return (x ^ (x >> 16)).double() / 2**32


class RandomScores(ChunkScorer):
    """A fixed pseudo-random score per (sequence seed, layer, step start, chunk)."""

    def start(self, context) -> None:
        super().start(context)
        self.seed = int(torch.randint(2**31, (1,), generator=context.generator))

    def score(self, view: LayerView) -> torch.Tensor:
        starts = self.layout.step_starts[view.steps.cpu()]
        return hashed_uniform(self.seed, view.layer, starts, self.layout.n_chunks)[:, None, :].to(view.queries.device)


@dataclass(frozen=True)
class RandomChunks(Budgeted, Method):
    """Random prefix chunks filling the budget."""

    name = "random"
    budget: Budget

    def scorer(self) -> RandomScores:
        return RandomScores()

    def selector(self) -> TopChunks:
        return TopChunks(self.budget)
