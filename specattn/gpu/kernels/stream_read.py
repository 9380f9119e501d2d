"""A streaming read: every byte of a tensor read once, from contiguous blocks, summed in float32, one
float written per program (``1 / (BLOCK * ITERS)`` of the bytes read). The floor a kernel that only reads its
inputs can reach; :func:`specattn.bench.timing.measure_read_bandwidth` times it (a copy reads and
writes, and a reduction along short rows runs below both).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: (elements per load, loads per program, warps): the settings the bandwidth probe tries
CONFIGS = ((2048, 8, 4), (4096, 8, 8), (4096, 16, 8), (8192, 8, 16))


@triton.jit
def _stream_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * (BLOCK * ITERS)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in tl.static_range(ITERS):
        offsets = start + i * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offsets, mask=offsets < n, other=0.0,
                       eviction_policy="evict_first").to(tl.float32)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, 0))


def partial_sums(x: torch.Tensor, block: int = 4096, iters: int = 8, num_warps: int = 8,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-program float32 sums ``(ceil(n / (block * iters)),)`` of a contiguous ``x`` (any length ``n``);
    their total is ``x.sum()``. ``out``: a buffer of that shape to write into (no allocation per call)."""
    if not x.is_contiguous():
        raise ValueError("partial_sums reads a contiguous tensor: pass x.contiguous()")
    flat = x.view(-1)
    programs = triton.cdiv(max(flat.numel(), 1), block * iters)
    if out is None:
        out = torch.empty(programs, dtype=torch.float32, device=x.device)
    _stream_sum_kernel[(programs,)](flat, out, flat.numel(), BLOCK=block, ITERS=iters, num_warps=num_warps)
    return out


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`) as :func:`partial_sums` launches it by default."""
    return compile_one("stream_sum bf16", _stream_sum_kernel, {"x_ptr": "*bf16", "out_ptr": "*fp32", "n": "i32"},
                       {"BLOCK": 4096, "ITERS": 8}, 8)
