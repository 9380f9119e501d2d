"""StreamingLLM (Xiao et al., ICLR 2024): attention sinks plus a window of the most recent keys.

At each step a sparse layer reads the chunks holding the first ``n_sinks`` tokens (the attention
sinks) and, within the budget, the most recent chunks of the step's prefix (its last, possibly
partial, chunk first); the step's own tokens are always read. The same chunks serve every KV head.
"""

from __future__ import annotations

import math

import torch

from ..core.checks import nonnegative_int
from .base import LayerView
from .budget import Budget, BudgetedMethod


class StreamingLLM(BudgetedMethod):
    name = "streaming"

    def __init__(self, budget: Budget, n_sinks: int = 4):
        super().__init__(budget)
        self.n_sinks = nonnegative_int(n_sinks, "n_sinks", "4")

    def begin_steps(self, layout) -> None:
        super().begin_steps(layout)
        self.sink_chunks = math.ceil(self.n_sinks / layout.chunk_size)
        # sinks first, then recency: chunk c scores c, sink chunks score above every chunk
        self.scores = torch.arange(layout.n_chunks, dtype=torch.float32)
        self.scores[: self.sink_chunks] += layout.n_chunks

    def select(self, view: LayerView) -> torch.Tensor:
        scores = self.scores.expand(len(view.steps), 1, -1)
        return self.take(scores, view.steps, self.sink_chunks).to(view.queries.device)
