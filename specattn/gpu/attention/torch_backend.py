"""Reference backend: gather the selected keys, exact softmax attention in float32 (or float64).

Runs on the CPU or the GPU; computes in float32 (float64 for float64 inputs, or when asked). Gathering the selected keys has a data-dependent size, so ``run``
synchronises with the host; it is the reference, not the fast path.
"""

from __future__ import annotations

import torch

from ...core.errors import SpecAttnError
from .base import AttentionShape, check_chunk_mask, check_step


class TorchVerify:
    name = "torch"

    def __init__(self, shape: AttentionShape, device: torch.device | str | None = None,
                 compute_dtype: torch.dtype | None = None):
        shape.validate()
        if compute_dtype is None:  # float64 inputs stay float64, everything else computes in float32
            compute_dtype = torch.float64 if shape.dtype == torch.float64 else torch.float32
        if compute_dtype not in (torch.float32, torch.float64):
            raise SpecAttnError(f"compute_dtype={compute_dtype} must be torch.float32 or torch.float64")
        self.shape = shape
        self.compute_dtype = compute_dtype
        self._plan: tuple[torch.Tensor, int, int] | None = None

    def plan(self, chunk_mask: torch.Tensor, n_keys: int, n_queries: int) -> None:
        check_chunk_mask(chunk_mask, n_keys, n_queries, self.shape.chunk_size)
        self._plan = (chunk_mask, n_keys, n_queries)

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._plan is None:
            raise SpecAttnError("run() before plan(): call backend.plan(chunk_mask, n_keys, n_queries) first")
        chunk_mask, n_keys, n_queries = self._plan
        if k.shape[0] != n_keys or q.shape[0] != n_queries:
            raise SpecAttnError(
                f"planned for {n_queries} rows over {n_keys} keys, got q {tuple(q.shape)}, k {tuple(k.shape)}: plan again"
            )
        check_step(self.shape, q, k, v)
        return gathered_attention(q, k, v, chunk_mask.to(q.device), self.shape.chunk_size, self.shape.scale,
                                  self.compute_dtype)


def gathered_attention(q, k, v, chunk_mask, chunk_size, sm_scale, compute_dtype=torch.float32):
    """Exact verification attention over the gathered selected keys (see :mod:`.base`)."""
    t, hq, d = q.shape
    n, hkv, _ = k.shape
    p = n - t
    cdt = compute_dtype
    keep = chunk_mask.repeat_interleave(chunk_size)[:p]
    idx = torch.cat([keep.nonzero().flatten(), torch.arange(p, n, device=q.device)])
    g = hq // hkv
    ks = k.index_select(0, idx).to(cdt).repeat_interleave(g, dim=1)  # (M, Hq, D)
    vs = v.index_select(0, idx).to(cdt).repeat_interleave(g, dim=1)
    s = torch.einsum("thd,mhd->htm", q.to(cdt), ks) * sm_scale  # (Hq, T, M)
    pos = idx[None, :]
    rows = torch.arange(t, device=q.device)[:, None]
    ok = (pos < p) | (pos <= p + rows)  # (T, M): tail keys causally
    s = s.masked_fill(~ok[None], float("-inf"))
    w = torch.softmax(s, dim=-1)
    return torch.einsum("htm,mhd->thd", w, vs).to(q.dtype)
