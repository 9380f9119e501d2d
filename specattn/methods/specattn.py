"""SpecAttn: the draft's attention nucleus predicts the verifier's KV reads (arXiv 2510.27641).

For verifier layer ``j`` at a step, the chunks read are those kept by a row rule
(:mod:`specattn.methods.rows`) on the draft's head-aggregated attention in draft layer
``layer_map[j]``, for each of the step's draft rows, OR-ed over those rows. SpecAttn's rule is the
top-p nucleus; :class:`~specattn.methods.draft_topk.DraftTopK` shares everything but the rule.
"""

from __future__ import annotations

import torch

from ..core.checks import check_p
from .base import LayerView, SelectionMethod, empty_selection
from .rows import Nucleus, TopK, step_chunks


class DraftRowSelection(SelectionMethod):
    """Chunks kept by ``rule`` on the draft's attention rows, per step."""

    uses_draft = True

    def __init__(self, rule: Nucleus | TopK):
        self.rule = rule

    def begin_steps(self, layout) -> None:
        super().begin_steps(layout)
        self.selections: dict[int, torch.Tensor] = {}  # draft layer -> (n_steps, H, n_chunks)

    def observe_draft(self, draft_layer: int, attention: torch.Tensor, rows: torch.Tensor) -> None:
        layout = self.layout
        steps = step_chunks(self.rule.row_chunks(attention, layout.chunk_size), rows, layout)
        store = self.selections.get(draft_layer)
        if store is None:
            store = self.selections[draft_layer] = empty_selection(
                layout.n_steps, attention.shape[0], layout.n_chunks, attention.device)
        store |= steps.to(store.device)

    def select(self, view: LayerView) -> torch.Tensor:
        store = self.selections[self.context.layer_map[view.layer]]
        return store[view.steps.to(store.device)]


class SpecAttn(DraftRowSelection):
    """SpecAttn (arXiv 2510.27641): the draft's attention nucleus predicts the verifier's KV reads."""

    name = "specattn"

    def __init__(self, p: float = 0.95):
        super().__init__(Nucleus(check_p(p)))
        self.p = self.rule.p

    def params(self) -> dict:
        return {"p": self.p}
