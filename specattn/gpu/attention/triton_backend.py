"""Triton backend: the split-KV kernel of :mod:`specattn.gpu.kernels.sparse_attn` behind the one-sequence
``plan`` / ``run`` interface of :mod:`.base`.

``plan`` turns the ``(ceil(P / C),)`` chunk mask into a chunk list on the device (one launch, no host
synchronisation); ``run`` views ``q (T, Hq, D)`` and ``k, v (N, Hkv, D)`` as the kernel's batch of one
(``(1, Hq, T, D)``, ``(1, Hkv, N, D)``, no copies) and returns ``(T, Hq, D)``. The batched API
(:func:`specattn.gpu.attention.sparse.sparse_verify`) is what a decoder calls directly.

Supported: CUDA (or the Triton interpreter), float16/bfloat16, head_dim 16..256 (powers of two).
"""

from __future__ import annotations

import torch

from ...core.errors import SpecAttnError
from .base import AttentionShape, check_chunk_mask, check_step
from .sparse import KERNEL_DTYPES, KERNEL_HEAD_DIMS, chunk_lists, sparse_verify


class TritonVerify:
    name = "triton"

    def __init__(self, shape: AttentionShape, device: torch.device | str = "cuda", config=None):
        from ..kernels import available

        shape.validate()
        if not available(device):
            raise SpecAttnError(f"backend='triton' needs a CUDA GPU and triton (device={device}): use backend='torch'")
        if shape.dtype not in KERNEL_DTYPES or shape.head_dim not in KERNEL_HEAD_DIMS:
            raise SpecAttnError(f"backend='triton' supports float16/bfloat16 and head_dim in {KERNEL_HEAD_DIMS}, "
                                f"not {shape.dtype} / {shape.head_dim}: use backend='torch'")
        self.shape = shape
        self.device = torch.device(device)
        self.config = config
        self._step = None

    def plan(self, chunk_mask: torch.Tensor, n_keys: int, n_queries: int) -> None:
        check_chunk_mask(chunk_mask, n_keys, n_queries, self.shape.chunk_size)
        lists = chunk_lists(chunk_mask.to(self.device).view(1, 1, -1))
        lengths = torch.full((1,), n_keys, dtype=torch.int32, device=self.device)  # a fill kernel, no copy
        self._step = (lists, lengths, n_keys, n_queries)

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._step is None:
            raise SpecAttnError("run() before plan(): call backend.plan(chunk_mask, n_keys, n_queries) first")
        lists, lengths, n_keys, n_queries = self._step
        if k.shape[0] != n_keys or q.shape[0] != n_queries:
            raise SpecAttnError(
                f"planned for {n_queries} rows over {n_keys} keys, got q {tuple(q.shape)}, k {tuple(k.shape)}: plan again"
            )
        check_step(self.shape, q, k, v)
        out = sparse_verify(q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None], lengths,
                            lists.ids, lists.n, self.shape.chunk_size, self.shape.scale, config=self.config,
                            impl="triton")
        return out[0]
