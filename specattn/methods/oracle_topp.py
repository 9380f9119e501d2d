"""Oracle top-p: the verifier's own attention nucleus, what SpecAttn tries to predict.

In each sparse layer at each step, every query head of every row of the step takes the top-p
nucleus of its own attention (softmax of its query against the keys of its causal row, in the
forward being evaluated); the nucleus is pooled to chunks and OR-ed over the step's rows and over
the query heads of each KV group (``H`` = KV heads). Every head thus keeps at least ``p`` of its
attention mass at every row: an upper bound on the quality of a top-p selection at that ``p``,
at the KV reduction it measures. It needs the dense attention it avoids, so it is a reference,
never a speedup.
"""

from __future__ import annotations

import torch

from ..core.attention_probs import causal_probs
from ..core.checks import check_p
from .base import LayerView, SelectionMethod, empty_selection
from .rows import Nucleus, step_chunks


class OracleTopP(SelectionMethod):
    name = "oracle_topp"

    def __init__(self, p: float = 0.95, query_block: int = 64):
        self.rule, self.query_block = Nucleus(check_p(p)), query_block
        self.p = self.rule.p

    def params(self) -> dict:
        return {"p": self.p}

    def select(self, view: LayerView) -> torch.Tensor:
        layout = self.layout
        hkv = view.keys.shape[0]
        group = view.queries.shape[0] // hkv
        chosen = empty_selection(layout.n_steps, hkv, layout.n_chunks, view.queries.device)
        decoding = (layout.step_of(view.rows.cpu()) >= 0).nonzero().squeeze(1)
        for block in decoding.split(self.query_block):
            rows = view.rows[block.to(view.rows.device)]
            probs = causal_probs(view.queries[:, block.to(view.queries.device)], view.keys, view.scaling, rows)
            chunks = self.rule.row_chunks(probs, layout.chunk_size)  # (Hq, r, C)
            per_kv = chunks.reshape(hkv, group, *chunks.shape[1:]).any(dim=1)  # (Hkv, r, C)
            chosen |= step_chunks(per_kv, rows, layout)
        return chosen[view.steps.to(chosen.device)]
