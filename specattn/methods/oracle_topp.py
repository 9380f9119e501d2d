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

from ..probs import causal_probs
from ..select import check_p, nucleus_threshold
from .base import LayerView, SelectionMethod, empty_selection, rows_to_steps


def chunk_max(weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(..., L)`` -> ``(..., ceil(L / chunk_size))``: the largest weight of each chunk."""
    pad = -weights.shape[-1] % chunk_size
    padded = torch.nn.functional.pad(weights, (0, pad), value=-torch.inf)
    return padded.reshape(*weights.shape[:-1], -1, chunk_size).amax(dim=-1)


class OracleTopP(SelectionMethod):
    name = "oracle_topp"

    def __init__(self, p: float = 0.95, query_block: int = 64):
        self.p, self.query_block = check_p(p), query_block

    def params(self) -> dict:
        return {"p": self.p}

    def select(self, view: LayerView) -> torch.Tensor:
        layout = self.context.layout
        hkv = view.keys.shape[0]
        group = view.queries.shape[0] // hkv
        step_of_row = layout.step_of(view.rows.cpu())
        chosen = empty_selection(len(view.steps), hkv, layout.n_chunks, view.queries.device)
        decoding = (step_of_row >= 0).nonzero().squeeze(1)
        for block in decoding.split(self.query_block):
            rows = view.rows[block.to(view.rows.device)]
            probs = causal_probs(view.queries[:, block.to(view.queries.device)], view.keys, view.scaling, rows)
            # a chunk holds a nucleus key iff its largest weight reaches the row's nucleus threshold
            theta = nucleus_threshold(probs, self.p)  # (Hq, r)
            chunks = chunk_max(probs, layout.chunk_size).to(torch.float64) >= theta[..., None]
            chunks = torch.nn.functional.pad(chunks, (0, layout.n_chunks - chunks.shape[-1]))  # (Hq, r, C)
            per_kv = chunks.reshape(hkv, group, *chunks.shape[1:]).any(dim=1)  # (Hkv, r, C)
            local = step_of_row[block] - int(view.steps[0])
            chosen |= rows_to_steps(per_kv.transpose(0, 1), local.to(chosen.device), len(view.steps))
        return chosen
