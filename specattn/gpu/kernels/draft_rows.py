"""The draft's head-aggregated attention rows, recomputed from saved queries and log-sum-exps (Triton).

SpecAttn selects from the draft's attention probabilities, averaged (or maxed) over the draft's query
heads. Writing every head's probabilities would cost ``Hq`` rows of memory traffic per draft row, so the
decoder keeps only what it needs to recompute them: each draft row's rotated query and, from the draft's
own attention kernel, its base-2 log-sum-exp (:func:`specattn.gpu.attention.sparse.dense_verify`'s
``lse_out``). After the draft's ``gamma`` forwards, one launch computes every draft row of every needed
draft layer from the keys in the draft's cache, reading each key once for all rows and heads:

    out[s, b, r, k] = agg_h 2^(q[s, b, h, r] . key[layers[s], b, h // G, k] * sm_scale * log2 e - lse[s, b, h, r])

for ``k < first[b] + r`` (row r attends keys ``[0, first[b] + r)``), else 0; ``agg`` the mean (or max) over
the ``Hq = G * Hkv`` query heads. Only the aggregated rows are written. Under a draft read policy the launch
also zeroes each row at the prefix keys its forward did not read (:class:`specattn.gpu.draft_rows.RowReads`),
so the decoder's rows need no second pass, and skips the key blocks no row of the launch keeps (a windowed or reused
read set costs about its own keys, not the cache's). A launch may hold the step's rows from ``reads.row0`` on (the
``first_*`` policies compute row 0 in the draft phase, right after forward 0).

Grid ``(S * B, cdiv(W, block_n * blocks))``: a program walks ``blocks`` consecutive blocks of ``block_n`` keys
(``tl.range`` software-pipelined over ``stages``), loads each block once per KV head and scores it against the
G x R query rows of that head group in one ``tl.dot``; exponentials in float32.
:class:`~specattn.gpu.kernels.rows_config.RowsConfig` holds those settings (its default: measured on the H200).
Use it through :func:`specattn.gpu.draft_rows.draft_rows` (shape checks, torch fallback).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rows_config import ONE_BLOCK, PIPELINED, RowsConfig, default_rows_config
from .sparse_attn import LOG2E, pow2


@triton.jit
def _block_rows(kb, qb, lb, keys, k_ok, vis, g, r, row_ok, d, skh, skn, sqh, sqr, slh, qk_scale, inv_heads,
                HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr,
                MAX: tl.constexpr):
    """One block of keys (those with ``k_ok``) scored against every row of every head, aggregated: ``(RP, BLOCK)``."""
    acc = tl.zeros((RP, BLOCK), tl.float32)
    for h in tl.static_range(HKV):
        k = tl.load(kb + h * skh + keys[:, None] * skn + d[None, :], mask=k_ok[:, None], other=0.0)
        hq = h * G + g
        q = tl.load(qb + hq[:, None] * sqh + r[:, None] * sqr + d[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(lb + hq * slh + r, mask=row_ok, other=0.0)
        p = tl.where(vis, tl.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None]), 0.0)
        p3 = tl.reshape(p, (GP, RP, BLOCK))
        if MAX:
            acc = tl.maximum(acc, tl.max(p3, 0))
        else:
            acc += tl.sum(p3, 0)
    if not MAX:
        acc = acc * inv_heads
    return acc


@triton.jit
def _rows_kernel(
    q_ptr, lse_ptr, k_ptr, layer_ptr, first_ptr, out_ptr, read_ptr, lo_ptr, policy_ptr, qk_scale, inv_heads, W, B,
    NC, C, srs, srb, sqs, sqb, sqh, sqr, sls, slb, slh, skl, skb, skh, skn, sos, sob, sor,
    HKV: tl.constexpr, G: tl.constexpr, R: tl.constexpr, GP: tl.constexpr, RP: tl.constexpr, D: tl.constexpr,
    BLOCK: tl.constexpr, NBLK: tl.constexpr, STAGES: tl.constexpr, MAX: tl.constexpr, MASKED: tl.constexpr,
    DENSE_ROWS: tl.constexpr, ROW0: tl.constexpr,
):
    sb = tl.program_id(0)
    s = sb // B
    b = (sb - s * B).to(tl.int64)
    layer = tl.load(layer_ptr + s).to(tl.int64)
    first = tl.load(first_ptr + b)
    mi = tl.arange(0, GP * RP)  # tile row = g * RP + r
    g = mi // RP
    r = mi - g * RP
    row_ok = (g < G) & (r < R)
    d = tl.arange(0, D)
    rr = tl.arange(0, RP)
    kb = k_ptr + layer * skl + b * skb
    qb = q_ptr + s * sqs + b * sqb
    lb = lse_ptr + s * sls + b * slb
    ob = out_ptr + s * sos + b * sob
    for i in tl.range(0, NBLK, num_stages=STAGES):
        keys = (tl.program_id(1) * NBLK + i) * BLOCK + tl.arange(0, BLOCK)
        vis = (keys[None, :] < (first + r)[:, None]) & row_ok[:, None]
        k_ok = keys < first + R - 1
        if MASKED:  # the draft read policies: zero at the prefix keys each row's forward did not read
            chunk = keys // C
            read = tl.load(read_ptr + s * srs + b * srb + chunk, mask=chunk < NC, other=0) != 0
            lo = tl.load(lo_ptr + b)
            row = rr + ROW0  # the rows' indices among the step's gamma rows
            own = (chunk[None, :] * C < lo + row[:, None]) & (chunk[None, :] * C + C > lo)
            tail = tl.where(row == 0, lo - 1, lo + row)
            keep = read[None, :] | own | (keys[None, :] >= tail[:, None]) | (row[:, None] < DENSE_ROWS)
            keep = keep | (tl.load(policy_ptr + s) == 0)
            k_ok = k_ok & (tl.max((keep & (rr < R)[:, None]).to(tl.int32), 0) > 0)  # a key no row keeps: not loaded
            acc = tl.zeros((RP, BLOCK), tl.float32)
            if tl.max(k_ok.to(tl.int32), 0) > 0:  # a block no row keeps is skipped whole (its rows are zeros)
                acc = _block_rows(kb, qb, lb, keys, k_ok, vis, g, r, row_ok, d, skh, skn, sqh, sqr, slh, qk_scale,
                                  inv_heads, HKV, G, GP, RP, BLOCK, MAX)
            acc = tl.where(keep, acc, 0.0)
        else:
            acc = _block_rows(kb, qb, lb, keys, k_ok, vis, g, r, row_ok, d, skh, skn, sqh, sqr, slh, qk_scale, inv_heads,
                              HKV, G, GP, RP, BLOCK, MAX)
        tl.store(ob + rr[:, None] * sor + keys[None, :], acc, mask=(rr[:, None] < R) & (keys[None, :] < W))


def tile_rows(group: int, rows: int) -> tuple[int, int]:
    """``(GP, RP)``: a program's query tile pads the group's heads and the draft rows to powers of two, with at
    least 16 tile rows in all (``tl.dot``)."""
    rp = pow2(rows)
    return max(pow2(group), 16 // rp if rp < 16 else 1), rp


def launch(q: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor, layers: torch.Tensor, first: torch.Tensor,
           out: torch.Tensor, sm_scale: float, agg: str, config: RowsConfig | None = None, reads=None) -> torch.Tensor:
    """One launch on validated tensors: ``q (S, B, Hq, R, D)`` fp16/bf16 (unit stride along D), ``lse (S, B,
    Hq, R)`` float32 (unit stride along R), ``keys (NL, B, Hkv, cap, D)`` (unit stride along D), ``layers
    (S,)`` and ``first (B,)`` int32, ``out (S, B, R, W)`` float32 (unit stride along W); ``reads`` a
    :class:`specattn.gpu.draft_rows.RowReads` (None: every key each row attends); ``config`` None: the default
    launch for the draft's KV heads and the mask (:func:`~specattn.gpu.kernels.rows_config.default_rows_config`)."""
    s, b, hq, r, d = q.shape
    hkv = keys.shape[2]
    g = hq // hkv
    gp, rp = tile_rows(g, r)
    w = out.shape[3]
    c = config or default_rows_config(hkv, reads is not None)
    if reads is None:
        read, lo, policy, nc, chunk, srs, srb, dense_rows, row0 = first, first, first, 0, 1, 0, 0, 0, 0
    else:
        read, lo, policy = reads.chunks.view(torch.uint8), reads.lo, reads.policy.view(torch.uint8)
        nc, chunk, dense_rows, row0 = read.shape[2], reads.chunk_size, reads.dense_rows, reads.row0
        srs, srb = (read.stride(0) if read.shape[0] > 1 else 0), read.stride(1)
    _rows_kernel[(s * b, triton.cdiv(w, c.block_n * c.blocks))](
        q, lse, keys, layers, first, out, read, lo, policy, float(sm_scale) * LOG2E, 1.0 / hq, w, b, nc, chunk, srs,
        srb,
        q.stride(0), q.stride(1), q.stride(2), q.stride(3), lse.stride(0), lse.stride(1), lse.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2), keys.stride(3), out.stride(0), out.stride(1), out.stride(2),
        HKV=hkv, G=g, R=r, GP=gp, RP=rp, D=d, BLOCK=c.block_n, NBLK=c.blocks, STAGES=c.stages, MAX=agg == "max",
        MASKED=reads is not None, DENSE_ROWS=dense_rows, ROW0=row0, num_warps=c.warps,
    )
    return out


