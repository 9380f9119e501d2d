"""StreamingLLM (Xiao et al., ICLR 2024): attention sinks plus a window of the most recent keys.

At each step a sparse layer reads the chunks holding the first ``n_sinks`` tokens (the attention
sinks) and, within the budget, the most recent chunks of the step's prefix (its last, possibly
partial, chunk first); the step's own tokens are always read. The same chunks serve every KV head.
"""

from __future__ import annotations

import math

import torch

from ..errors import SpecAttnError
from .base import LayerView, SelectionMethod
from .budget import Budget, top_chunks


class StreamingLLM(SelectionMethod):
    name = "streaming"

    def __init__(self, budget: Budget, n_sinks: int = 4):
        if isinstance(n_sinks, bool) or not isinstance(n_sinks, int) or n_sinks < 0:
            raise SpecAttnError(f"n_sinks={n_sinks!r} must be an integer >= 0 (e.g. n_sinks=4)")
        self.budget, self.n_sinks = budget, n_sinks

    def params(self) -> dict:
        return self.budget.params()

    def begin_sample(self, context) -> None:
        super().begin_sample(context)
        layout = context.layout
        self.sink_chunks = math.ceil(self.n_sinks / layout.chunk_size)
        self.budget_keys = self.budget.prefix_keys(layout)
        # sinks first, then recency: chunk c scores c, sink chunks score above every chunk
        self.scores = torch.arange(layout.n_chunks, dtype=torch.float32)
        self.scores[: self.sink_chunks] += layout.n_chunks

    def select(self, view: LayerView) -> torch.Tensor:
        layout, steps = self.context.layout, view.steps.cpu()
        scores = self.scores.expand(len(steps), 1, -1)
        chosen = top_chunks(scores, layout.prefix_keys_per_chunk[steps], self.budget_keys[steps], self.sink_chunks)
        return chosen.to(view.queries.device)
