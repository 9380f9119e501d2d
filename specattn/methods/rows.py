"""From attention rows to the chunks each verification step reads: the per-row rules and their
union over a step's rows, shared by every method that selects from attention rows (SpecAttn and
draft top-k from the draft's rows, the oracle from the verifier's own).

A rule turns each row of attention weights over keys ``[0, K)`` into the chunks of the keys it
keeps; a step reads the union over its rows. The rows a rule sees cover every key the row attends,
the step's own earlier tokens included (a draft row at position ``r`` attends ``[0, r]``): the
nucleus is the top-p of the row's whole distribution, which is what the draft computed, and
chunks past the step's prefix are dropped later (those keys are read as the step's tail anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import check_p, positive_int
from ..core.layout import StepLayout
from .base import rows_to_steps
from .nucleus import nucleus_chunk_mask, pool_chunks


@dataclass(frozen=True)
class Nucleus:
    """Each row keeps its top-p nucleus (:mod:`specattn.methods.nucleus` semantics)."""

    p: float

    def __post_init__(self) -> None:
        check_p(self.p)

    def row_chunks(self, attention: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """``(..., R, K)`` weights -> ``(..., R, ceil(K / chunk_size))`` bool (the fused GPU kernel on CUDA)."""
        return nucleus_chunk_mask(attention, self.p, chunk_size)


@dataclass(frozen=True)
class TopK:
    """Each row keeps its ``k`` highest-weight keys (all keys of rows shorter than ``k``)."""

    k: int

    def __post_init__(self) -> None:
        positive_int(self.k, "top_k", "64")

    def row_chunks(self, attention: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """``(..., R, K)`` weights -> ``(..., R, ceil(K / chunk_size))`` bool."""
        k = min(self.k, attention.shape[-1])
        keys = torch.zeros(attention.shape, dtype=torch.bool, device=attention.device)
        return pool_chunks(keys.scatter_(-1, attention.topk(k, dim=-1).indices, True), chunk_size)


def step_chunks(row_chunks: torch.Tensor, rows: torch.Tensor, layout: StepLayout) -> torch.Tensor:
    """OR per-row chunk masks into per-step masks of ``layout``.

    Args:
        row_chunks: ``(H, R, C)`` bool, ``C <= layout.n_chunks``.
        rows: ``(R,)`` the rows' positions (rows outside every step are dropped).
    Returns:
        ``(n_steps, H, n_chunks)`` bool.
    """
    pad = layout.n_chunks - row_chunks.shape[-1]
    if pad:
        row_chunks = torch.nn.functional.pad(row_chunks, (0, pad))
    return rows_to_steps(row_chunks.transpose(0, 1), layout.step_of(rows.cpu()), layout.n_steps)
