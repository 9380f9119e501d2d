"""The verifier's own attention rows as a method's evidence (the oracle's): :class:`VerifierAttention`.

In each sparse layer at each step, every query head of every row of the step attends with its own
query against the keys of its causal row, in the forward being evaluated; a row rule is applied per
(query head, row), pooled to chunks and OR-ed over the step's rows and over the query heads of each
KV group (``H`` = KV heads); without a row rule, the rows' chunk masses are summed over the same.
It needs the dense attention it avoids, so it is a reference, never a speedup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.attention_probs import causal_probs
from ..core.checks import positive_int
from .context import LayerView, Scorer
from .draft_rows import pooled_mass


@dataclass(frozen=True)
class VerifierAttention(Scorer):
    """The verifier's own per-head attention rows; ``query_block`` rows at a time (memory, not results)."""

    query_block: int = 64

    def __post_init__(self) -> None:
        positive_int(self.query_block, "query_block", "64")

    def evidence(self, view: LayerView, layout, selector) -> torch.Tensor:
        """``(S, Hkv, C)`` for ``view.steps``: bool (row rule) or float (chunk mass)."""
        hkv = view.keys.shape[0]
        group = view.queries.shape[0] // hkv
        rule = selector.has_row_rule
        step_of = layout.step_of(view.rows.cpu())
        first = int(view.steps[0])
        out = torch.zeros(len(view.steps), hkv, layout.n_chunks, dtype=torch.float32, device=view.queries.device)
        decoding = (step_of >= 0).nonzero().squeeze(1)
        for block in decoding.split(self.query_block):
            rows = view.rows[block.to(view.rows.device)]
            probs = causal_probs(view.queries[:, block.to(view.queries.device)], view.keys, view.scaling, rows)
            per = selector.row_chunks(probs, layout.chunk_size) if rule else pooled_mass(probs, layout.chunk_size)
            per = per.reshape(hkv, group, *per.shape[1:]).float().sum(dim=1)  # (Hkv, r, c)
            per = torch.nn.functional.pad(per, (0, layout.n_chunks - per.shape[-1]))
            local = (step_of[block] - first).to(out.device)
            out.index_add_(0, local, per.transpose(0, 1))
        return out > 0 if rule else out
