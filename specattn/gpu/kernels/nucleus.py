"""Exact, sorting-free nucleus (top-p) selection on the GPU (Triton).

Semantics are those of :mod:`specattn.methods.nucleus` (its module docstring): per row of non-negative weights
``a`` with mass ``m``, ``theta = max{v in a : sum(a_i for a_i >= v) >= p * m}`` and the nucleus is
``{i : a_i >= theta}``; ties are in, ``p = 1`` keeps every key, an all-zero row keeps every key.
The threshold is always one of the row's own values, so ``weights >= theta`` gives the same mask as
the float64 sort-based reference.

How it works. Non-negative IEEE floats order like their bit patterns read as integers ("keys"), so
the threshold is found by searching the integer key space, never by sorting:

* Short rows (``L <= ONCHIP_MAX``): one program per row holds the whole row in registers and runs an
  exact bisection over keys, ``lo``/``hi`` snapped to keys present in the row after every step
  (``lo`` = smallest key >= mid when the mass at mid reaches the target, else ``hi`` = largest key
  < mid). It stops exactly when no key lies strictly between ``lo`` and ``hi`` (then ``lo == hi``),
  at most 32 steps for 32-bit keys. Masses are summed in float64. (A two-phase variant, bisecting
  the full tile until <= 512 keys remain in ``[lo, hi]`` and finishing on a compacted tile, exists
  behind ``ONCHIP_TWO_PHASE``; it was slower on the H200 for short rows, so it is off there.)
* Long rows (few rows x long L, e.g. 32 x 128K): a row is split over ``cdiv(L, SEG)`` programs.
  (A) each program loads a segment into registers once and writes its float64 mass, min/max key, the
  per-chunk max keys (for the chunk mask) and a 1024-bin count histogram of ``key >> 18`` relative to
  the segment max (bins 1/32 of a binade wide; ``tl.histogram`` counts with warp ballots, cheaply);
  (B) one program per row aligns the segment histograms on the row max and turns counts x bin edges
  into rigorous lower/upper bounds of the mass above each bin edge, which bracket ``theta`` in a
  value window ``[v0, v1)`` that holds typically 1-3% of the keys; (C) each segment program sums the
  mass >= v1 exactly (float64) and compacts the keys inside the window into a per-row buffer
  (atomic slot reservation); (D) one program per row runs the exact bisection above on the
  candidates (two-phase: full candidate tile until <= 1024 remain, then a compacted tile),
  starting from the exact mass above the window. If the window holds more than
  ``CAND_CAP`` keys (nearly uniform rows), (D) bisects over the full row instead, streaming it
  (exact, slower). So a long row is read from memory twice. Every decision is taken on the device:
  no host synchronisation, CUDA-graph capturable.

Backends. The thresholds can also come from the CUDA radix kernel (:mod:`.radix`,
``nucleus_radix.cu``: one block per row, approximate bin masses from native 32-bit shared atomics as a
guess, then exact integer-significand histograms; 2-6x faster than the Triton long path on the H200).
``SPECATTN_NUCLEUS`` (or ``BACKEND``) picks: ``auto`` (default: per shape, see :func:`_prefer_radix`),
``cuda`` or ``triton``. Both return the same thresholds; both fuse the chunk maxima into their first
pass where they can; the union over rows stays in Triton.

Inputs: float32, float16 or bfloat16 (float64 goes to the sort-based reference), finite, non-negative
(the precondition of attention weights; negative or NaN weights give unspecified results).
"""

from __future__ import annotations

import math
import os
import struct

import torch
import triton
import triton.language as tl

from ...core.errors import SpecAttnError