# the launches scripts/gpu/profile_rows.py times at the real pair's shapes (the real pair's default first, the one-block
# launch second)
SWEEP = (PIPELINED, ONE_BLOCK, RowsConfig(64, 4, 4, 2), RowsConfig(128, 2, 4, 2), RowsConfig(128, 4, 8, 2),
         RowsConfig(128, 1, 8, 1), RowsConfig(256, 2, 8, 2), RowsConfig(64, 16, 4, 3))


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`): the real pair's draft (14 heads over 2 KV heads, head dim
    64, gamma 4 rows) with mean and max at every launch of :data:`SWEEP`, and a Llama-3.2-1B-like draft (32 over
    8, 64) at its default launch."""
    ok = True
    cases = [("bf16", 2, 7, 4, agg, c, False, 0, 0) for agg in ("mean", "max") for c in SWEEP]
    cases += [("bf16", 2, 7, 4, "mean", PIPELINED, True, 1, 0), ("bf16", 2, 7, 4, "max", PIPELINED, True, 0, 0),
              ("bf16", 2, 7, 3, "mean", PIPELINED, True, 1, 1), ("fp16", 8, 4, 5, "mean", default_rows_config(8), False,
                                                                   0, 0)]
    for dt, hkv, g, r, agg, c, masked, dense_rows, row0 in cases:
        gp, rp = tile_rows(g, r)
        ints = ["W", "B", "NC", "C", "srs", "srb", "sqs", "sqb", "sqh", "sqr", "sls", "slb", "slh", "skl", "skb", "skh",
                "skn", "sos", "sob", "sor"]
        ok &= compile_one(f"draft_rows {dt} Hkv={hkv} G={g} R={r} {agg} {c.block_n}x{c.blocks} w{c.warps} "
                          f"s{c.stages}{' masked' if masked else ''}{f' from row {row0}' if row0 else ''}", _rows_kernel, {
            "q_ptr": f"*{dt}", "lse_ptr": "*fp32", "k_ptr": f"*{dt}", "layer_ptr": "*i32", "first_ptr": "*i32",
            "out_ptr": "*fp32", "read_ptr": "*u8", "lo_ptr": "*i64", "policy_ptr": "*u8", "qk_scale": "fp32",
            "inv_heads": "fp32", **{name: "i32" for name in ints}},
            {"HKV": hkv, "G": g, "R": r, "GP": gp, "RP": rp, "D": 64, "BLOCK": c.block_n, "NBLK": c.blocks,
             "STAGES": c.stages, "MAX": agg == "max", "MASKED": masked, "DENSE_ROWS": dense_rows, "ROW0": row0},
            c.warps)
    return ok
