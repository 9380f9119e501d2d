"""One verifier layer's whole SpecAttn step on the device, eager or captured in one CUDA graph.

    draft rows -> nucleus threshold + chunk maxima -> chunk mask OR-ed over the rows -> chunk list
    -> split-KV sparse attention + causal tail -> (B, T, Hq, D)

The draft rows are the (head-aggregated) draft attention of the layer mapped to this verifier layer,
``draft (B, H_sel, R, L)``: for list (b, h) the R rows (the step's gamma draft rows, or gamma x draft
heads) over the prefix keys ``[0, L)``; weights at or past a sequence's own prefix length must be zero
(attention probabilities are), else they may select chunks that the attention then ignores. ``H_sel``
is 1 (``head_agg=mean|max``: one list for all heads) or Hkv (``kv_group``: one list per KV head).

On CUDA the chain is four launches (CUDA radix or Triton nucleus kernel with the chunk maxima fused,
one Triton kernel for OR + mask + list, the split kernel, the merge kernel) reading and writing
preallocated buffers, with no host synchronisation: :class:`CapturedStep` records it in a CUDA graph.
Elsewhere the same step runs the torch references (float64 nucleus, exact attention).

Decoder use (per verifier layer with sparse attention, inside HF's attention interface)::

    step = SpecAttnStep(shape, batch=B, max_keys=K_cap, n_queries=gamma + 1, p=0.95)  # once per layer
    out = step(q, k_cache, v_cache, lengths, draft_rows)   # (B, T, Hq, D), every step
"""

from __future__ import annotations

import torch

from ..core.errors import SpecAttnError
from .attention.base import AttentionShape
from .attention.sparse import (
    KERNEL_DTYPES,
    ChunkLists,
    check_verify,
    n_chunks_capacity,
    sparse_verify,
)

