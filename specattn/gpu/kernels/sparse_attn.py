"""Split-KV sparse verification attention over device-side chunk lists (Triton, two launches).

Layout (HF's): ``q (B, Hq, T, D)``; ``k, v (B, Hkv, K_cap, D)`` (views with any strides, unit stride
along D); ``lengths (B,)`` int32, keys ``[0, lengths[b])`` valid, the step's own T keys the last T of
them, so sequence b's prefix is ``[0, P_b)``, ``P_b = lengths[b] - T``; ``chunk_ids (B, H_sel, cap)``
and ``n_chunks (B, H_sel)`` int32, H_sel = 1 (one list for all heads) or Hkv (one per KV head); chunk c
covers keys ``[c*C, min((c+1)*C, P_b))``. Output ``(B, T, Hq, D)``. Semantics:
:func:`specattn.visibility.visible_keys` (query row t of sequence b sees the listed prefix chunks and
the step's keys ``P_b .. P_b + t``); ids outside ``[0, ceil(P_b / C))`` select nothing.

Nothing about the selection reaches the host: the grid is fixed by the shapes and the capacity, and
each program reads its share of the list on the device, so the launch can be captured in a CUDA graph.

1. ``_split_kernel``, grid ``(S, B * Hkv)``: program (s, b, h) attends the G = Hq/Hkv query heads x T
   rows of KV head h (one ``(G*T, D)`` tile, so each selected chunk is read once for all its query
   heads) over entries ``[s*per, min(n, (s+1)*per))`` of its list, ``per = max(per_min,
   ceil(n / S))`` rounded up to whole blocks of ``CPB`` chunks, ``n`` read on the device; it writes
   its normalised output and base-2 log-sum-exp (float32) to a workspace. Splits past
   ``ceil(n / per)`` do nothing. ``DENSE`` lists every prefix chunk implicitly (the dense baseline:
   the same kernel, no list read).
2. ``_merge_kernel``, grid ``(B * Hq * T,)``: one query row attends the step's own keys causally
   (float32) and merges that with the row's active split partials through their log-sum-exps.

Softmax in float32 (base 2, ``sm_scale * log2 e`` folded into the scores); P @ V on the tensor cores
with P rounded to the input dtype (as FlashAttention does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
NEG_INIT = tl.constexpr(-1.0e30)  # running max before any key: finite, so fully masked blocks give exp2(-inf) = 0, not NaN


@dataclass(frozen=True)
class SplitConfig:
    """Tile and split parameters of the split kernel (defaults measured on the H200, docs/benchmarks.md).

    block_n: keys per inner iteration (a whole number of chunks, power of two); warps, stages: Triton's
    ``num_warps`` / ``num_stages``; ctas_per_sm: the grid aims at this many split programs per SM
    (``S = ceil(ctas_per_sm * SMs / (B * Hkv))``); min_chunks: fewest chunks a split program takes.
    """

    block_n: int = 64
    warps: int = 4
    stages: int = 3
    ctas_per_sm: int = 2
    min_chunks: int = 16


@triton.jit
def _plan(len_ptr, n_ptr, b, T, C, cap, S, per_min, CPB: tl.constexpr, DENSE: tl.constexpr):
    """(prefix length, listed chunks n, entries per split, active splits) of one (b, list)."""
    prefix = tl.load(len_ptr + b) - T
    if DENSE:
        n = (tl.maximum(prefix, 0) + C - 1) // C
    else:
        n = tl.minimum(tl.maximum(tl.load(n_ptr), 0), cap)
    per = tl.maximum(per_min, ((n + S - 1) // S + CPB - 1) // CPB * CPB)
    return prefix, n, per, (n + per - 1) // per


@triton.jit
def _chunk_block(q, kb, vb, skn, svn, ids, e0, end, prefix, C, m_i, l_i, acc, qk_scale,
                 D: tl.constexpr, CP: tl.constexpr, CPB: tl.constexpr, DENSE: tl.constexpr):
    """Online-softmax update with the keys of list entries ``[e0, min(e0 + CPB, end))``."""
    lanes = tl.arange(0, CPB * CP)
    e = e0 + lanes // CP
    w = lanes % CP
    e_ok = e < end
    if DENSE:
        cid = e
    else:
        cid = tl.load(ids + e, mask=e_ok, other=-1)
    key = cid * C + w
    ok = e_ok & (w < C) & (key >= 0) & (key < prefix)
    d = tl.arange(0, D)
    k = tl.load(kb + key[:, None] * skn + d[None, :], mask=ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k)) * qk_scale
    s = tl.where(ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(vb + key[:, None] * svn + d[None, :], mask=ok[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit(do_not_specialize=["T", "cap", "S", "per_min"])
def _split_kernel(
    q_ptr, k_ptr, v_ptr, len_ptr, ids_ptr, n_ptr, po_ptr, pl_ptr,
    qk_scale, T, C, cap, S, per_min, HKV, G,
    sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sib, sih, snb, snh,
    D: tl.constexpr, M: tl.constexpr, CP: tl.constexpr, CPB: tl.constexpr,
    DENSE: tl.constexpr, LOOP_FOR: tl.constexpr, STAGES: tl.constexpr,
):
    s = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // HKV).to(tl.int64)
    h = (bh % HKV).to(tl.int64)
    prefix, n, per, n_act = _plan(len_ptr, n_ptr + b * snb + h * snh, b, T, C, cap, S, per_min, CPB, DENSE)
    active = s < n_act
    mi = tl.arange(0, M)
    g = mi // T
    t = mi - g * T
    row_ok = (mi < G * T) & active
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * sqb + (h * G + g)[:, None] * sqh + t[:, None] * sqt + d[None, :],
                mask=row_ok[:, None], other=0.0)
    kb = k_ptr + b * skb + h * skh
    vb = v_ptr + b * svb + h * svh
    ids = ids_ptr + b * sib + h * sih
    m_i = tl.full((M,), NEG_INIT, tl.float32)
    l_i = tl.zeros((M,), tl.float32)
    acc = tl.zeros((M, D), tl.float32)
    start = s * per
    end = tl.minimum(n, start + per)
    if LOOP_FOR:  # compiled: a pipelined loop
        for e0 in tl.range(start, end, CPB, num_stages=STAGES):
            m_i, l_i, acc = _chunk_block(q, kb, vb, skn, svn, ids, e0, end, prefix, C, m_i, l_i, acc, qk_scale,
                                         D, CP, CPB, DENSE)
    else:  # the CPU interpreter cannot range over run-time scalars
        e0 = start
        while e0 < end:
            m_i, l_i, acc = _chunk_block(q, kb, vb, skn, svn, ids, e0, end, prefix, C, m_i, l_i, acc, qk_scale,
                                         D, CP, CPB, DENSE)
            e0 += CPB
    lse = tl.where(l_i > 0, m_i + tl.log2(tl.maximum(l_i, 1e-30)), float("-inf"))
    o = acc / tl.maximum(l_i, 1e-30)[:, None]
    slot = bh.to(tl.int64) * S + s
    tl.store(po_ptr + (slot * M + mi)[:, None] * D + d[None, :], o, mask=row_ok[:, None])
    tl.store(pl_ptr + slot * M + mi, lse, mask=row_ok)


@triton.jit(do_not_specialize=["T", "cap", "S", "per_min"])
def _merge_kernel(
    q_ptr, k_ptr, v_ptr, len_ptr, n_ptr, po_ptr, pl_ptr, out_ptr,
    qk_scale, T, C, cap, S, per_min, HQ, G,
    sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, snb, snh, sob, sot, soh,
    D: tl.constexpr, M: tl.constexpr, TP: tl.constexpr, SB: tl.constexpr, CPB: tl.constexpr,
    DENSE: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid % T
    bq = pid // T
    hq = bq % HQ
    b = (bq // HQ).to(tl.int64)
    h = (hq // G).to(tl.int64)
    hkv = HQ // G
    prefix, n, per, n_act = _plan(len_ptr, n_ptr + b * snb + h * snh, b, T, C, cap, S, per_min, CPB, DENSE)
    d = tl.arange(0, D)
    # the step's own keys P .. P + t, exactly in float32
    qv = tl.load(q_ptr + b * sqb + hq * sqh + t * sqt + d).to(tl.float32)
    j = tl.arange(0, TP)
    key = prefix + j
    ok = (j <= t) & (key >= 0)
    k = tl.load(k_ptr + b * skb + h * skh + key[:, None] * skn + d[None, :], mask=ok[:, None], other=0.0)
    sc = tl.sum(k.to(tl.float32) * qv[None, :], 1) * qk_scale
    sc = tl.where(ok, sc, float("-inf"))
    m = tl.max(sc, 0)
    p = tl.exp2(sc - m)
    l = tl.sum(p, 0)
    v = tl.load(v_ptr + b * svb + h * svh + key[:, None] * svn + d[None, :], mask=ok[:, None], other=0.0)
    acc = tl.sum(p[:, None] * v.to(tl.float32), 0)  # unnormalised, scale 2^m
    # merge the split partials (normalised outputs with base-2 lse) of row (g, t) of KV head h
    row = (hq - h * G) * T + t
    base = (b * hkv + h) * S
    sb = tl.arange(0, SB)
    s0 = tl.full((), 0, tl.int32)
    while s0 < n_act:
        si = s0 + sb
        s_ok = si < n_act
        lse = tl.load(pl_ptr + (base + si) * M + row, mask=s_ok, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, 0))
        w = tl.exp2(lse - m_new)
        po = tl.load(po_ptr + ((base + si) * M + row)[:, None] * D + d[None, :], mask=s_ok[:, None], other=0.0)
        alpha = tl.exp2(m - m_new)
        l = l * alpha + tl.sum(w, 0)
        acc = acc * alpha + tl.sum(w[:, None] * po, 0)
        m = m_new
        s0 += SB
    tl.store(out_ptr + b * sob + t * sot + hq * soh + d, (acc / l).to(out_ptr.dtype.element_ty))


def pow2(x: int, least: int = 1) -> int:
    """Smallest power of two >= max(x, least)."""
    return max(triton.next_power_of_2(max(int(x), 1)), least)


@dataclass
class Workspace:
    """Split partials of one launch shape: outputs ``(B*Hkv*S, M, D)`` and lse ``(B*Hkv*S, M)`` float32."""

    o: torch.Tensor
    lse: torch.Tensor
    splits: int


def rows_tile(group: int, n_queries: int) -> int:
    """Rows of a split program's query tile: G*T padded to a power of two, at least 16 (tl.dot)."""
    return pow2(group * n_queries, 16)


