"""Chunk mask -> BSR (indptr, indices) in one Triton launch, with no host synchronisation.

Use it through :func:`specattn.gpu.attention.bsr.chunk_mask_to_bsr`, which picks this kernel for CUDA
tensors and an equivalent torch implementation elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# MB and NB are never specialised: Triton 3.6 crashes (TritonGPUCoalesce) compiling this kernel with
# MB == 1 turned into a constant, which is the common case (one block row per verification step).
@triton.jit(do_not_specialize=["MB", "NB"])
def _bsr_kernel(mask_ptr, indptr_ptr, indices_ptr, MB, NB, BLOCK: tl.constexpr):
    """One program per (matrix b, block row r). Row r's entries start after the nnz of rows < r.

    mask: (B, MB, NB) uint8; indptr: (B, MB + 1) int32; indices: (B, MB * NB) int32.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // MB
    r = pid % MB
    cols = tl.arange(0, BLOCK)
    mrow0 = mask_ptr + b * MB * NB
    base = tl.full((), 0, tl.int32)
    rr = tl.full((), 0, tl.int32)
    while rr < r:  # offsets: nnz of the earlier rows of this matrix (MB is small: one per verify step)
        t = tl.full((), 0, tl.int32)
        while t < NB:
            m = tl.load(mrow0 + rr * NB + t + cols, mask=t + cols < NB, other=0)
            base += tl.sum((m != 0).to(tl.int32))
            t += BLOCK
        rr += 1
    t = tl.full((), 0, tl.int32)
    while t < NB:
        c = t + cols
        m = tl.load(mrow0 + r * NB + c, mask=c < NB, other=0) != 0
        mi = m.to(tl.int32)
        pos = base + tl.cumsum(mi, 0) - 1
        tl.store(indices_ptr + b * MB * NB + pos, c.to(tl.int32), mask=m)
        base += tl.sum(mi)
        t += BLOCK
    tl.store(indptr_ptr + b * (MB + 1) + r + 1, base)
    if r == 0:
        tl.store(indptr_ptr + b * (MB + 1), 0)


def bsr_from_mask(mask: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor) -> None:
    """Fill ``indptr`` (B, MB+1) and ``indices`` (B, MB*NB) from ``mask`` (B, MB, NB) bool, in place."""
    b, mb, nb = mask.shape
    if b * mb * nb == 0:
        indptr.zero_()
        return
    m = mask.contiguous().view(torch.uint8)
    block = min(max(triton.next_power_of_2(nb), 16), 4096)
    _bsr_kernel[(b * mb,)](m, indptr, indices, mb, nb, BLOCK=block, num_warps=4 if block <= 1024 else 8)


def _aot_check(compile_one) -> bool:
    return compile_one("bsr", _bsr_kernel, {"mask_ptr": "*u8", "indptr_ptr": "*i32", "indices_ptr": "*i32",
                                            "MB": "i32", "NB": "i32"}, {"BLOCK": 4096}, 8)
