"""FlashInfer backend: ``BlockSparseAttentionWrapper`` over the selected full chunks + a Triton tail.

Per step:

1. ``plan``: the chunk mask of the *full* prefix chunks becomes BSR arrays on the device
   (:func:`specattn.gpu.attention.bsr.chunk_mask_to_bsr`, no sync), then FlashInfer's ``plan`` schedules
   the kernel. FlashInfer's plan copies ``indptr`` to the host and checks ``indices.max()`` there, so
   **plan synchronises with the host** (once per step and layer pattern); everything else does not.
2. ``run``: block-sparse attention of the T query rows over the kept full chunks (one block row of
   R = T rows, C = chunk_size columns, non-causal: every prefix key precedes every query; when
   T * Hq/Hkv < 4 FlashInfer uses its decode kernel, which needs R = 1, so each query row gets its
   own block row with the same chunks), returning
   ``(o, lse)``; then :func:`specattn.gpu.kernels.tail.tail_merge` attends the partial last chunk (if
   kept) and the causal tail in float32 and merges both parts exactly through their log-sum-exps.

Supported: CUDA, float16/bfloat16, head_dim 64/128/256, MHA and GQA, T <= 16 query rows.
"""

from __future__ import annotations

import torch

from ...core.errors import SpecAttnError
from .base import AttentionShape, check_chunk_mask, check_step
from .bsr import BSR, chunk_mask_to_bsr

HEAD_DIMS = (64, 128, 256)
DTYPES = (torch.float16, torch.bfloat16)
MAX_QUERIES = 16
LSE_BASE2 = True  # FlashInfer's lse is log2-based (checked by tests/test_attention_flashinfer.py)


def require_flashinfer(device=None, dtype: torch.dtype | None = None, head_dim: int | None = None):
    """Import flashinfer or raise a one-line SpecAttnError naming the torch backend."""
    dev = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (dev is not None and dev.type != "cuda"):
        where = "no CUDA GPU is available here" if not torch.cuda.is_available() else f"device={dev} is not a CUDA device"
        raise SpecAttnError(
            f"backend='flashinfer' needs a CUDA GPU and {where}: use backend='torch' (the reference, runs on the CPU)"
        )
    if dtype is not None and dtype not in DTYPES:
        raise SpecAttnError(
            f"backend='flashinfer' supports float16 and bfloat16, not {dtype}: cast q/k/v or use backend='torch'"
        )
    if head_dim is not None and head_dim not in HEAD_DIMS:
        raise SpecAttnError(
            f"head_dim={head_dim} is not supported by FlashInfer's block-sparse kernels (64, 128, 256): "
            "use backend='torch'"
        )
    try:
        import flashinfer
        import triton  # noqa: F401  (the tail kernel)
    except ImportError as e:
        raise SpecAttnError(
            f"backend='flashinfer' needs the {e.name or 'flashinfer'} package, which is not installed "
            "(pip install flashinfer-python==0.6.18.post1, or scripts/setup_gpu.sh <wheel dir>): use backend='torch'"
        ) from None
    return flashinfer


class FlashInferVerify:
    name = "flashinfer"

    def __init__(self, shape: AttentionShape, device: torch.device | str = "cuda",
                 workspace_bytes: int = 128 << 20):
        shape.validate()
        self._fi = require_flashinfer(device, shape.dtype, shape.head_dim)
        from ..kernels.tail import local_window

        if local_window(shape.chunk_size, MAX_QUERIES) > 256:
            raise SpecAttnError(
                f"chunk_size={shape.chunk_size} is too large for the flashinfer backend's tail kernel "
                "(chunk_size + 15 <= 256): use chunk_size <= 128 or backend='torch'"
            )
        self.shape = shape
        self.device = torch.device(device)
        self._ws = torch.empty(workspace_bytes, dtype=torch.uint8, device=self.device)
        self._wrapper = self._fi.BlockSparseAttentionWrapper(self._ws)
        self._step: tuple | None = None
        self.last_nnz: int | None = None

    def plan(self, chunk_mask: torch.Tensor, n_keys: int, n_queries: int, bsr: BSR | None = None) -> None:
        """Plan a step. ``bsr`` may be given (built earlier on the device from ``chunk_mask[:P // C]``)."""
        shape = self.shape
        check_chunk_mask(chunk_mask, n_keys, n_queries, shape.chunk_size)
        if not (1 <= n_queries <= MAX_QUERIES):
            raise SpecAttnError(f"{n_queries} query rows: the flashinfer backend takes 1..{MAX_QUERIES} (gamma+1)")
        c = shape.chunk_size
        n_full = (n_keys - n_queries) // c
        if bsr is None:
            bsr = chunk_mask_to_bsr(chunk_mask[:n_full])
        indptr = bsr.indptr.reshape(-1)
        if indptr.numel() != 2:
            raise SpecAttnError(f"bsr.indptr has {indptr.numel()} entries: one verification step has one block row (2)")
        nnz = int(indptr[1].item())  # the step's host sync (FlashInfer's plan needs indptr on the host anyway)
        self.last_nnz = nnz
        if nnz:
            indices = bsr.indices.reshape(-1)[:nnz]
            rows_per_block = n_queries
            if n_queries * (shape.num_qo_heads // shape.num_kv_heads) < 4 and n_queries > 1:
                # FlashInfer runs its decode kernel here, one query row per block row: give every query
                # row its own block row with the same chunks (a block row of R > 1 rows is wrong there).
                rows_per_block = 1
                indptr = torch.arange(n_queries + 1, dtype=torch.int32, device=indices.device) * nnz
                indices = indices.repeat(n_queries)
            self._wrapper.plan(
                indptr, indices, n_queries, n_full * c, rows_per_block, c,
                shape.num_qo_heads, shape.num_kv_heads, shape.head_dim, causal=False, sm_scale=shape.scale,
                q_data_type=shape.dtype, kv_data_type=shape.dtype, o_data_type=shape.dtype,
            )
        self._step = (chunk_mask, n_keys, n_queries, nnz, n_full)

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._step is None:
            raise SpecAttnError("run() before plan(): call backend.plan(chunk_mask, n_keys, n_queries) first")
        chunk_mask, n_keys, n_queries, nnz, n_full = self._step
        if k.shape[0] != n_keys or q.shape[0] != n_queries:
            raise SpecAttnError(
                f"planned for {n_queries} rows over {n_keys} keys, got q {tuple(q.shape)}, k {tuple(k.shape)}: plan again"
            )
        check_step(self.shape, q, k, v)
        if q.dtype != self.shape.dtype:
            raise SpecAttnError(f"q has dtype {q.dtype}, the backend was built for {self.shape.dtype}")
        from ..kernels.tail import tail_merge

        c = self.shape.chunk_size
        q = q.contiguous()
        o_s = lse_s = None
        if nnz:
            o_s, lse_s = self._wrapper.run(q, k[: n_full * c], v[: n_full * c], return_lse=True)
        return tail_merge(q, k, v, chunk_mask, c, o_s, lse_s, self.shape.scale, lse_base2=LSE_BASE2)