NUCLEUS_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def select_chunks(draft: torch.Tensor, p: float, chunk_size: int, lists: ChunkLists,
                  mask: torch.Tensor | None = None) -> ChunkLists:
    """Draft rows ``(..., R, L)`` -> per leading index the chunks holding a nucleus key of any of its R
    rows, as ``lists`` (``ids (..., cap)``, ``n (...)``, cap >= ceil(L / C)) and, if given, ``mask
    (..., >= ceil(L / C))`` bool (first ceil(L / C) columns written).

    The leading dimensions are e.g. ``(B, H_sel)`` for one layer, or ``(layers, B, H_sel)`` to select
    for every layer of a verification step in the same two launches. On CUDA: the nucleus kernel (chunk
    maxima fused) and one Triton kernel for OR + mask + list, no host synchronisation; elsewhere the
    float64 reference and the torch list build.
    """
    from .kernels import available

    *lead, r, length = draft.shape
    groups = 1
    for size in lead:
        groups *= size
    nc = -(-length // chunk_size)
    if tuple(lists.n.shape) != tuple(lead) or lists.ids.shape[-1] < nc:
        raise SpecAttnError(f"lists {tuple(lists.ids.shape)} do not fit draft rows {tuple(draft.shape)}: need "
                            f"ids ({', '.join(map(str, lead))}, >= {nc})")
    if available(draft.device) and draft.dtype in NUCLEUS_DTYPES:
        from .kernels.chunk_list import lists_from_thresholds
        from .kernels.nucleus import chunk_thresholds

        tkey, cmax = chunk_thresholds(draft.reshape(groups * r, length), p, chunk_size)
        lists_from_thresholds(cmax, tkey, r, lists.ids.view(groups, -1), lists.n.view(groups),
                              None if mask is None else mask.view(groups, -1))
    else:
        from ..core.nucleus_reference import nucleus_chunk_mask_reference
        from .attention.sparse import chunk_lists

        chunks = nucleus_chunk_mask_reference(draft.reshape(groups, r, length), p, chunk_size, group=r)[:, 0]  # (G, NC)
        if mask is not None:
            mask.view(groups, -1)[:, :nc] = chunks
        flat = ChunkLists(lists.ids.view(1, groups, -1), lists.n.view(1, groups))
        chunk_lists(chunks[None], lists.ids.shape[-1], out=flat, impl="torch")
    return lists


class SpecAttnStep:
    """Preallocated buffers + the per-layer step.

    Args:
        shape: the verifier layer's heads, head_dim, chunk size, dtype and scale.
        batch: sequences B; max_keys: the cache capacity K_cap; n_queries: T = gamma + 1.
        p: nucleus mass; sel_heads: H_sel (1 or Hkv).
        config: :class:`specattn.gpu.kernels.sparse_attn.SplitConfig` of the attention kernel.

    Attributes written by every step: ``lists`` (:class:`ChunkLists`, capacity
    ``ceil((K_cap - T) / C)``) and ``chunk_mask (B, H_sel, capacity)`` bool (its first ``ceil(L / C)``
    columns are this step's selection).
    """

    def __init__(self, shape: AttentionShape, batch: int, max_keys: int, n_queries: int, p: float,
                 sel_heads: int = 1, device: torch.device | str = "cuda", config=None):
        from ..core.nucleus_reference import check_p

        shape.validate()
        if sel_heads not in (1, shape.num_kv_heads):
            raise SpecAttnError(f"sel_heads={sel_heads}: use 1 (one list for all heads) or Hkv={shape.num_kv_heads}")
        self.shape, self.batch, self.n_queries, self.p = shape, batch, n_queries, check_p(p)
        self.max_keys, self.sel_heads, self.config = max_keys, sel_heads, config
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda" means the current device
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.capacity = n_chunks_capacity(max_keys, n_queries, shape.chunk_size)
        self.lists = ChunkLists.empty(batch, sel_heads, self.capacity, self.device)
        self.chunk_mask = torch.zeros((batch, sel_heads, self.capacity), dtype=torch.bool, device=self.device)
        self.workspace = None
        from .kernels import available

        if available(self.device) and shape.dtype in KERNEL_DTYPES:
            from .kernels import sparse_attn as K

            self.workspace = K.make_workspace(batch, shape.num_kv_heads, shape.num_qo_heads // shape.num_kv_heads,
                                              n_queries, shape.head_dim, config or K.SplitConfig(), self.device)

    def select(self, draft: torch.Tensor) -> ChunkLists:
        """Fill ``lists`` and ``chunk_mask`` from ``draft (B, H_sel, R, L)`` (L <= capacity * C)."""
        self._check_draft(draft)
        select_chunks(draft, self.p, self.shape.chunk_size, self.lists, self.chunk_mask)
        return self.lists

    def attend(self, q, k, v, lengths, out: torch.Tensor | None = None,
               lists: ChunkLists | None = None) -> torch.Tensor:
        """Sparse verification attention over ``lists`` (default: those of the last :meth:`select`, e.g.
        one layer's slice of a :func:`select_chunks` over all layers); ``(B, T, Hq, D)``."""
        lists = lists if lists is not None else self.lists
        return sparse_verify(q, k, v, lengths, lists.ids, lists.n, self.shape.chunk_size, self.shape.scale,
                             out=out, workspace=self.workspace, config=self.config)

    def __call__(self, q, k, v, lengths, draft, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_layer(q, k, v, lengths)
        self.select(draft)
        return self.attend(q, k, v, lengths, out)

    def _check_draft(self, draft: torch.Tensor) -> tuple[int, int, int, int]:
        if draft.dim() != 4 or draft.shape[:2] != (self.batch, self.sel_heads) or draft.shape[2] < 1:
            raise SpecAttnError(f"draft rows must be (B={self.batch}, H_sel={self.sel_heads}, R >= 1, L), "
                                f"got {tuple(draft.shape)}")
        if not 1 <= draft.shape[3] <= self.capacity * self.shape.chunk_size:
            raise SpecAttnError(f"draft rows over {draft.shape[3]} keys: need 1 <= L <= "
                                f"{self.capacity * self.shape.chunk_size} (the longest prefix, in whole chunks)")
        if draft.device != self.device:
            raise SpecAttnError(f"draft rows are on {draft.device}, the step on {self.device}")
        return tuple(draft.shape)

    def _check_layer(self, q, k, v, lengths) -> None:
        check_verify(q, k, v, lengths)
        s = self.shape
        want = (self.batch, s.num_qo_heads, self.n_queries, s.head_dim)
        if tuple(q.shape) != want or k.shape[1] != s.num_kv_heads or k.shape[2] > self.max_keys:
            raise SpecAttnError(f"q {tuple(q.shape)} / k {tuple(k.shape)} do not fit the step: q {want}, "
                                f"k (B, {s.num_kv_heads}, <= {self.max_keys}, {s.head_dim})")


class CapturedStep:
    """A :class:`SpecAttnStep` recorded in one CUDA graph over static tensors.

    The graph reads ``q, k, v, lengths, draft`` (the tensors given here, by address) and writes
    ``out``: copy each step's inputs into them (``captured.q.copy_(...)``; the KV cache is usually
    static already), call :meth:`replay`, read ``out``. Capture warms the kernels up first on a side
    stream (Triton compiles, the CUDA radix kernel builds), then records the step once.
    """

    def __init__(self, step: SpecAttnStep, q, k, v, lengths, draft, warmup: int = 2):
        self.step = step
        self.q, self.k, self.v, self.lengths, self.draft = q, k, v, lengths, draft
        b, hq, t, d = q.shape
        self.out = torch.empty((b, t, hq, d), dtype=q.dtype, device=q.device)
        side = torch.cuda.Stream(q.device)
        side.wait_stream(torch.cuda.current_stream(q.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step(q, k, v, lengths, draft, out=self.out)
        torch.cuda.current_stream(q.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step(q, k, v, lengths, draft, out=self.out)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out
