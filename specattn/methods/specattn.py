"""SpecAttn: the draft's attention nucleus predicts the verifier's KV reads (arXiv 2510.27641).

For verifier layer ``j`` at a step, the selection is the top-p nucleus of the draft's
(head-aggregated) attention in draft layer ``layer_map[j]``, for each of the step's draft rows,
OR-ed over those rows and pooled to chunks.
"""

from __future__ import annotations

import torch

from ..select import check_p, nucleus_mask, pool_chunks
from .base import LayerView, SelectionMethod, empty_selection, rows_to_steps


class SpecAttn(SelectionMethod):
    name = "specattn"
    uses_draft = True

    def __init__(self, p: float = 0.95):
        self.p = check_p(p)

    def params(self) -> dict:
        return {"p": self.p}

    def begin_sample(self, context) -> None:
        super().begin_sample(context)
        self.selections: dict[int, torch.Tensor] = {}

    def key_mask(self, attention: torch.Tensor) -> torch.Tensor:
        """``(H, R, K)`` bool: the keys each draft row selects (its top-p nucleus)."""
        return nucleus_mask(attention, self.p)

    def observe_draft(self, draft_layer: int, attention: torch.Tensor, rows: torch.Tensor) -> None:
        layout = self.context.layout
        chunks = pool_chunks(self.key_mask(attention), layout.chunk_size)  # (H, R, c)
        if chunks.shape[-1] < layout.n_chunks:
            chunks = torch.nn.functional.pad(chunks, (0, layout.n_chunks - chunks.shape[-1]))
        store = self.selections.get(draft_layer)
        if store is None:
            store = self.selections[draft_layer] = empty_selection(
                layout.n_steps, attention.shape[0], layout.n_chunks, attention.device)
        store[:] |= rows_to_steps(chunks.transpose(0, 1), layout.step_of(rows.cpu()), layout.n_steps).to(store.device)

    def select(self, view: LayerView) -> torch.Tensor:
        store = self.selections[self.context.layer_map[view.layer]]
        return store[view.steps.to(store.device)]