def make_workspace(batch: int, num_kv_heads: int, group: int, n_queries: int, head_dim: int, splits: int,
                   device) -> Workspace:
    m = rows_tile(group, n_queries)
    slots = batch * num_kv_heads * splits
    return Workspace(torch.empty((slots, m, head_dim), dtype=torch.float32, device=device),
                     torch.empty((slots, m), dtype=torch.float32, device=device), splits)


def num_splits(batch: int, num_kv_heads: int, capacity: int, config: SplitConfig, device) -> int:
    """Split programs per (sequence, KV head): enough for ``ctas_per_sm`` programs per SM, no more than
    the capacity can feed (decided on the host from shapes only)."""
    from . import interpreting

    sms = 4 if interpreting() else torch.cuda.get_device_properties(device).multi_processor_count
    want = -(-config.ctas_per_sm * sms // (batch * num_kv_heads))
    return max(1, min(want, -(-capacity // max(config.min_chunks, 1))))


def launch(q, k, v, lengths, chunk_ids, n_chunks, chunk_size: int, sm_scale: float, out: torch.Tensor,
           workspace: Workspace, capacity: int, config: SplitConfig, dense: bool) -> torch.Tensor:
    """Both launches on validated tensors (see :func:`specattn.gpu.attention.sparse.sparse_verify`)."""
    from . import interpreting

    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    m = rows_tile(g, t)
    cp = pow2(chunk_size)
    cpb = max(1, config.block_n // cp)
    s = workspace.splits
    per_min = max(1, config.min_chunks)
    ids = chunk_ids if not dense else lengths  # unused when dense
    sib, sih = (chunk_ids.stride(0), chunk_ids.stride(1) if chunk_ids.shape[1] > 1 else 0) if not dense else (0, 0)
    nn = n_chunks if not dense else lengths
    snb, snh = (n_chunks.stride(0), n_chunks.stride(1) if n_chunks.shape[1] > 1 else 0) if not dense else (0, 0)
    qk_scale = float(sm_scale) * LOG2E
    interp = interpreting()
    _split_kernel[(s, b * hkv)](
        q, k, v, lengths, ids, nn, workspace.o, workspace.lse,
        qk_scale, t, chunk_size, capacity, s, per_min, hkv, g,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), sib, sih, snb, snh,
        D=d, M=m, CP=cp, CPB=cpb, DENSE=dense, LOOP_FOR=not interp, STAGES=config.stages,
        num_warps=config.warps,
    )
    _merge_kernel[(b * hq * t,)](
        q, k, v, lengths, nn, workspace.o, workspace.lse, out,
        qk_scale, t, chunk_size, capacity, s, per_min, hq, g,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), snb, snh, out.stride(0), out.stride(1), out.stride(2),
        D=d, M=m, TP=pow2(t, 2), SB=16, CPB=cpb, DENSE=dense, num_warps=2 if d <= 128 else 4,
    )
    return out


# arguments that are multiples of 16 for contiguous HF caches (the launcher specialises on that)
ALIGNED = ("q_ptr", "k_ptr", "v_ptr", "len_ptr", "ids_ptr", "n_ptr", "po_ptr", "pl_ptr", "C", "sqb", "sqh", "skb",
           "skh", "skn", "svb", "svh", "svn", "sib")


def _aot_check(compile_one) -> bool:
    ok = True
    cfg = SplitConfig()
    for dt, g, dim, dense in [("bf16", 4, 128, False), ("bf16", 1, 128, False), ("fp16", 4, 64, False),
                              ("bf16", 4, 128, True)]:
        sig = {"q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "len_ptr": "*i32", "ids_ptr": "*i32",
               "n_ptr": "*i32", "po_ptr": "*fp32", "pl_ptr": "*fp32", "qk_scale": "fp32", "T": "i32", "C": "i32",
               "cap": "i32", "S": "i32", "per_min": "i32", "HKV": "i32", "G": "i32"}
        sig.update({name: "i32" for name in ["sqb", "sqh", "sqt", "skb", "skh", "skn", "svb", "svh", "svn",
                                             "sib", "sih", "snb", "snh"]})
        ok &= compile_one(f"sparse_attn split {dt} G={g} D={dim}{' dense' if dense else ''}", _split_kernel, sig,
                          {"D": dim, "M": rows_tile(g, 5), "CP": 16, "CPB": cfg.block_n // 16, "DENSE": dense,
                           "LOOP_FOR": True, "STAGES": cfg.stages}, cfg.warps, div16=ALIGNED)
    sig = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "len_ptr": "*i32", "n_ptr": "*i32",
           "po_ptr": "*fp32", "pl_ptr": "*fp32", "out_ptr": "*bf16", "qk_scale": "fp32", "T": "i32", "C": "i32",
           "cap": "i32", "S": "i32", "per_min": "i32", "HQ": "i32", "G": "i32"}
    sig.update({name: "i32" for name in ["sqb", "sqh", "sqt", "skb", "skh", "skn", "svb", "svh", "svn", "snb",
                                         "snh", "sob", "sot", "soh"]})
    ok &= compile_one("sparse_attn merge bf16", _merge_kernel, sig,
                      {"D": 128, "M": 32, "TP": 8, "SB": 16, "CPB": 4, "DENSE": False}, 2)
    return ok