ONCHIP_MAX = 16384  # longest row handled by one program holding it in registers
SEG = 16384  # segment of a long row handled by one program (stats + histogram)
SEG_COMPACT = 4096  # segment of the compaction pass (small tiles: more programs in flight)
CT_ONCHIP = 512  # keys left when the two-phase bisection compacts (short rows) ...
ONCHIP_TWO_PHASE = False  # ... but off: measured slower on the H200 for short rows (65 vs 19 us at 32x8192)
CT_FINISH = 1024  # same, long-row candidates
NBINS = 1024  # histogram bins of the long-row path
BIN_SHIFT = 18  # bin = key >> 18: 5 mantissa bits, 32 bins per binade
CAND_CAP = 16384  # most candidate keys per row the long-row path keeps in registers
FINISH_TILE = 4096  # keys a step of the long-row path's streaming bisection (rows with more candidates than CAND_CAP)
KMAX = tl.constexpr(2147483647)  # key above every finite non-negative float
MAX_IT = 40  # iteration cap of every bisection (32 suffice for 32-bit keys); guarantees termination

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "cuda", "triton")
# cuda: the CUDA radix kernel (radix.py) for every row length it takes; triton: the kernels of this
# module; auto: whichever measured faster for the shape (_prefer_radix), the radix kernel only where
# nvcc exists
BACKEND = os.environ.get("SPECATTN_NUCLEUS", "auto")


# --------------------------------------------------------------------------------------------- jit
@triton.jit
def _combine_sab(s1, a1, b1, s2, a2, b2):
    return s1 + s2, tl.minimum(a1, a2), tl.maximum(b1, b2)


@triton.jit
def _combine_ab(a1, b1, a2, b2):
    return tl.minimum(a1, a2), tl.maximum(b1, b2)


@triton.jit
def _keys_of(x):
    """float32 tile -> int32 keys (order-preserving for non-negative floats)."""
    return x.to(tl.int32, bitcast=True)


@triton.jit
def _key_value64(k):
    """int32 key -> float64 value (exact); keys < 0 (padding) give 0."""
    return tl.where(k >= 0, k, 0).to(tl.float32, bitcast=True).to(tl.float64)


@triton.jit
def _bisect_regs(k, xd, base, target, lo, hi, PRECOMP: tl.constexpr, MAXIT: tl.constexpr):
    """Exact snapped bisection over the keys ``k`` held in registers (padding keys are -1).

    Invariant: mass(>= lo) >= target, theta <= hi, lo and hi are keys present in ``k``. The mass at
    ``v`` is ``base + sum(values of k >= v)``. Returns theta's key.
    """
    it = tl.full((), 0, tl.int32)
    while (lo < hi) & (it < MAXIT):
        mid = lo + (hi - lo + 1) // 2
        ge = k >= mid
        if PRECOMP:
            xs = tl.where(ge, xd, 0.0)
        else:
            xs = _key_value64(tl.where(ge, k, 0))
        s, a, b = tl.reduce((xs, tl.where(ge, k, KMAX), tl.where(ge, -1, k)), 0, _combine_sab)
        take = (base + s) >= target
        lo = tl.where(take, a, lo)
        hi = tl.where(take, hi, b)
        it += 1
    return lo


@triton.jit
def _combine_sabc(s1, a1, b1, c1, s2, a2, b2, c2):
    return s1 + s2, tl.minimum(a1, a2), tl.maximum(b1, b2), c1 + c2


@triton.jit
def _bisect_two_phase(k, count, base, target, lo, hi, scratch, CT: tl.constexpr, MAXIT: tl.constexpr):
    """:func:`_bisect_regs` for large tiles: bisect on the whole tile only until at most CT keys lie
    in [lo, hi], then compact those keys through ``scratch`` (CT int32 of global memory) into a
    CT-wide tile, fold the exact mass above ``hi`` into the base, and finish there. ``count`` is the
    number of keys in [lo, hi] on entry."""
    it = tl.full((), 0, tl.int32)
    while (lo < hi) & (count > CT) & (it < MAXIT):
        mid = lo + (hi - lo + 1) // 2
        ge = k >= mid
        xs = _key_value64(tl.where(ge, k, 0))
        c_ge = (ge & (k <= hi)).to(tl.int32)
        s, a, b, c = tl.reduce((xs, tl.where(ge, k, KMAX), tl.where(ge, -1, k), c_ge), 0, _combine_sabc)
        take = (base + s) >= target
        lo = tl.where(take, a, lo)
        hi = tl.where(take, hi, b)
        count = tl.where(take, c, count - c)
        it += 1
    inr = (k >= lo) & (k <= hi)
    above = tl.sum(tl.where(k > hi, _key_value64(k), 0.0))
    pos = tl.cumsum(inr.to(tl.int32), 0) - 1
    tl.store(scratch + pos, k, mask=inr & (pos < CT))
    tl.debug_barrier()
    ci = tl.arange(0, CT)
    k2 = tl.load(scratch + ci, mask=ci < count, other=-1)
    return _bisect_regs(k2, k2, base + above, target, lo, hi, False, MAXIT)


