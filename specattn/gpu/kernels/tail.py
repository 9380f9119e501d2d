"""The local part of a verification step, merged with the block-sparse prefix result (Triton).

A verification step has T = gamma+1 query rows whose keys are the last T of the cache
(positions ``[P, N)``, ``P = N - T``). The block-sparse kernel attends the selected *full* chunks of
the prefix ``[0, P0)`` (``P0 = (P // C) * C``) non-causally and returns ``(o_s, lse_s)``. This kernel
attends the rest exactly (float32 softmax; fp16/bf16 products exact in float32 accumulators): the last, partial prefix chunk ``[P0, P)`` (when the chunk is
selected; its flag is read on the device) and the tail ``[P, P + i]`` causally for query row i; then it
merges both parts with their log-sum-exps:

    M = max(lse_s, lse_l);  out = (e^(lse_s-M) o_s + e^(lse_l-M) o_l) / (e^(lse_s-M) + e^(lse_l-M)).

FlashInfer returns lse in base 2 (``LSE_BASE2``); it is converted here (a GPU test checks the base).
One program per query head; no host synchronisation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LN2 = 0.6931471805599453


@triton.jit(do_not_specialize=["T", "N", "P", "P0", "sel_idx"])  # no recompiles as the cache grows
def _tail_merge_kernel(
    q_ptr, k_ptr, v_ptr, os_ptr, lse_ptr, sel_ptr, out_ptr,
    T, N, P, P0, sel_idx, sm_scale, lse_scale,
    sqt, sqh, skn, skh, svn, svh, sot, soh, slt, slh, sout_t, sout_h,
    G: tl.constexpr, TP: tl.constexpr, KL: tl.constexpr, D: tl.constexpr,
    HAS_SPARSE: tl.constexpr, HAS_PARTIAL: tl.constexpr,
):
    h = tl.program_id(0)
    kvh = h // G
    ti = tl.arange(0, TP)
    ki = tl.arange(0, KL)
    di = tl.arange(0, D)
    tm = ti < T
    q = tl.load(q_ptr + ti[:, None] * sqt + h * sqh + di[None, :], mask=tm[:, None], other=0.0)
    j = P0 + ki
    jm = j < N
    k = tl.load(k_ptr + j[:, None].to(tl.int64) * skn + kvh * skh + di[None, :], mask=jm[:, None], other=0.0)
    v = tl.load(v_ptr + j[:, None].to(tl.int64) * svn + kvh * svh + di[None, :], mask=jm[:, None], other=0.0)
    # fp16/bf16 operands: products are exact in the fp32 accumulator (tensor cores)
    s = tl.dot(q, tl.trans(k)) * sm_scale
    allowed = (j[None, :] >= P) & (j[None, :] <= P + ti[:, None]) & jm[None, :]
    if HAS_PARTIAL:
        sel = tl.load(sel_ptr + sel_idx).to(tl.int32)
        allowed = allowed | ((j[None, :] < P) & (sel != 0))
    allowed = allowed & tm[:, None]
    s = tl.where(allowed, s, float("-inf"))
    m = tl.max(s, axis=1)
    m = tl.where(tm, m, 0.0)
    p = tl.exp(s - m[:, None])
    p = tl.where(allowed, p, 0.0)
    l = tl.sum(p, axis=1)
    l = tl.where(tm, l, 1.0)
    # P in two 16-bit pieces (hi + lo) keeps ~16 significant bits of the weights
    p_hi = p.to(v.dtype)
    p_lo = (p - p_hi.to(tl.float32)).to(v.dtype)
    o = (tl.dot(p_hi, v) + tl.dot(p_lo, v)) / l[:, None]
    if HAS_SPARSE:
        lse_l = m + tl.log(l)
        os = tl.load(os_ptr + ti[:, None] * sot + h * soh + di[None, :], mask=tm[:, None], other=0.0).to(tl.float32)
        lse_s = tl.load(lse_ptr + ti * slt + h * slh, mask=tm, other=0.0).to(tl.float32) * lse_scale
        mm = tl.maximum(lse_s, lse_l)
        ws = tl.exp(lse_s - mm)
        wl = tl.exp(lse_l - mm)
        o = (ws[:, None] * os + wl[:, None] * o) / (ws + wl)[:, None]
    tl.store(out_ptr + ti[:, None] * sout_t + h * sout_h + di[None, :], o.to(out_ptr.dtype.element_ty), mask=tm[:, None])


def local_window(chunk_size: int, n_queries: int) -> int:
    """Keys the kernel holds per head: next power of two >= chunk_size - 1 + n_queries (at least 16)."""
    return max(triton.next_power_of_2(chunk_size - 1 + n_queries), 16)


def tail_merge(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_flags: torch.Tensor, chunk_size: int,
    o_sparse: torch.Tensor | None, lse_sparse: torch.Tensor | None, sm_scale: float,
    lse_base2: bool = True, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local attention (partial last chunk + causal tail) merged with the sparse prefix result.

    Args:
        q: ``(T, Hq, D)``; k, v: ``(N, Hkv, D)`` whose last T keys are the queries' own.
        chunk_flags: ``(ceil(P / C),)`` bool/uint8 chunk mask of the prefix (only the partial last
            chunk's flag is read, on the device).
        o_sparse, lse_sparse: the block-sparse result over the full chunks (``None`` if none is kept).
    """
    t, hq, d = q.shape
    n, hkv = k.shape[0], k.shape[1]
    p = n - t
    p0 = (p // chunk_size) * chunk_size
    has_partial = p0 < p
    has_sparse = o_sparse is not None
    if out is None:
        out = torch.empty_like(q)
    kl = local_window(chunk_size, t)
    tp = max(triton.next_power_of_2(t), 16)
    flags = chunk_flags.view(torch.uint8) if chunk_flags.dtype == torch.bool else chunk_flags
    dummy_o = o_sparse if has_sparse else q
    dummy_l = lse_sparse if has_sparse else q
    _tail_merge_kernel[(hq,)](
        q, k, v, dummy_o, dummy_l, flags, out,
        t, n, p, p0, p0 // chunk_size, float(sm_scale), LN2 if lse_base2 else 1.0,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        dummy_o.stride(0), dummy_o.stride(1), dummy_l.stride(0), dummy_l.stride(1), out.stride(0), out.stride(1),
        G=hq // hkv, TP=tp, KL=kl, D=d, HAS_SPARSE=has_sparse, HAS_PARTIAL=has_partial,
        num_warps=4 if kl * d <= 8192 else 8,
    )
    return out


def _aot_check(compile_one) -> bool:
    ok = True
    for dt, g, kl in [("bf16", 4, 32), ("bf16", 1, 32), ("fp16", 4, 128)]:
        ok &= compile_one(f"tail_merge {dt} G={g} KL={kl}", _tail_merge_kernel, {
            "q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "os_ptr": f"*{dt}", "lse_ptr": "*fp32",
            "sel_ptr": "*u8", "out_ptr": f"*{dt}", "T": "i32", "N": "i32", "P": "i32", "P0": "i32",
            "sel_idx": "i32", "sm_scale": "fp32", "lse_scale": "fp32", "sqt": "i32", "sqh": "i32", "skn": "i32",
            "skh": "i32", "svn": "i32", "svh": "i32", "sot": "i32", "soh": "i32", "slt": "i32", "slh": "i32",
            "sout_t": "i32", "sout_h": "i32"},
            {"G": g, "TP": 16, "KL": kl, "D": 128, "HAS_SPARSE": True, "HAS_PARTIAL": True},
            4 if kl * 128 <= 8192 else 8)
    return ok


__all__ = ["tail_merge", "local_window", "LN2"]
