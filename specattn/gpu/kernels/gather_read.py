"""A gathering read: the keys and values of the selected chunks read once, summed in float32, one float written per
program; no attention arithmetic. The floor a kernel that must gather those chunks can reach (issue 23's read floor
is measured with a contiguous streaming read, :mod:`.stream_read`: this one reads the same bytes in the sparse
kernel's pattern, ``C``-key pieces at the chunk lists' positions). Many short programs, scheduled by the hardware:
program ``(b * H + h, r)`` reads chunks ``[r * CHUNKS * ITERS, (r + 1) * CHUNKS * ITERS)`` of head ``h``'s list of
sequence ``b``, ``CHUNKS`` chunks a load.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: (chunks per load, loads per program, warps): the settings ``scripts/gpu/read_floor.py`` tries
CONFIGS = ((4, 4, 4), (8, 2, 8), (8, 4, 8), (2, 8, 4))


@triton.jit
def _gather_sum_kernel(k_ptr, v_ptr, ids_ptr, n_ptr, out_ptr, H, H_SEL, cap, stride_b, stride_h, stride_l,
                       C: tl.constexpr, D: tl.constexpr, CHUNKS: tl.constexpr, ITERS: tl.constexpr):
    bh = tl.program_id(0)
    r = tl.program_id(1)
    b = bh // H
    h = bh % H
    sel = b * H_SEL + (h * H_SEL) // H  # the list head h reads (H_SEL divides H)
    n = tl.load(n_ptr + sel)
    base = b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    rows = tl.arange(0, CHUNKS * C)
    cols = tl.arange(0, D)
    acc = tl.zeros([CHUNKS * C, D], dtype=tl.float32)
    for i in tl.static_range(ITERS):
        j = (r * ITERS + i) * CHUNKS + rows // C  # list position of each row's chunk
        ok = j < n
        chunk = tl.load(ids_ptr + sel.to(tl.int64) * cap + j, mask=ok, other=0)
        offsets = base + (chunk.to(tl.int64) * C + rows % C)[:, None] * stride_l + cols[None, :]
        acc += tl.load(k_ptr + offsets, mask=ok[:, None], other=0.0, eviction_policy="evict_first").to(tl.float32)
        acc += tl.load(v_ptr + offsets, mask=ok[:, None], other=0.0, eviction_policy="evict_first").to(tl.float32)
    tl.store(out_ptr + bh * tl.num_programs(1) + r, tl.sum(tl.sum(acc, 1), 0))


def gather_sums(k: torch.Tensor, v: torch.Tensor, ids: torch.Tensor, n: torch.Tensor, chunk: int,
                most_chunks: int | None = None, chunks: int = 4, iters: int = 4, num_warps: int = 4,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-program float32 sums ``(B * H, ceil(most_chunks / (chunks * iters)))`` of the keys and values of the listed
    chunks; their total is the sum of every selected key and value element.

    ``k``, ``v``: ``(B, H, L, D)`` with unit stride along D and the same strides; ``ids (B, H_sel, cap)`` int32 chunk
    ids (``chunk`` keys each) of which the first ``n (B, H_sel)`` count, ``H_sel`` dividing ``H`` (1: one list a
    sequence); ``most_chunks``: an upper bound on ``n`` (default ``cap``; a tighter one launches fewer idle programs);
    ``out``: a buffer of the result's shape to write into (no allocation per call)."""
    b, h, length, d = k.shape
    if v.shape != k.shape or v.stride() != k.stride() or k.stride(-1) != 1:
        raise ValueError(f"k {tuple(k.shape)} {k.stride()} and v {tuple(v.shape)} {v.stride()} must match, unit "
                         "stride along D")
    if ids.dim() != 3 or ids.shape[0] != b or h % ids.shape[1] or n.shape != ids.shape[:2]:
        raise ValueError(f"ids {tuple(ids.shape)} / n {tuple(n.shape)} do not fit k {tuple(k.shape)}: ids must be "
                         "(B, H_sel, cap) and n (B, H_sel), H_sel dividing H")
    if d & (d - 1) or chunk & (chunk - 1):
        raise ValueError(f"head_dim {d} and chunk {chunk} must be powers of two")
    cap = ids.shape[2]
    span = chunks * iters
    programs = triton.cdiv(max(cap if most_chunks is None else most_chunks, 1), span)
    if out is None:
        out = torch.empty((b * h, programs), dtype=torch.float32, device=k.device)
    elif out.shape != (b * h, programs) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {(b * h, programs)} buffer, got {tuple(out.shape)}")
    _gather_sum_kernel[(b * h, programs)](
        k, v, ids.contiguous(), n.contiguous(), out, h, ids.shape[1], cap, k.stride(0), k.stride(1), k.stride(2),
        C=chunk, D=d, CHUNKS=chunks, ITERS=iters, num_warps=num_warps)
    return out


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`) as :func:`gather_sums` launches it by default (D = 128)."""
    return compile_one("gather_sum bf16 D=128", _gather_sum_kernel,
                       {"k_ptr": "*bf16", "v_ptr": "*bf16", "ids_ptr": "*i32", "n_ptr": "*i32", "out_ptr": "*fp32",
                        "H": "i32", "H_SEL": "i32", "cap": "i32", "stride_b": "i32", "stride_h": "i32",
                        "stride_l": "i32"},
                       {"C": 16, "D": 128, "CHUNKS": 4, "ITERS": 4}, 4,
                       div16=("k_ptr", "v_ptr", "ids_ptr", "stride_b", "stride_h", "stride_l"), spill_free=True)