@triton.jit
def _onchip_kernel(
    w_ptr, stride, L, p_bits, theta_ptr, tkey_ptr, cmax_ptr, n_chunks, scratch_ptr,
    BLOCK: tl.constexpr, CHUNK: tl.constexpr, WRITE_CMAX: tl.constexpr,
    P_ONE: tl.constexpr, PRECOMP: tl.constexpr, MAXIT: tl.constexpr, CT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < L
    x = tl.load(w_ptr + row * stride + offs, mask=valid, other=0.0).to(tl.float32)
    k = tl.where(valid, _keys_of(x), -1)
    if WRITE_CMAX:
        cm = tl.max(tl.reshape(k, (BLOCK // CHUNK, CHUNK)), axis=1)
        ci = tl.arange(0, BLOCK // CHUNK)
        tl.store(cmax_ptr + row * n_chunks + ci, cm, mask=ci < n_chunks)
    lo, hi = tl.reduce((tl.where(valid, k, KMAX), k), 0, _combine_ab)
    if not P_ONE:
        xd = x.to(tl.float64)
        total = tl.sum(xd)
        target = p_bits.to(tl.float64, bitcast=True) * total
        if CT < BLOCK:
            zero = tl.zeros((), tl.float64)
            lo = _bisect_two_phase(k, L, zero, target, lo, hi, scratch_ptr + row * CT, CT, MAXIT)
        else:
            lo = _bisect_regs(k, xd, 0.0, target, lo, hi, PRECOMP, MAXIT)
    tl.store(tkey_ptr + row, lo)
    tl.store(theta_ptr + row, lo.to(tl.float32, bitcast=True).to(tl.float64))


@triton.jit
def _seg_stats_kernel(
    w_ptr, stride, L, S, ssum_ptr, smax_ptr, smin_ptr, hist_ptr, cmax_ptr, n_chunks,
    SEGB: tl.constexpr, CHUNK: tl.constexpr, WRITE_CMAX: tl.constexpr,
    NB: tl.constexpr, SHIFT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    offs = seg * SEGB + tl.arange(0, SEGB)
    valid = offs < L
    x = tl.load(w_ptr + row * stride + offs, mask=valid, other=0.0).to(tl.float32)
    k = tl.where(valid, _keys_of(x), -1)
    if WRITE_CMAX:
        cm = tl.max(tl.reshape(k, (SEGB // CHUNK, CHUNK)), axis=1)
        ci = seg * (SEGB // CHUNK) + tl.arange(0, SEGB // CHUNK)
        tl.store(cmax_ptr + row * n_chunks + ci, cm, mask=ci < n_chunks)
    smin, smax = tl.reduce((tl.where(valid, k, KMAX), k), 0, _combine_ab)
    ssum = tl.sum(x.to(tl.float64))
    bins = tl.minimum((smax >> SHIFT) - (k >> SHIFT), NB - 1)
    bins = tl.maximum(bins, 0)
    h = tl.histogram(bins, NB, mask=valid)
    o = row * S + seg
    tl.store(ssum_ptr + o, ssum)
    tl.store(smax_ptr + o, smax)
    tl.store(smin_ptr + o, smin)
    tl.store(hist_ptr + o * NB + tl.arange(0, NB), h)


@triton.jit
def _decide_kernel(
    L, S, p_bits, ssum_ptr, smax_ptr, smin_ptr, hist_ptr,
    dec_i_ptr, dec_f_ptr, cnt_ptr, theta_ptr, tkey_ptr,
    SB: tl.constexpr, NB: tl.constexpr, SHIFT: tl.constexpr, CAP: tl.constexpr, P_ONE: tl.constexpr,
):
    """Per row: exact total, target, and a bracket [v0, v1) of theta from the histograms.

    dec_i[row] = (mode, v0_key, v1_key, n_candidates); mode 0: compact, 1: stream the row, 2: done.
    dec_f[row] = (target,).
    """
    row = tl.program_id(0).to(tl.int64)
    si = tl.arange(0, SB)
    sm = si < S
    total = tl.sum(tl.load(ssum_ptr + row * S + si, mask=sm, other=0.0))
    rmin = tl.min(tl.load(smin_ptr + row * S + si, mask=sm, other=KMAX))
    rmax = tl.max(tl.load(smax_ptr + row * S + si, mask=sm, other=-1))
    target = p_bits.to(tl.float64, bitcast=True) * total
    tl.store(dec_f_ptr + row, target)
    tl.store(cnt_ptr + row, 0)
    if P_ONE:
        done = 1
        theta = rmin
    else:
        done = (rmin == rmax).to(tl.int32)  # one distinct value (all-zero rows too)
        theta = rmax
    if done != 0:
        tl.store(dec_i_ptr + row * 4 + 0, 2)
        tl.store(dec_i_ptr + row * 4 + 1, 0)
        tl.store(dec_i_ptr + row * 4 + 2, KMAX)
        tl.store(dec_i_ptr + row * 4 + 3, 0)
        tl.store(tkey_ptr + row, theta)
        tl.store(theta_ptr + row, theta.to(tl.float32, bitcast=True).to(tl.float64))
    else:
        i = tl.arange(0, NB)
        top = rmax >> SHIFT
        acc = tl.zeros((NB,), dtype=tl.int32)
        s = tl.full((), 0, tl.int32)
        while s < S:  # while, not range(S): the CPU interpreter cannot range over a runtime scalar
            d = top - (tl.load(smax_ptr + row * S + s) >> SHIFT)
            j = i - d
            acc += tl.load(hist_ptr + (row * S + s) * NB + j, mask=(j >= 0) & (j < NB - 1), other=0)
            s += 1
        under = L - tl.sum(tl.where(i < NB - 1, acc, 0))
        acc = tl.where(i == NB - 1, under, acc)
        lo_key = tl.where(i < NB - 1, tl.maximum(top - i, 0) << SHIFT, 0)
        hi_key = tl.where(i < NB - 1, (top - i + 1) << SHIFT, (top - (NB - 2)) << SHIFT)
        hi_key = tl.maximum(hi_key, 0)
        c64 = acc.to(tl.float64)
        flo = tl.cumsum(c64 * _key_value64(lo_key), 0)
        fhi = tl.cumsum(c64 * _key_value64(hi_key), 0)
        slack = 1e-9 * total
        b0 = tl.min(tl.where(flo - slack >= target, i, NB - 1))
        b1 = tl.max(tl.where(fhi + slack < target, i, -1))
        v0 = tl.max(tl.where(i == b0, lo_key, 0))
        v1 = tl.where(b1 >= 0, tl.max(tl.where(i == b1, lo_key, 0)), KMAX)
        ncand = tl.sum(tl.where((i > b1) & (i <= b0), acc, 0))
        mode = tl.where(ncand <= CAP, 0, 1)
        tl.store(dec_i_ptr + row * 4 + 0, mode)
        tl.store(dec_i_ptr + row * 4 + 1, v0)
        tl.store(dec_i_ptr + row * 4 + 2, v1)
        tl.store(dec_i_ptr + row * 4 + 3, ncand)


@triton.jit
def _compact_kernel(
    w_ptr, stride, L, S, dec_i_ptr, above_ptr, cnt_ptr, cand_ptr,
    SEGB: tl.constexpr, CAP: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    mode = tl.load(dec_i_ptr + row * 4 + 0)
    if mode != 2:
        v0 = tl.load(dec_i_ptr + row * 4 + 1)
        v1 = tl.load(dec_i_ptr + row * 4 + 2)
        offs = seg * SEGB + tl.arange(0, SEGB)
        valid = offs < L
        x = tl.load(w_ptr + row * stride + offs, mask=valid, other=0.0).to(tl.float32)
        k = tl.where(valid, _keys_of(x), -1)
        above = tl.sum(tl.where(k >= v1, x.to(tl.float64), 0.0))
        tl.store(above_ptr + row * S + seg, above)
        if mode == 0:
            inc = (k >= v0) & (k < v1)
            inc_i = inc.to(tl.int32)
            n = tl.sum(inc_i)
            base = tl.atomic_add(cnt_ptr + row, n)
            pos = base + tl.cumsum(inc_i, 0) - 1
            tl.store(cand_ptr + row * CAP + pos, k, mask=inc & (pos < CAP))


@triton.jit
def _finish_kernel(
    w_ptr, stride, L, S, dec_i_ptr, dec_f_ptr, above_ptr, cnt_ptr, cand_ptr, theta_ptr, tkey_ptr, scratch_ptr,
    SB: tl.constexpr, CAP: tl.constexpr, TILE: tl.constexpr, MAXIT: tl.constexpr, CT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    mode = tl.load(dec_i_ptr + row * 4 + 0)
    if mode != 2:
        v0 = tl.load(dec_i_ptr + row * 4 + 1)
        v1 = tl.load(dec_i_ptr + row * 4 + 2)
        target = tl.load(dec_f_ptr + row)
        si = tl.arange(0, SB)
        base = tl.sum(tl.load(above_ptr + row * S + si, mask=si < S, other=0.0))
        n = tl.load(cnt_ptr + row)
        if (mode == 0) & (n > 0):
            ci = tl.arange(0, CAP)
            k = tl.load(cand_ptr + row * CAP + ci, mask=ci < n, other=-1)
            lo, hi = tl.reduce((tl.where(ci < n, k, KMAX), k), 0, _combine_ab)
            lo = _bisect_two_phase(k, n, base, target, lo, hi, scratch_ptr + row * CT, CT, MAXIT)
        else:
            # stream the row: keys in [v0, v1) are the candidates, mass >= v1 is `base`
            lo = tl.full((), KMAX, tl.int32)
            hi = tl.full((), -1, tl.int32)
            t = tl.full((), 0, tl.int32)
            while t < L:
                offs = t + tl.arange(0, TILE)
                x = tl.load(w_ptr + row * stride + offs, mask=offs < L, other=0.0).to(tl.float32)
                k = tl.where(offs < L, _keys_of(x), -1)
                inc = (k >= v0) & (k < v1)
                a, b = tl.reduce((tl.where(inc, k, KMAX), tl.where(inc, k, -1)), 0, _combine_ab)
                lo = tl.minimum(lo, a)
                hi = tl.maximum(hi, b)
                t += TILE
            it = tl.full((), 0, tl.int32)
            while (lo < hi) & (it < MAXIT):
                mid = lo + (hi - lo + 1) // 2
                s = base
                a = tl.full((), KMAX, tl.int32)
                b = lo
                t = tl.full((), 0, tl.int32)
                while t < L:
                    offs = t + tl.arange(0, TILE)
                    x = tl.load(w_ptr + row * stride + offs, mask=offs < L, other=0.0).to(tl.float32)
                    k = tl.where(offs < L, _keys_of(x), -1)
                    ge = (k >= mid) & (k < v1)
                    lt = (k < mid) & (k >= v0)
                    s1, a1, b1 = tl.reduce(
                        (tl.where(ge, x.to(tl.float64), 0.0), tl.where(ge, k, KMAX), tl.where(lt, k, -1)),
                        0, _combine_sab,
                    )
                    s += s1
                    a = tl.minimum(a, a1)
                    b = tl.maximum(b, b1)
                    t += TILE
                take = s >= target
                lo = tl.where(take, a, lo)
                hi = tl.where(take, hi, b)
                it += 1
        tl.store(tkey_ptr + row, lo)
        tl.store(theta_ptr + row, lo.to(tl.float32, bitcast=True).to(tl.float64))


@triton.jit
def _chunk_max_kernel(w_ptr, stride, L, cmax_ptr, n_chunks, C, CB: tl.constexpr, CP: tl.constexpr):
    """Generic per-chunk max key (any chunk size): cmax[row, c] = max key of keys [c*C, (c+1)*C)."""
    row = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * CB + tl.arange(0, CB)
    j = tl.arange(0, CP)
    offs = cs[:, None] * C + j[None, :]
    m = (cs[:, None] < n_chunks) & (j[None, :] < C) & (offs < L)
    x = tl.load(w_ptr + row * stride + offs, mask=m, other=0.0).to(tl.float32)
    k = tl.where(m, _keys_of(x), -1)
    tl.store(cmax_ptr + row * n_chunks + cs, tl.max(k, axis=1), mask=cs < n_chunks)


@triton.jit
def _chunk_union_kernel(
    cmax_ptr, tkey_ptr, out_ptr, R, n_groups, n_chunks, GROUP, BLOCK_C: tl.constexpr,
):
    """out[b, g, c] = OR over rows r of group g of (chunk max key of row r >= theta key of row r)."""
    bg = tl.program_id(0).to(tl.int64)
    b = bg // n_groups
    g = bg % n_groups
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cs < n_chunks
    acc = tl.zeros((BLOCK_C,), dtype=tl.int32)
    jj = tl.full((), 0, tl.int32)
    while jj < GROUP:
        r = g * GROUP + jj
        ok = r < R
        rr = b * R + r
        tk = tl.load(tkey_ptr + rr, mask=ok, other=KMAX)
        c = tl.load(cmax_ptr + rr * n_chunks + cs, mask=cm & ok, other=-1)
        acc = acc | (c >= tk).to(tl.int32)
        jj += 1
    tl.store(out_ptr + bg * n_chunks + cs, acc.to(tl.uint8), mask=cm)


# ------------------------------------------------------------------------------------------ python
def _p_bits(p: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(p)))[0]


def _onchip_config(block: int) -> tuple[int, bool]:
    """(num_warps, precompute float64 values) for an on-chip tile of ``block`` keys."""
    if block <= 1024:
        return 4, True
    if block <= 4096:
        return 8, True
    if block <= 8192:
        return 16, True
    return 16, False


def _rows(weights: torch.Tensor) -> torch.Tensor:
    if weights.dtype not in _SUPPORTED:
        raise SpecAttnError(
            f"nucleus kernel got dtype {weights.dtype}: use float32, float16 or bfloat16 weights "
            "(float64 goes to specattn.core.nucleus_reference.nucleus_threshold_reference)"
        )
    length = weights.shape[-1]
    if length == 0:
        raise SpecAttnError("nucleus_threshold got rows of length 0: every row needs at least one key")
    w = weights.detach().reshape(-1, length)
    if w.stride(-1) != 1:
        w = w.contiguous()
    return w


def _long_path(w, pb, p_one, theta, tkey, cmax, n_chunks, chunk=1):
    """The four launches of the long-row path as (name, thunk) pairs (buffers allocated here)."""
    rows, length = w.shape
    dev = w.device
    nseg = triton.cdiv(length, SEG)
    f64 = dict(dtype=torch.float64, device=dev)
    i32 = dict(dtype=torch.int32, device=dev)
    ssum = torch.empty((rows, nseg), **f64)
    smax = torch.empty((rows, nseg), **i32)
    smin = torch.empty((rows, nseg), **i32)
    hist = torch.empty((rows, nseg, NBINS), **i32)
    dec_i = torch.empty((rows, 4), **i32)
    dec_f = torch.empty(rows, **f64)
    cnt = torch.empty(rows, **i32)
    nseg_c = triton.cdiv(length, SEG_COMPACT)
    above = torch.empty((rows, nseg_c), **f64)
    cand = torch.empty((rows, CAND_CAP), **i32)
    scratch = torch.empty((rows, CT_FINISH), **i32)
    sb = max(triton.next_power_of_2(nseg), 2)
    sbc = max(triton.next_power_of_2(nseg_c), 2)
    fused = cmax is not None
    stride = w.stride(0)
    return [
        ("stats+histogram", lambda: _seg_stats_kernel[(rows, nseg)](
            w, stride, length, nseg, ssum, smax, smin, hist, cmax if fused else tkey, n_chunks,
            SEGB=SEG, CHUNK=chunk if fused else 1, WRITE_CMAX=fused, NB=NBINS, SHIFT=BIN_SHIFT,
            num_warps=16)),
        ("decide", lambda: _decide_kernel[(rows,)](
            length, nseg, pb, ssum, smax, smin, hist, dec_i, dec_f, cnt, theta, tkey,
            SB=sb, NB=NBINS, SHIFT=BIN_SHIFT, CAP=CAND_CAP, P_ONE=p_one, num_warps=4)),
        ("compact", lambda: _compact_kernel[(rows, nseg_c)](
            w, stride, length, nseg_c, dec_i, above, cnt, cand, SEGB=SEG_COMPACT, CAP=CAND_CAP, num_warps=8)),
        ("finish", lambda: _finish_kernel[(rows,)](
            w, stride, length, nseg_c, dec_i, dec_f, above, cnt, cand, theta, tkey, scratch,
            SB=sbc, CAP=CAND_CAP, TILE=FINISH_TILE, MAXIT=MAX_IT, CT=CT_FINISH, num_warps=16)),
    ]


def _prefer_radix(rows: int, length: int) -> bool:
    """The faster backend for a shape, from the H200 measurements in docs/benchmarks.md: the radix
    kernel (one block per row, ~10 us of dependent steps per block) everywhere except many short rows
    (>= 1024 rows of <= 4096 keys), where the on-chip Triton bisection keeps more rows in flight."""
    return not (length <= 4096 and rows >= 1024)


def _use_radix(w: torch.Tensor) -> bool:
    """Whether the CUDA radix kernel computes the thresholds of ``w`` (see ``BACKEND``)."""
    from . import interpreting, radix

    if BACKEND not in BACKENDS:
        raise SpecAttnError(f"SPECATTN_NUCLEUS={BACKEND!r} is not one of {', '.join(BACKENDS)}")
    rows, length = w.shape
    if BACKEND == "triton" or interpreting() or length > radix.MAX_LENGTH:
        return False
    if BACKEND == "auto" and not _prefer_radix(rows, length):
        return False
    ok = radix.available(w.device.index or 0)
    if BACKEND == "cuda" and not ok:
        raise SpecAttnError("SPECATTN_NUCLEUS=cuda needs a CUDA GPU and nvcc (set CUDA_HOME); "
                            "use SPECATTN_NUCLEUS=triton or auto")
    return ok


def _thresholds(w: torch.Tensor, p: float, chunk: int | None = None):
    """Thresholds of the rows of ``w`` (rows, L): (theta float64, theta key int32, chunk max keys or None)."""
    rows, length = w.shape
    dev = w.device
    theta = torch.empty(rows, dtype=torch.float64, device=dev)
    tkey = torch.empty(rows, dtype=torch.int32, device=dev)
    n_chunks = math.ceil(length / chunk) if chunk else 0
    cmax = torch.empty((rows, n_chunks), dtype=torch.int32, device=dev) if chunk else None
    if rows == 0:
        return theta, tkey, cmax
    p_one = float(p) == 1.0
    pb = _p_bits(p)
    pow2_chunk = chunk is not None and chunk & (chunk - 1) == 0
    dummy = tkey  # placeholder pointer when no chunk max is written
    if _use_radix(w):
        from . import radix

        fused = radix.thresholds(w, p, theta, tkey, cmax, chunk or 0)
    elif length <= ONCHIP_MAX:
        block = max(triton.next_power_of_2(length), 256)  # few compiled variants
        fused = chunk is not None and pow2_chunk and chunk <= block
        warps, precomp = _onchip_config(block)
        ct = CT_ONCHIP if ONCHIP_TWO_PHASE and block > 2 * CT_ONCHIP else block
        scratch = torch.empty((rows, ct), dtype=torch.int32, device=dev) if ct < block else dummy
        _onchip_kernel[(rows,)](
            w, w.stride(0), length, pb, theta, tkey, cmax if fused else dummy, n_chunks, scratch,
            BLOCK=block, CHUNK=chunk if fused else 1, WRITE_CMAX=fused,
            P_ONE=p_one, PRECOMP=precomp, MAXIT=MAX_IT, CT=ct, num_warps=warps,
        )
    else:
        fused = chunk is not None and pow2_chunk and chunk <= SEG
        for _, launch in _long_path(w, pb, p_one, theta, tkey, cmax if fused else None, n_chunks, chunk):
            launch()
    if chunk is not None and not fused:
        cb = 64
        cp = max(triton.next_power_of_2(chunk), 2)
        _chunk_max_kernel[(rows, triton.cdiv(n_chunks, cb))](
            w, w.stride(0), length, cmax, n_chunks, chunk, CB=cb, CP=cp, num_warps=4,
        )
    return theta, tkey, cmax


def nucleus_threshold(weights: torch.Tensor, p: float) -> torch.Tensor:
    """``(..., L)`` weights -> ``(...)`` float64 thresholds; same contract as :func:`specattn.methods.nucleus.nucleus_threshold`."""
    from ...core.nucleus_reference import check_p, nucleus_threshold_reference

    p = check_p(p)
    if weights.dtype == torch.float64:
        return nucleus_threshold_reference(weights, p)
    w = _rows(weights)
    theta, _, _ = _thresholds(w, p)
    return theta.reshape(weights.shape[:-1])


def nucleus_mask(weights: torch.Tensor, p: float) -> torch.Tensor:
    """``(..., L)`` bool nucleus mask (the kernel's threshold, then one comparison pass)."""
    theta = nucleus_threshold(weights, p)
    return weights >= theta.unsqueeze(-1).to(weights.dtype) if weights.dtype != torch.float64 else (
        weights >= theta.unsqueeze(-1)
    )


def nucleus_chunk_mask(weights: torch.Tensor, p: float, chunk_size: int, group: int = 1) -> torch.Tensor:
    """Fused nucleus -> OR over groups of ``group`` consecutive rows -> chunk pooling.

    ``(..., R, L)`` -> ``(..., ceil(R / group), ceil(L / chunk_size))`` bool; same result as
    :func:`specattn.methods.nucleus.nucleus_chunk_mask`. A chunk is kept when its largest weight reaches the
    row's threshold, which is exactly "some key of the chunk is in the nucleus".
    """
    from ...core.nucleus_reference import check_p
    from ...core.nucleus_reference import nucleus_chunk_mask_reference as reference

    p = check_p(p)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise SpecAttnError(f"chunk_size={chunk_size!r} must be a positive integer (e.g. chunk_size=16)")
    if not isinstance(group, int) or group < 1:
        raise SpecAttnError(f"gamma={group!r} must be a positive integer (e.g. gamma=4)")
    if weights.dim() < 2:
        raise SpecAttnError(f"nucleus_chunk_mask needs (..., R, L) weights, got shape {tuple(weights.shape)}")
    if weights.dtype == torch.float64:
        return reference(weights.cpu(), p, chunk_size, group).to(weights.device)
    lead = weights.shape[:-2]
    r = weights.shape[-2]
    w = _rows(weights)
    _, tkey, cmax = _thresholds(w, p, chunk=chunk_size)
    n_chunks = cmax.shape[1]
    n_groups = math.ceil(r / group)
    batch = w.shape[0] // r if r else 0
    out = torch.empty((batch * n_groups, n_chunks), dtype=torch.uint8, device=w.device)
    if out.numel():
        bc = 256
        _chunk_union_kernel[(batch * n_groups, triton.cdiv(n_chunks, bc))](
            cmax, tkey, out, r, n_groups, n_chunks, group, BLOCK_C=bc, num_warps=4,
        )
    return out.view(torch.bool).reshape(*lead, n_groups, n_chunks)


def chunk_thresholds(weights: torch.Tensor, p: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``weights (rows, L)``: the nucleus threshold's key ``(rows,)`` int32 and each chunk's
    largest key ``(rows, ceil(L / chunk_size))`` int32 (keys: the float bit patterns). A chunk holds a
    nucleus key iff its largest key >= the threshold key. No host synchronisation."""
    _, tkey, cmax = _thresholds(_rows(weights), p, chunk=chunk_size)
    return tkey, cmax
