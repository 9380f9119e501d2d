"""Split-KV sparse verification attention over device-side chunk lists (Triton, two launches, or one fused).

Layout (HF's): ``q (B, Hq, T, D)``; ``k, v (B, Hkv, K_cap, D)`` (views with any strides, unit stride
along D); ``lengths (B,)`` int32, keys ``[0, lengths[b])`` valid, the step's own T keys the last T of
them, so sequence b's prefix is ``[0, P_b)``, ``P_b = lengths[b] - T``; ``chunk_ids (B, H_sel, cap)``
and ``n_chunks (B, H_sel)`` int32, H_sel = 1 (one list for all heads) or Hkv (one per KV head); chunk c
covers keys ``[c*C, min((c+1)*C, P_b))``. Output ``(B, T, Hq, D)``. Semantics:
:func:`specattn.core.visibility.visible_keys` (query row t of sequence b sees the listed prefix chunks and
the step's keys ``P_b .. P_b + t``); ids outside ``[0, ceil(P_b / C))`` select nothing.

Nothing about the selection reaches the host: the grid is fixed by the shapes, and each program
finds its share of the work on the device, so the launch can be captured in a CUDA graph.

Work is balanced over the whole batch: the (b, KV head) lists are cut into units of ``CPB`` chunks,
``u_j = ceil(n_j / CPB)`` for list ``j = b * Hkv + h`` (``n_j`` read on the device), laid end to end
(``U = sum u_j``), and program p of the fixed grid of ``P`` programs takes units ``[p*W, (p+1)*W)``,
``W = max(min_units, ceil(U / P))``, whichever lists they belong to (ragged batches and uneven lists
cost no imbalance). With ``SplitConfig.steal`` (a percent) that share of the units is left to run time: program p
first takes static range p of the rest, then dynamic ranges of the tail of the unit order (up to
``SplitConfig.steal_ranges`` a program on average), each the next not taken (an atomic count the merge resets), so
programs that run faster take more (equal shares took 40-53 us at Llama-3.1-8B batch 4, 25% kept:
scripts/gpu/split_timeline.py). A range's partials go to slots ``r + j`` as a program's do without it.

1. ``_split_kernel``, grid ``(P,)``: for each list segment of its range, program p attends the
   G = Hq/Hkv query heads x T rows of that KV head (one ``(G*T, D)`` tile, so each selected chunk is
   read once for all its query heads; each block's chunk ids loaded a block ahead, so the key loads never wait on
   them) and writes the normalised output and base-2 log-sum-exp
   (float32) to workspace slot ``p + j`` (unique: a program's lists are consecutive); program 0 also
   writes every list's unit end (``Workspace.ends``) for the merge. ``DENSE`` lists every prefix chunk
   implicitly (the dense baseline: the same kernel, no list read).
2. ``_merge_kernel``, grid ``(B * Hkv, ceil(G*T / RB))``: a block of RB rows of list j's tile (``MERGE_ROWS``: one
   row, one warp) attends the step's own keys causally (float32)
   and merges that with the partials of the programs that covered its list (slots ``p + j`` for ``p``
   in ``[start_j // W, (end_j - 1) // W]``, from its list's and the last list's unit ends, SB slots at a
   time) through their log-sum-exps.
   Optionally it also writes the last row's (t = T - 1) base-2 log-sum-exp of the scaled scores,
   ``log2 sum_k 2^(q.k * sm_scale * log2 e)`` over the keys the row attends, per (b, query head): the
   normaliser a caller needs to recompute that row's attention probabilities (the decoder's draft rows),
   and optionally that row's query as loaded, so the caller launches no copy of it. With ``SplitConfig.pdl`` (sm_90+)
   it is launched as the split kernel's programmatic dependent: the split signals at its start, merge programs take
   SM room as split programs leave, attend the own keys (inputs only) and wait (``griddepcontrol.wait``) before they
   read the unit ends and partials.

``SplitConfig.fused_merge``: one launch. After storing its partial of list j, a split program takes a ticket
(an atomic add on the list's counter, acquire-release at GPU scope, after a barrier so every thread's stores are
ordered before it); the program that draws the last ticket (the list's programs ``start_j // W .. (end_j - 1) // W``
all arrived) resets the counter for the next launch and merges the whole list, ``FUSED_MERGE_ROWS`` rows at once (the
own keys one at a time, then one partial slot per iteration, pipelined), reading the partials past L1 where the copy
allows it (each slot's log-sum-exps on a 128-byte line of their own: :func:`lse_slot`). A list of no
chunks is merged by program ``j % P``. This saves the merge launch and its dependent loads (the merge was 3.6-6.1 us
of 9-20 us at batch 1, where FlashInfer's merge is 1.7-3.0), at the cost of one program merging a list that step 2
spreads over several.

Softmax in float32 (base 2, ``sm_scale * log2 e`` folded into the scores); P @ V on the tensor cores
with P rounded to the input dtype (as FlashAttention does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .skinny_gemm import last_ticket
from .split_config import SplitConfig

LOG2E = 1.4426950408889634
NEG_INIT = tl.constexpr(-1.0e30)  # running max before any key: finite, so fully masked blocks give exp2(-inf) = 0, not NaN


@triton.jit
def _list_size(len_ptr, n_ptr, j, ok, T, C, cap, HKV, snb, snh, DENSE: tl.constexpr):
    """Prefix length and chunk count n of list ``j`` (a scalar or a vector of lists; 0 chunks where not ``ok``)."""
    b = j // HKV
    prefix = tl.load(len_ptr + b, mask=ok, other=0) - T
    if DENSE:
        n = (tl.maximum(prefix, 0) + C - 1) // C
    else:
        n = tl.minimum(tl.maximum(tl.load(n_ptr + b * snb + (j - b * HKV) * snh, mask=ok, other=0), 0), cap)
    return prefix, tl.where(ok, n, 0)


@triton.jit
def _lists(len_ptr, n_ptr, T, C, cap, BH, HKV, snb, snh, BHP: tl.constexpr, CPB: tl.constexpr,
           DENSE: tl.constexpr):
    """Per list j < BH (padded to BHP): prefix length, chunks n_j, and the end of its units in the
    global unit order (inclusive prefix sum of ceil(n_j / CPB))."""
    j = tl.arange(0, BHP)
    prefix, n = _list_size(len_ptr, n_ptr, j, j < BH, T, C, cap, HKV, snb, snh, DENSE)
    return prefix, n, tl.cumsum((n + CPB - 1) // CPB, 0)


@triton.jit
def _pick(vec, j):
    """Element ``j`` of a 1-D tensor, as a scalar."""
    return tl.sum(tl.where(tl.arange(0, vec.shape[0]) == j, vec, 0), 0)


@triton.jit
def _ranges(total, P, min_units, STEAL: tl.constexpr, STEAL_RANGES: tl.constexpr):
    """The unit order cut into ranges: static ranges ``0 .. P-1`` of ``w0`` units over ``[0, d0)`` (program p takes
    range p), then, with STEAL (percent of the units left to run time), dynamic ranges ``P, P+1, ...`` of ``w1`` units
    over ``[d0, total)`` (at most ``STEAL_RANGES * P``: the fewer, the coarser), each taken by the next program to
    finish its last. Returns ``(w0, d0, w1, ranges)``."""
    if STEAL > 0:
        w0 = tl.maximum(min_units, (total * (100 - STEAL)) // (100 * P))
        d0 = tl.minimum(total, P * w0)
        w1 = tl.maximum((total - d0 + STEAL_RANGES * P - 1) // (STEAL_RANGES * P), 1)
        return w0, d0, w1, P + (total - d0 + w1 - 1) // w1
    else:
        w0 = tl.maximum(min_units, (total + P - 1) // P)
        return w0, total, w0, P


@triton.jit
def _range_of(u, P, w0, d0, w1):
    """The range (:func:`_ranges`) that holds unit ``u``."""
    return tl.where(u < d0, u // w0, P + (u - d0) // w1)


@triton.jit
def _range_units(r, P, w0, d0, w1, total):
    """Units ``[lo, hi)`` of range ``r`` (:func:`_ranges`; empty past the work)."""
    lo = tl.where(r < P, r * w0, d0 + (r - P) * w1)
    return lo, tl.where(r < P, tl.minimum(d0, lo + w0), tl.minimum(total, lo + w1))


@triton.jit
def _block_ids(ids, e0, end, CP: tl.constexpr, CPB: tl.constexpr, DENSE: tl.constexpr):
    """The chunk id of each of the ``CPB * CP`` key lanes of list entries ``[e0, e0 + CPB)`` (-1 past ``end``; the
    entry itself where ``DENSE``: no list is read)."""
    e = e0 + tl.arange(0, CPB * CP) // CP
    if DENSE:
        return e
    return tl.load(ids + e, mask=e < end, other=-1)


@triton.jit
def _chunk_block(q, kb, vb, skn, svn, cid, e0, end, prefix, C, m_i, l_i, acc, qk_scale, sc_row, sc_ok,
                 D: tl.constexpr, CP: tl.constexpr, CPB: tl.constexpr, SCORES: tl.constexpr):
    """Online-softmax update with the keys of list entries ``[e0, min(e0 + CPB, end))``, whose chunk ids per key lane
    ``cid`` (:func:`_block_ids`) the caller loaded a block ahead; ``SCORES``: the scaled scores of the rows with
    ``sc_ok`` stored at ``sc_row`` (a pointer per tile row) + key."""
    lanes = tl.arange(0, CPB * CP)
    e = e0 + lanes // CP
    w = lanes % CP
    e_ok = e < end
    key = cid * C + w
    ok = e_ok & (w < C) & (key >= 0) & (key < prefix)
    d = tl.arange(0, D)
    k = tl.load(kb + key[:, None] * skn + d[None, :], mask=ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k)) * qk_scale
    if SCORES:
        tl.store(sc_row[:, None] + key[None, :], s, mask=sc_ok[:, None] & ok[None, :])
    s = tl.where(ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(vb + key[:, None] * svn + d[None, :], mask=ok[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit(do_not_specialize=["T", "cap", "P", "min_units", "BH"])
def _split_kernel(
    q_ptr, k_ptr, v_ptr, len_ptr, ids_ptr, n_ptr, po_ptr, pl_ptr, ends_ptr, sc_ptr, tk_ptr, cur_ptr, out_ptr,
    lse_ptr, q_out_ptr, qk_scale, T, C, cap, P, min_units, BH, HKV, G,
    sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sib, sih, snb, snh, ssb, ssh, sob, sot, soh, slb, slh, sqob, sqoh,
    D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr, CP: tl.constexpr, CPB: tl.constexpr, BHP: tl.constexpr,
    DENSE: tl.constexpr, LOOP_FOR: tl.constexpr, STAGES: tl.constexpr, SCORES: tl.constexpr,
    FUSED: tl.constexpr, RB: tl.constexpr, TP: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_Q: tl.constexpr,
    PDL: tl.constexpr, STEAL: tl.constexpr, STEAL_RANGES: tl.constexpr,
):
    p = tl.program_id(0)
    if PDL:  # the merge kernel may launch now: its programs take SM room as split programs leave and wait for them
        gdc_launch_dependents()
    prefixes, ns, ends = _lists(len_ptr, n_ptr, T, C, cap, BH, HKV, snb, snh, BHP, CPB, DENSE)
    if not FUSED and p == 0:  # for the merge: each of its programs then loads two ends, not the whole prefix sum
        tl.store(ends_ptr + tl.arange(0, BHP), ends, mask=tl.arange(0, BHP) < BH)
    total = tl.max(ends, 0)
    w0, d0, w1, n_ranges = _ranges(total, P, min_units, STEAL, STEAL_RANGES)
    mi = tl.arange(0, M)
    g = mi // T
    t = mi - g * T
    row_ok = mi < G * T
    d = tl.arange(0, D)
    r = p
    while r < n_ranges:  # program p's static range, then (STEAL) a dynamic one at a time while any is left
        u, u1 = _range_units(r, P, w0, d0, w1, total)
        j = tl.sum((ends <= u).to(tl.int32), 0)  # the first list whose units reach past u
        while u < u1:
            end_j = _pick(ends, j)
            n_j = _pick(ns, j)
            start_j = end_j - (n_j + CPB - 1) // CPB
            prefix = _pick(prefixes, j)
            seg_end = tl.minimum(u1, end_j)
            e_start = (u - start_j) * CPB
            e_end = tl.minimum(n_j, (seg_end - start_j) * CPB)
            b = (j // HKV).to(tl.int64)
            h = (j % HKV).to(tl.int64)
            q = tl.load(q_ptr + b * sqb + (h * G + g)[:, None] * sqh + t[:, None] * sqt + d[None, :],
                        mask=row_ok[:, None], other=0.0)
            kb = k_ptr + b * skb + h * skh
            vb = v_ptr + b * svb + h * svh
            ids = ids_ptr + b * sib + h * sih
            sc_row = sc_ptr + b * ssb + (h * G + g) * ssh  # the last row's scores (SCORES)
            sc_ok = row_ok & (t == T - 1)
            m_i = tl.full((M,), NEG_INIT, tl.float32)
            l_i = tl.zeros((M,), tl.float32)
            acc = tl.zeros((M, D), tl.float32)
            # each block's chunk ids are loaded a block ahead: with the ids loaded in the block that uses them, the
            # software pipeline spent stages past 2 on the ids (one key and one value buffer at any depth) and the key
            # loads waited on the ids (Llama-2-7B batch 16, 25% kept: 710 -> 695 us; H100, twenty-fourth session)
            cid = _block_ids(ids, e_start, e_end, CP, CPB, DENSE)
            if LOOP_FOR:  # compiled: a pipelined loop
                for e0 in tl.range(e_start, e_end, CPB, num_stages=STAGES):
                    cid_next = _block_ids(ids, e0 + CPB, e_end, CP, CPB, DENSE)
                    m_i, l_i, acc = _chunk_block(q, kb, vb, skn, svn, cid, e0, e_end, prefix, C, m_i, l_i, acc,
                                                 qk_scale, sc_row, sc_ok, D, CP, CPB, SCORES)
                    cid = cid_next
            else:  # the CPU interpreter cannot range over run-time scalars
                e0 = e_start
                while e0 < e_end:
                    cid_next = _block_ids(ids, e0 + CPB, e_end, CP, CPB, DENSE)
                    m_i, l_i, acc = _chunk_block(q, kb, vb, skn, svn, cid, e0, e_end, prefix, C, m_i, l_i, acc,
                                                 qk_scale, sc_row, sc_ok, D, CP, CPB, SCORES)
                    cid = cid_next
                    e0 += CPB
            lse = tl.where(l_i > 0, m_i + tl.log2(tl.maximum(l_i, 1e-30)), float("-inf"))
            o = acc / tl.maximum(l_i, 1e-30)[:, None]
            slot = (r + j).to(tl.int64)  # unique: a range's lists are consecutive
            tl.store(po_ptr + (slot * M + mi)[:, None] * D + d[None, :], o, mask=row_ok[:, None])
            tl.store(pl_ptr + slot * LS + mi, lse, mask=row_ok)
            if FUSED:
                if n_j > 0:  # the list's last program to finish merges it (a ticket per range over the list)
                    if last_ticket(tk_ptr + j, (end_j - 1) // w0 - start_j // w0 + 1):
                        _merge_list(j, prefix, start_j, end_j, w0, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, out_ptr,
                                    lse_ptr, q_out_ptr, sc_ptr, qk_scale, T, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb,
                                    svh, svn, sob, sot, soh, slb, slh, sqob, sqoh, ssb, ssh, D, M, LS, RB, TP,
                                    WRITE_LSE, WRITE_Q, SCORES, LOOP_FOR, STAGES)
            u = seg_end
            j += 1
        nxt = n_ranges
        if STEAL > 0:
            if n_ranges > P:  # the next dynamic range not taken yet (the merge resets the count); none: no atomic
                nxt = P + tl.atomic_add(cur_ptr, 1, sem="relaxed", scope="gpu")
        r = nxt
    if FUSED:  # a list of no chunks has no split program: program j % P attends its own keys
        e = p
        while e < BH:
            if _pick(ns, e) == 0:
                _merge_list(e, _pick(prefixes, e), 0, 0, w0, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, out_ptr, lse_ptr,
                            q_out_ptr, sc_ptr, qk_scale, T, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob,
                            sot, soh, slb, slh, sqob, sqoh, ssb, ssh, D, M, LS, RB, TP, WRITE_LSE, WRITE_Q, SCORES,
                            LOOP_FOR, STAGES)
            e += P


@triton.jit
def _own_keys(qv, t, row_ok, b, h, hq, prefix, k_ptr, v_ptr, sc_ptr, qk_scale, T, skb, skh, skn, svb, svh, svn, ssb,
              ssh, D: tl.constexpr, RB: tl.constexpr, TP: tl.constexpr, SCORES: tl.constexpr):
    """Rows ``qv (RB, D)`` float32 (query rows t) attend the step's own keys ``prefix .. prefix + t`` exactly in
    float32, one key at a time (online softmax, 2-D tiles only). Returns the running max, sum and unnormalised output
    ``(RB,), (RB,), (RB, D)``, base 2; with SCORES, stores the last row's score of each own key. The fused launch's way
    (its merging program takes up to ``FUSED_MERGE_ROWS`` rows at once: all keys in one tile cost layout conversions
    through shared memory there, docs/benchmarks.md, twenty-first session)."""
    d = tl.arange(0, D)
    m = tl.full((RB,), NEG_INIT, tl.float32)
    l = tl.zeros((RB,), tl.float32)
    acc = tl.zeros((RB, D), tl.float32)
    for i in tl.static_range(TP):  # own key prefix + i, seen by rows t >= i
        if i < T:
            key = prefix + i
            ok = key >= 0
            kr = tl.load(k_ptr + b * skb + h * skh + key * skn + d, mask=ok & (d < D), other=0.0).to(tl.float32)
            sc = tl.sum(qv * kr[None, :], 1) * qk_scale
            sc = tl.where(ok & (t >= i), sc, float("-inf"))
            if SCORES:  # the last row's score of this key (the split programs stored the prefix's)
                tl.store(sc_ptr + b * ssb + hq * ssh + key, sc, mask=row_ok & (t == T - 1) & ok)
            vr = tl.load(v_ptr + b * svb + h * svh + key * svn + d, mask=ok & (d < D), other=0.0).to(tl.float32)
            m_new = tl.maximum(m, sc)
            alpha = tl.exp2(m - m_new)
            pw = tl.exp2(sc - m_new)
            l = l * alpha + pw
            acc = acc * alpha[:, None] + pw[:, None] * vr[None, :]
            m = m_new
    return m, l, acc


@triton.jit
def _own_keys_tile(qv, t, row_ok, b, h, hq, prefix, k_ptr, v_ptr, sc_ptr, qk_scale, T, skb, skh, skn, svb, svh, svn,
                   ssb, ssh, D: tl.constexpr, TP: tl.constexpr, SCORES: tl.constexpr):
    """:func:`_own_keys` with all own keys at once: one (TP, D) tile of keys and one of values, scores (RB, TP); the
    merge kernel's way (one row a program: no dependent steps, and its products stay inside the row's warp)."""
    d = tl.arange(0, D)
    jj = tl.arange(0, TP)
    key = prefix + jj
    kv_ok = (jj < T) & (key >= 0)
    kt = tl.load(k_ptr + b * skb + h * skh + key[:, None] * skn + d[None, :], mask=kv_ok[:, None],
                 other=0.0).to(tl.float32)
    sc = tl.sum(qv[:, None, :] * kt[None, :, :], 2) * qk_scale
    sc = tl.where(kv_ok[None, :] & (jj[None, :] <= t[:, None]), sc, float("-inf"))
    if SCORES:  # the last row's scores of the step's own keys (the split kernel stored the prefix's)
        tl.store(sc_ptr + b * ssb + hq[:, None] * ssh + key[None, :], sc,
                 mask=(row_ok & (t == T - 1))[:, None] & kv_ok[None, :])
    m = tl.max(sc, 1)
    pr = tl.exp2(sc - m[:, None])
    vt = tl.load(v_ptr + b * svb + h * svh + key[:, None] * svn + d[None, :], mask=kv_ok[:, None],
                 other=0.0).to(tl.float32)
    return m, tl.sum(pr, 1), tl.sum(pr[:, :, None] * vt[None, :, :], 1)


@triton.jit
def _merge_rows(j, row, prefix, n_j, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, ends_ptr, cur_ptr, reset, out_ptr, lse_ptr,
                q_out_ptr, sc_ptr, qk_scale, T, P, min_units, BH, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn,
                sob, sot, soh, slb, slh, sqob, sqoh, ssb, ssh, D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr,
                RB: tl.constexpr, TP: tl.constexpr, SB: tl.constexpr, CPB: tl.constexpr, WRITE_LSE: tl.constexpr,
                WRITE_Q: tl.constexpr, SCORES: tl.constexpr, LOOP_FOR: tl.constexpr, PDL: tl.constexpr,
                STEAL: tl.constexpr, STEAL_RANGES: tl.constexpr):
    """Rows ``row`` (a block of list ``j``'s (G * T)-row tile, row = g * T + t, query head h * G + g) attend the step's
    own keys ``prefix .. prefix + t`` exactly in float32 (inputs only: with PDL, while the split kernel still runs),
    then, once the split's unit ends and partials are there, merge that with the partials of the split programs over
    the list's units ``[start_j, end_j)`` (slots ``r + j`` for the ranges ``r`` that hold them, :func:`_ranges`, SB at
    a time, loaded past L1: each is read once); then the output and the taps. With ``reset`` (one program of the
    launch) it zeroes the split's count of dynamic ranges taken, for the next launch. The merge kernel's body."""
    b = (j // HKV).to(tl.int64)
    h = (j % HKV).to(tl.int64)
    g = row // T
    t = row - g * T
    row_ok = row < G * T
    hq = h * G + g
    d = tl.arange(0, D)
    qv = tl.load(q_ptr + b * sqb + hq[:, None] * sqh + t[:, None] * sqt + d[None, :], mask=row_ok[:, None],
                 other=0.0).to(tl.float32)
    m, l, acc = _own_keys_tile(qv, t, row_ok, b, h, hq, prefix, k_ptr, v_ptr, sc_ptr, qk_scale, T, skb, skh, skn, svb,
                               svh, svn, ssb, ssh, D, TP, SCORES)
    if PDL:  # the split kernel's writes (its unit ends, the partials) are visible past this point
        gdc_wait()
    if STEAL > 0:  # every split program has ended (PDL: the wait above; else the launch order)
        tl.store(cur_ptr, 0, mask=reset)
    total = tl.load(ends_ptr + BH - 1)  # the split kernel's unit ends (its program 0 wrote them)
    w0, d0, w1, _ = _ranges(total, P, min_units, STEAL, STEAL_RANGES)
    end_j = tl.load(ends_ptr + j)
    start_j = end_j - (n_j + CPB - 1) // CPB
    # merge the partials (normalised outputs, base-2 lse) of these rows from the ranges over list j, SB at a time
    s_first = _range_of(start_j, P, w0, d0, w1) + j
    s_end = tl.where(end_j > start_j, _range_of(end_j - 1, P, w0, d0, w1) + j + 1, s_first)
    if LOOP_FOR:  # one round in flight: two were slower at 9 of 11 shapes (H100, twenty-second session)
        for s0 in tl.range(s_first, s_end, SB, num_stages=1):
            m, l, acc = _merge_round(s0, s_end, m, l, acc, po_ptr, pl_ptr, row, row_ok, D, M, LS, SB)
    else:  # the CPU interpreter cannot range over run-time scalars
        s0 = s_first
        while s0 < s_end:
            m, l, acc = _merge_round(s0, s_end, m, l, acc, po_ptr, pl_ptr, row, row_ok, D, M, LS, SB)
            s0 += SB
    tl.store(out_ptr + b * sob + t[:, None] * sot + hq[:, None] * soh + d[None, :],
             (acc / l[:, None]).to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        tl.store(lse_ptr + b * slb + hq * slh, m + tl.log2(l), mask=row_ok & (t == T - 1))
    if WRITE_Q:  # the last row's query as loaded (the decoder's draft rows need it; exact: q's dtype -> fp32 -> back)
        tl.store(q_out_ptr + b * sqob + hq[:, None] * sqoh + d[None, :], qv.to(q_out_ptr.dtype.element_ty),
                 mask=(row_ok & (t == T - 1))[:, None])


@triton.jit
def _merge_round(s0, s_end, m, l, acc, po_ptr, pl_ptr, row, row_ok, D: tl.constexpr, M: tl.constexpr,
                 LS: tl.constexpr, SB: tl.constexpr):
    """Online-softmax update of rows ``row`` with the partials in slots ``s0 .. min(s0 + SB, s_end)`` at once: their
    (SB, RB, D) outputs and (SB, RB) lse, loaded past L1 (each is read once)."""
    si = (s0 + tl.arange(0, SB)).to(tl.int64)
    at = si[:, None] * M + row[None, :]  # (SB, RB)
    ok2 = (si < s_end)[:, None] & row_ok[None, :]
    lse = tl.load(pl_ptr + at + si[:, None] * (LS - M), mask=ok2, other=float("-inf"), cache_modifier=".cg")
    po = tl.load(po_ptr + at[:, :, None] * D + tl.arange(0, D)[None, None, :], mask=ok2[:, :, None], other=0.0,
                 cache_modifier=".cg")
    m_new = tl.maximum(m, tl.max(lse, 0))
    w = tl.exp2(lse - m_new[None, :])
    alpha = tl.exp2(m - m_new)
    return m_new, l * alpha + tl.sum(w, 0), acc * alpha[:, None] + tl.sum(w[:, :, None] * po, 0)


@triton.jit
def _merge_slot(s, m, l, acc, po_ptr, pl_ptr, row, row_ok, D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr):
    """Online-softmax update of a list's rows with the partial in slot ``s`` (an (M, D) tile and its lse), loaded past
    L1 where the load allows it (the fused launch reads what other programs of it wrote; a pipelined 4-byte copy
    caches in L1, which is safe as no two slots share a 128-byte line: ``LS`` >= 32 floats a slot)."""
    at = s.to(tl.int64) * M + row
    lse = tl.load(pl_ptr + s.to(tl.int64) * LS + row, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
    po = tl.load(po_ptr + at[:, None] * D + tl.arange(0, D)[None, :], mask=row_ok[:, None], other=0.0,
                 cache_modifier=".cg")
    m_new = tl.maximum(m, lse)
    alpha = tl.exp2(m - m_new)
    w = tl.exp2(lse - m_new)
    return m_new, l * alpha + w, acc * alpha[:, None] + w[:, None] * po


@triton.jit
def _merge_list(j, prefix, start_j, end_j, width, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, out_ptr, lse_ptr, q_out_ptr,
                sc_ptr, qk_scale, T, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob, sot, soh, slb, slh,
                sqob, sqoh, ssb, ssh, D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr, RB: tl.constexpr,
                TP: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_Q: tl.constexpr, SCORES: tl.constexpr,
                LOOP_FOR: tl.constexpr, STAGES: tl.constexpr):
    """The fused launch's merge of list ``j``, RB rows of its (M, D) tile at a time (:func:`_merge_block`)."""
    for r0 in tl.static_range(0, M, RB):
        if r0 < G * T:
            _merge_block(j, r0, prefix, start_j, end_j, width, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, out_ptr, lse_ptr,
                         q_out_ptr, sc_ptr, qk_scale, T, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob, sot,
                         soh, slb, slh, sqob, sqoh, ssb, ssh, D, M, LS, RB, TP, WRITE_LSE, WRITE_Q, SCORES, LOOP_FOR,
                         STAGES)


