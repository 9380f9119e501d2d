"""Random chunks at a budget: the floor every selection method should beat (a sanity check).

Each (sparse layer, step) reads a uniformly random set of its prefix chunks, of the budget's size,
shared by all KV heads. The draws come from the sample's seeded generator, once per sample, so a
sample's selections do not depend on how the evaluation walks through it.
"""

from __future__ import annotations

import torch

from .base import LayerView, SelectionMethod
from .budget import Budget, top_chunks


class RandomChunks(SelectionMethod):
    name = "random"

    def __init__(self, budget: Budget):
        self.budget = budget

    def params(self) -> dict:
        return self.budget.params()

    def begin_sample(self, context) -> None:
        super().begin_sample(context)
        layout = context.layout
        self.budget_keys = self.budget.prefix_keys(layout)
        draws = torch.rand(len(context.sparse_layers), layout.n_steps, 1, layout.n_chunks, generator=context.generator)
        self.scores = dict(zip(context.sparse_layers, draws))  # layer -> (n_steps, 1, n_chunks)

    def select(self, view: LayerView) -> torch.Tensor:
        layout, steps = self.context.layout, view.steps.cpu()
        chosen = top_chunks(self.scores[view.layer][steps], layout.prefix_keys_per_chunk[steps], self.budget_keys[steps])
        return chosen.to(view.queries.device)
