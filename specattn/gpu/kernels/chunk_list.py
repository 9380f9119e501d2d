"""Chunk lists on the device (Triton): kept chunk ids in increasing order + their count, no host sync.

A list of capacity ``cap`` is ``ids (G, cap)`` int32 and ``n (G,)`` int32; entries past ``n`` are left
as they were. Two builders, one program per list, chunks scanned in blocks with a running offset:

- :func:`lists_from_mask`: from a ``(G, NC)`` chunk mask;
- :func:`lists_from_thresholds`: the end of the nucleus selection, fused: list g ORs rows
  ``[g*R, (g+1)*R)`` of "chunk max key >= the row's threshold key" (``cmax (G*R, NC)``, ``tkey (G*R,)``
  int32 from :mod:`.nucleus`), optionally writes that chunk mask, and compacts it into the list.

Use them through :mod:`specattn.gpu.attention.sparse`, which checks shapes and has a torch fallback.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

KMAX = tl.constexpr(2147483647)


@triton.jit
def _append(ids_row, keep, cols, base, cap):
    """Store the kept ``cols`` at ``ids_row[base:]`` in order; returns the new count."""
    ki = keep.to(tl.int32)
    pos = base + tl.cumsum(ki, 0) - 1
    tl.store(ids_row + pos, cols, mask=keep & (pos < cap))
    return base + tl.sum(ki, 0)


@triton.jit(do_not_specialize=["NC", "cap"])
def _mask_list_kernel(mask_ptr, ids_ptr, n_ptr, NC, cap, smg, sig, BLOCK: tl.constexpr):
    g = tl.program_id(0).to(tl.int64)
    ids_row = ids_ptr + g * sig
    base = tl.full((), 0, tl.int32)
    c0 = tl.full((), 0, tl.int32)
    while c0 < NC:
        cols = c0 + tl.arange(0, BLOCK)
        keep = tl.load(mask_ptr + g * smg + cols, mask=cols < NC, other=0) != 0
        base = _append(ids_row, keep, cols, base, cap)
        c0 += BLOCK
    tl.store(n_ptr + g, tl.minimum(base, cap))


@triton.jit(do_not_specialize=["R", "NC", "cap"])
def _threshold_list_kernel(cmax_ptr, tkey_ptr, ids_ptr, n_ptr, mask_ptr, R, NC, cap, sig, smg,
                           RB: tl.constexpr, BLOCK: tl.constexpr, WRITE_MASK: tl.constexpr):
    g = tl.program_id(0).to(tl.int64)
    ids_row = ids_ptr + g * sig
    rb = tl.arange(0, RB)
    base = tl.full((), 0, tl.int32)
    c0 = tl.full((), 0, tl.int32)
    while c0 < NC:
        cols = c0 + tl.arange(0, BLOCK)
        c_ok = cols < NC
        hit = tl.zeros((BLOCK,), tl.int32)
        r0 = tl.full((), 0, tl.int32)
        while r0 < R:
            r = r0 + rb
            r_ok = r < R
            rows = g * R + r
            tk = tl.load(tkey_ptr + rows, mask=r_ok, other=KMAX)
            cm = tl.load(cmax_ptr + rows[:, None] * NC + cols[None, :], mask=r_ok[:, None] & c_ok[None, :], other=-1)
            hit = hit | tl.max((cm >= tk[:, None]).to(tl.int32), 0)
            r0 += RB
        keep = (hit != 0) & c_ok
        if WRITE_MASK:
            tl.store(mask_ptr + g * smg + cols, keep.to(tl.uint8), mask=c_ok)
        base = _append(ids_row, keep, cols, base, cap)
        c0 += BLOCK
    tl.store(n_ptr + g, tl.minimum(base, cap))


def _block(n_cols: int, rows: int = 1) -> tuple[int, int]:
    """(chunks per block, num_warps): up to 8192 elements of a (rows, chunks) tile per iteration."""
    block = min(max(triton.next_power_of_2(max(n_cols, 1)), 128), max(128, 8192 // rows))
    return block, 4 if block * rows <= 2048 else 8


def lists_from_mask(mask: torch.Tensor, ids: torch.Tensor, n: torch.Tensor) -> None:
    """``mask (G, NC)`` bool (unit stride along NC) -> ``ids (G, cap)``, ``n (G,)`` (contiguous), in place."""
    groups, nc = mask.shape
    block, warps = _block(nc)
    _mask_list_kernel[(groups,)](mask.view(torch.uint8), ids, n, nc, ids.shape[1], mask.stride(0), ids.stride(0),
                                 BLOCK=block, num_warps=warps)


def lists_from_thresholds(cmax: torch.Tensor, tkey: torch.Tensor, rows_per_list: int, ids: torch.Tensor,
                          n: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """``cmax (G*R, NC)``, ``tkey (G*R,)`` int32 -> ``ids (G, cap)``, ``n (G,)`` and optionally
    ``mask (G, NC')`` bool (NC' >= NC; only the first NC columns are written), in place."""
    groups = n.shape[0]
    nc = cmax.shape[1]
    rb = min(triton.next_power_of_2(max(rows_per_list, 1)), 16)
    block, warps = _block(nc, rb)
    _threshold_list_kernel[(groups,)](
        cmax, tkey, ids, n, mask.view(torch.uint8) if mask is not None else n, rows_per_list, nc, ids.shape[1],
        ids.stride(0), mask.stride(0) if mask is not None else 0,
        RB=rb, BLOCK=block, WRITE_MASK=mask is not None, num_warps=warps)


def _aot_check(compile_one) -> bool:
    ok = compile_one("mask_list", _mask_list_kernel, {"mask_ptr": "*u8", "ids_ptr": "*i32", "n_ptr": "*i32",
                                                      "NC": "i32", "cap": "i32", "smg": "i32", "sig": "i32"},
                     {"BLOCK": 8192}, 8)
    for rb, block in [(4, 2048), (16, 512)]:
        ok &= compile_one(f"threshold_list RB={rb}", _threshold_list_kernel, {
            "cmax_ptr": "*i32", "tkey_ptr": "*i32", "ids_ptr": "*i32", "n_ptr": "*i32", "mask_ptr": "*u8", "R": "i32",
            "NC": "i32", "cap": "i32", "sig": "i32", "smg": "i32"}, {"RB": rb, "BLOCK": block, "WRITE_MASK": True}, 8)
    return ok