@triton.jit
def _merge_block(j, r0, prefix, start_j, end_j, width, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr, out_ptr, lse_ptr,
                 q_out_ptr, sc_ptr, qk_scale, T, HKV, G, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob, sot, soh,
                 slb, slh, sqob, sqoh, ssb, ssh, D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr, RB: tl.constexpr,
                 TP: tl.constexpr,
                 WRITE_LSE: tl.constexpr, WRITE_Q: tl.constexpr, SCORES: tl.constexpr, LOOP_FOR: tl.constexpr,
                 STAGES: tl.constexpr):
    """Rows ``r0 .. r0 + RB`` of list ``j`` at once: the step's own keys one at a time (exact float32, online
    softmax), then the list's partials one slot per iteration (pipelined when compiled: one program merges the list,
    so its loads must not wait on each other), then the output and the taps."""
    b = (j // HKV).to(tl.int64)
    h = (j % HKV).to(tl.int64)
    row = r0 + tl.arange(0, RB)
    g = row // T
    t = row - g * T
    row_ok = row < G * T
    hq = h * G + g
    d = tl.arange(0, D)
    qr = tl.load(q_ptr + b * sqb + hq[:, None] * sqh + t[:, None] * sqt + d[None, :], mask=row_ok[:, None], other=0.0)
    if WRITE_Q:  # stored now, so the query is dead by the partials' loop (registers)
        tl.store(q_out_ptr + b * sqob + hq[:, None] * sqoh + d[None, :], qr, mask=(row_ok & (t == T - 1))[:, None])
    qv = qr.to(tl.float32)
    m, l, acc = _own_keys(qv, t, row_ok, b, h, hq, prefix, k_ptr, v_ptr, sc_ptr, qk_scale, T, skb, skh, skn, svb, svh,
                          svn, ssb, ssh, D, RB, TP, SCORES)
    s_first = start_j // width + j
    s_end = tl.where(end_j > start_j, (end_j - 1) // width + j + 1, s_first)
    if LOOP_FOR:
        for s in tl.range(s_first, s_end, num_stages=STAGES):
            m, l, acc = _merge_slot(s, m, l, acc, po_ptr, pl_ptr, row, row_ok, D, M, LS)
    else:  # the CPU interpreter cannot range over run-time scalars
        s = s_first
        while s < s_end:
            m, l, acc = _merge_slot(s, m, l, acc, po_ptr, pl_ptr, row, row_ok, D, M, LS)
            s += 1
    tl.store(out_ptr + b * sob + t[:, None] * sot + hq[:, None] * soh + d[None, :],
             (acc / l[:, None]).to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        tl.store(lse_ptr + b * slb + hq * slh, m + tl.log2(l), mask=row_ok & (t == T - 1))


@triton.jit(do_not_specialize=["T", "cap", "P", "min_units", "BH"])
def _merge_kernel(
    q_ptr, k_ptr, v_ptr, len_ptr, n_ptr, po_ptr, pl_ptr, ends_ptr, cur_ptr, out_ptr, lse_ptr, q_out_ptr, sc_ptr,
    qk_scale, T, C, cap, P, min_units, BH, HKV, G,
    sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, snb, snh, sob, sot, soh, slb, slh, sqob, sqoh, ssb, ssh,
    D: tl.constexpr, M: tl.constexpr, LS: tl.constexpr, RB: tl.constexpr, TP: tl.constexpr, SB: tl.constexpr,
    CPB: tl.constexpr, DENSE: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_Q: tl.constexpr, SCORES: tl.constexpr,
    LOOP_FOR: tl.constexpr, PDL: tl.constexpr, STEAL: tl.constexpr, STEAL_RANGES: tl.constexpr,
):
    j = tl.program_id(0)  # the list (b, KV head h)
    prefix, n_j = _list_size(len_ptr, n_ptr, j, j < BH, T, C, cap, HKV, snb, snh, DENSE)
    reset = (j == 0) & (tl.program_id(1) == 0)
    _merge_rows(j, tl.program_id(1) * RB + tl.arange(0, RB), prefix, n_j, q_ptr, k_ptr, v_ptr, po_ptr, pl_ptr,
                ends_ptr, cur_ptr, reset, out_ptr, lse_ptr, q_out_ptr, sc_ptr, qk_scale, T, P, min_units, BH, HKV, G,
                sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob, sot, soh, slb, slh, sqob, sqoh, ssb, ssh, D, M, LS,
                RB, TP, SB, CPB, WRITE_LSE, WRITE_Q, SCORES, LOOP_FOR, PDL, STEAL, STEAL_RANGES)


FUSED_MERGE_ROWS = 16  # rows the fused launch's merging program takes at once (sm_90, inside the split kernel: no
#                       spill at the draft's tile, 8 bytes at D = 128 and 32 rows in two blocks; the whole 32 at once
#                       spills 624 bytes, aot_check)
MERGE_ROWS = 1  # query rows a merge program takes (a power of two; min(rows, 4) warps). One row in one warp (its
#                 reductions over D stay inside the warp, no shared memory or barrier), not up to 8: the merge no slower
#                 at any of 6 shapes and 0.9-4.3 us faster at 4 (Llama-2-7B batch 16: 10.3 -> 6.3 us; Llama-3.1-8B batch
#                 16: 9.5 -> 5.8; H100, scripts/gpu/profile_merge.py rows, twenty-third session: docs/benchmarks.md).


def lse_slot(rows: int) -> int:
    """Floats a partial slot's log-sum-exps take in the workspace: its ``rows``, at least a 128-byte line (no two slots
    share a line, so a pipelined 4-byte copy that caches in L1 never holds another slot's stale floats)."""
    return max(rows, 32)


def merge_slots(programs: int, lists: int, tile: int) -> int:
    """Partial slots a merge program takes a round: the partials a list has when the work is even (``programs /
    lists`` + 1, to a power of two), at most ``tile``. One round of 32 where a list has up to 33 (Llama-3.1-8B batch 1:
    merge 4.7 -> 3.6 us at 25% kept) but 2-4 where it has 1-3 (at batch 16 a 32-slot round took 6.0 -> 8.1 us; H100,
    twenty-third session)."""
    return min(tile, pow2(-(-programs // lists) + 1))


def pdl_supported(device) -> bool:
    """Whether the merge can launch as a programmatic dependent of the split kernel (Hopper or later: the
    ``griddepcontrol`` instructions; never under the CPU interpreter)."""
    from . import interpreting

    device = torch.device(device)
    return not interpreting() and device.type == "cuda" and _capability(device.index)[0] >= 9


@functools.lru_cache(maxsize=None)
def _capability(index: int | None) -> tuple[int, int]:
    """The compute capability of CUDA device ``index`` (None: the current one), asked once per device."""
    return torch.cuda.get_device_capability(index)


def pow2(x: int, least: int = 1) -> int:
    """Smallest power of two >= max(x, least)."""
    return max(triton.next_power_of_2(max(int(x), 1)), least)


@dataclass
class Workspace:
    """Partials of one launch shape: outputs ``(R + B*Hkv, M, D)`` and lse ``(R + B*Hkv, lse_slot(M))`` float32 (R:
    :func:`num_ranges`, P without ``steal``), the split kernel's unit ends per (sequence, KV head) list ``(B*Hkv,)``
    int32, for a grid of ``programs`` (P) split programs, the fused launch's tickets (one counter per list) and the
    count of dynamic ranges taken (both zero between launches)."""

    o: torch.Tensor
    lse: torch.Tensor
    ends: torch.Tensor
    programs: int
    tickets: torch.Tensor | None = None  # (B*Hkv,) int32 zeros: the fused launch's arrivals per list (reset by it)
    cursor: torch.Tensor | None = None  # (1,) int32 zero: dynamic ranges taken (SplitConfig.steal; the merge resets it)


def rows_tile(group: int, n_queries: int) -> int:
    """Rows of a split program's query tile: G*T padded to a power of two, at least 16 (tl.dot)."""
    return pow2(group * n_queries, 16)


def num_programs(config: SplitConfig, device) -> int:
    """The split kernel's grid: ``ctas_per_sm`` programs per SM (4 SMs on the CPU interpreter)."""
    from . import interpreting

    sms = 4 if interpreting() else torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, config.ctas_per_sm * sms)


def num_ranges(config: SplitConfig, programs: int) -> int:
    """Most ranges the split kernel cuts its units into (:func:`_ranges`): one a program, and up to
    ``config.steal_ranges`` dynamic ones a program with ``config.steal``."""
    return programs * (1 + (config.steal_ranges if config.steal else 0))


def make_workspace(batch: int, num_kv_heads: int, group: int, n_queries: int, head_dim: int, config: SplitConfig,
                   device) -> Workspace:
    m = rows_tile(group, n_queries)
    programs = num_programs(config, device)
    slots = num_ranges(config, programs) + batch * num_kv_heads
    return Workspace(torch.empty((slots, m, head_dim), dtype=torch.float32, device=device),
                     torch.empty((slots, lse_slot(m)), dtype=torch.float32, device=device),
                     torch.empty(batch * num_kv_heads, dtype=torch.int32, device=device), programs,
                     torch.zeros(batch * num_kv_heads, dtype=torch.int32, device=device),
                     torch.zeros(1, dtype=torch.int32, device=device))


def launch(q, k, v, lengths, chunk_ids, n_chunks, chunk_size: int, sm_scale: float, out: torch.Tensor,
           workspace: Workspace, capacity: int, config: SplitConfig, dense: bool,
           lse_out: torch.Tensor | None = None, q_out: torch.Tensor | None = None,
           scores_out: torch.Tensor | None = None) -> torch.Tensor:
    """Both launches on validated tensors (see :func:`specattn.gpu.attention.sparse.sparse_verify`);
    ``lse_out (B, Hq)`` float32 (any strides), if given, receives the last row's base-2 log-sum-exp,
    ``q_out (B, Hq, D)`` (q's dtype, unit stride along D) the last row's query, and ``scores_out (B, Hq, >= K)``
    float32 (unit stride along keys) the last row's scaled scores ``q . k * sm_scale * log2 e`` at every key it
    attends (other entries untouched)."""
    from . import interpreting

    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    m = rows_tile(g, t)
    cp = pow2(chunk_size)
    cpb = max(1, config.block_n // cp)
    programs = workspace.programs
    min_units = max(1, -(-config.min_chunks // cpb))
    bh = b * hkv
    ids = chunk_ids if not dense else lengths  # unused when dense
    sib, sih = (chunk_ids.stride(0), chunk_ids.stride(1) if chunk_ids.shape[1] > 1 else 0) if not dense else (0, 0)
    nn = n_chunks if not dense else lengths
    snb, snh = (n_chunks.stride(0), n_chunks.stride(1) if n_chunks.shape[1] > 1 else 0) if not dense else (0, 0)
    qk_scale = float(sm_scale) * LOG2E
    if workspace.ends.numel() < bh:
        raise ValueError(f"workspace made for {workspace.ends.numel()} (sequence, KV head) lists, launched with {bh}: "
                         "make_workspace with this batch")
    if config.fused_merge and (workspace.tickets is None or workspace.tickets.numel() < bh):
        raise ValueError("fused_merge needs a workspace with a ticket per (sequence, KV head) list: make_workspace")
    if config.steal and (workspace.cursor is None or workspace.o.shape[0] < num_ranges(config, programs) + bh):
        raise ValueError(f"steal={config.steal} needs a workspace made for it: make_workspace with this config")
    common = dict(CPB=cpb, DENSE=dense, D=d, M=m, LS=lse_slot(m), SCORES=scores_out is not None, STEAL=config.steal,
                  STEAL_RANGES=config.steal_ranges)
    sc, (ssb, ssh) = (scores_out, scores_out.stride()[:2]) if scores_out is not None else (workspace.lse, (0, 0))
    lse_ptr, q_out_ptr = lse_out if lse_out is not None else workspace.lse, q_out if q_out is not None else q
    outputs = (out.stride(0), out.stride(1), out.stride(2), *(lse_out.stride() if lse_out is not None else (0, 0)),
               *(q_out.stride()[:2] if q_out is not None else (0, 0)))
    taps = dict(TP=pow2(t, 2), WRITE_LSE=lse_out is not None, WRITE_Q=q_out is not None)
    pdl = config.pdl and not config.fused_merge and pdl_supported(q.device)
    counters = workspace.tickets if workspace.tickets is not None else workspace.ends
    cursor = workspace.cursor if workspace.cursor is not None else workspace.ends  # unread without steal
    _split_kernel[(programs,)](
        q, k, v, lengths, ids, nn, workspace.o, workspace.lse, workspace.ends, sc, counters, cursor, out, lse_ptr,
        q_out_ptr,
        qk_scale, t, chunk_size, capacity, programs, min_units, bh, hkv, g,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), sib, sih, snb, snh, ssb, ssh, *outputs,
        BHP=pow2(bh, 2), CP=cp, LOOP_FOR=not interpreting(), STAGES=config.stages, FUSED=config.fused_merge,
        RB=min(m, FUSED_MERGE_ROWS), PDL=pdl, num_warps=config.warps, **taps, **common,
    )
    if config.fused_merge:
        return out
    _merge_kernel[(bh, -(-(g * t) // MERGE_ROWS))](
        q, k, v, lengths, nn, workspace.o, workspace.lse, workspace.ends, cursor, out, lse_ptr, q_out_ptr, sc,
        qk_scale, t, chunk_size, capacity, programs, min_units, bh, hkv, g,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), snb, snh, *outputs, ssb, ssh,
        RB=MERGE_ROWS, SB=max(1, merge_slots(num_ranges(config, programs), bh, config.merge_tile) // MERGE_ROWS),
        LOOP_FOR=not interpreting(), PDL=pdl, launch_pdl=pdl, num_warps=min(MERGE_ROWS, 4), **taps, **common,
    )
    return out


# arguments that are multiples of 16 for contiguous HF caches (the launcher specialises on that)
ALIGNED = ("q_ptr", "k_ptr", "v_ptr", "len_ptr", "ids_ptr", "n_ptr", "po_ptr", "pl_ptr", "ends_ptr", "C", "sqb",
           "sqh", "skb", "skh", "skn", "svb", "svh", "svn", "sib")


def _aot_check(compile_one) -> bool:
    ok = True
    cfg = SplitConfig()
    # (dtype, G, D, dense, scores, fused, T, steal): the fused launch at the verifiers' 5 rows (lse + query taps; the
    # real pair's G = 6 included) and at the draft's one and two rows (the row taps, scores); dynamic ranges
    for dt, g, dim, dense, scores, fused, t, steal in [
            ("bf16", 4, 128, False, False, False, 5, 0), ("bf16", 1, 128, False, False, False, 5, 0),
            ("fp16", 4, 64, False, False, False, 5, 0), ("bf16", 4, 128, True, False, False, 5, 0),
            ("bf16", 7, 64, True, False, False, 5, 0), ("bf16", 7, 64, True, True, False, 5, 0),
            ("bf16", 4, 128, False, False, True, 5, 0), ("bf16", 1, 128, False, False, True, 5, 0),
            ("bf16", 7, 64, False, False, True, 1, 0), ("bf16", 7, 64, True, True, True, 1, 0),
            ("bf16", 6, 128, False, False, True, 5, 0), ("bf16", 7, 64, True, True, True, 2, 0),
            ("bf16", 4, 128, False, False, False, 5, 25), ("bf16", 7, 64, True, True, False, 1, 25)]:
        sig = {"q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "len_ptr": "*i32", "ids_ptr": "*i32",
               "n_ptr": "*i32", "po_ptr": "*fp32", "pl_ptr": "*fp32", "ends_ptr": "*i32", "sc_ptr": "*fp32",
               "tk_ptr": "*i32", "cur_ptr": "*i32", "out_ptr": f"*{dt}", "lse_ptr": "*fp32", "q_out_ptr": f"*{dt}",
               "qk_scale": "fp32",
               "T": "i32", "C": "i32",
               "cap": "i32", "P": "i32", "min_units": "i32", "BH": "i32", "HKV": "i32", "G": "i32"}
        sig.update({name: "i32" for name in ["sqb", "sqh", "sqt", "skb", "skh", "skn", "svb", "svh", "svn",
                                             "sib", "sih", "snb", "snh", "ssb", "ssh", "sob", "sot", "soh", "slb",
                                             "slh", "sqob", "sqoh"]})
        name = f"sparse_attn split {dt} G={g} D={dim}{' dense' if dense else ''}{' scores' if scores else ''}"
        ok &= compile_one(name + (f" fused T={t}" if fused else "") + (f" steal {steal}%" if steal else ""),
                          _split_kernel, sig,
                          {"D": dim, "M": rows_tile(g, t), "LS": lse_slot(rows_tile(g, t)), "CP": 16,
                           "CPB": cfg.block_n // 16, "BHP": 32,
                           "DENSE": dense, "LOOP_FOR": True, "STAGES": cfg.stages, "SCORES": scores, "FUSED": fused,
                           "RB": min(rows_tile(g, t), FUSED_MERGE_ROWS), "TP": pow2(t, 2), "WRITE_LSE": fused,
                           "WRITE_Q": fused, "PDL": not fused, "STEAL": steal,
                           "STEAL_RANGES": cfg.steal_ranges}, cfg.warps, div16=ALIGNED)
    sig = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "len_ptr": "*i32", "n_ptr": "*i32",
           "po_ptr": "*fp32", "pl_ptr": "*fp32", "ends_ptr": "*i32", "cur_ptr": "*i32", "out_ptr": "*bf16",
           "lse_ptr": "*fp32",
           "q_out_ptr": "*bf16", "sc_ptr": "*fp32", "qk_scale": "fp32",
           "T": "i32", "C": "i32",
           "cap": "i32", "P": "i32", "min_units": "i32", "BH": "i32", "HKV": "i32", "G": "i32"}
    sig.update({name: "i32" for name in ["sqb", "sqh", "sqt", "skb", "skh", "skn", "svb", "svh", "svn", "snb",
                                         "snh", "sob", "sot", "soh", "slb", "slh", "sqob", "sqoh", "ssb", "ssh"]})
    # (taps, RB, scores, tile, pdl, steal)
    for tap, rb, scores, tile, pdl, steal in [
            (False, 1, False, 16, True, 0), (True, 1, False, 16, True, 0), (True, 1, True, 16, True, 0),
            (True, 1, False, 32, True, 0), (True, 1, True, 32, True, 0), (True, 2, False, 16, True, 0),
            (True, 1, True, 32, False, 0), (True, 1, False, 32, True, 25)]:
        ok &= compile_one(f"sparse_attn merge bf16 RB={rb} tile {tile}{' lse+q' if tap else ''}"
                          f"{' scores' if scores else ''}{' pdl' if pdl else ''}{f' steal {steal}%' if steal else ''}",
                          _merge_kernel, sig,
                          {"D": 128, "M": 32, "LS": 32, "RB": rb, "TP": 8, "SB": max(1, tile // rb), "CPB": 4,
                           "DENSE": False, "WRITE_LSE": tap, "WRITE_Q": tap, "SCORES": scores, "LOOP_FOR": True,
                           "PDL": pdl, "STEAL": steal, "STEAL_RANGES": cfg.steal_ranges}, min(rb, 4))
    return ok
