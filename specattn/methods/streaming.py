"""StreamingLLM (Xiao et al., ICLR 2024): attention sinks plus a window of the most recent keys.

At each step a sparse layer reads the chunks holding the first ``n_sinks`` tokens (the attention
sinks) and, within the budget, the most recent chunks of the step's prefix (its last, possibly
partial, chunk first); the step's own tokens are always read. The same chunks serve every KV head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.checks import nonnegative_int
from .base import Method
from .budget import Budget, Budgeted
from .context import ChunkScorer, LayerView
from .selectors import TopChunks


@dataclass
class Recency(ChunkScorer):
    """Chunk ``c`` scores ``c`` (later is better); the chunks of the first ``n_sinks`` keys above all."""

    n_sinks: int

    def begin_steps(self, layout) -> None:
        super().begin_steps(layout)
        self.scores = torch.arange(layout.n_chunks, dtype=torch.float32)
        self.scores[: math.ceil(self.n_sinks / layout.chunk_size)] += layout.n_chunks

    def score(self, view: LayerView) -> torch.Tensor:
        return self.scores.to(view.queries.device).expand(len(view.steps), 1, -1)


@dataclass(frozen=True)
class StreamingLLM(Budgeted, Method):
    """Sinks first, then the most recent prefix chunks, within the budget."""

    name = "streaming"
    budget: Budget
    n_sinks: int = 4

    def __post_init__(self) -> None:
        nonnegative_int(self.n_sinks, "n_sinks", "4")
        super().__post_init__()

    def scorer(self) -> Recency:
        return Recency(self.n_sinks)

    def selector(self) -> TopChunks:
        return TopChunks(self.budget, min_keys=self.n_sinks)
