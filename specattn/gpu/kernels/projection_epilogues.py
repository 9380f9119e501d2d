"""Projections with the layer's next small kernel in their epilogue, for decoding's few rows (a draft forward's
``B * T <= 32``): one launch where the fused layer (:mod:`specattn.hooks.fused_llama`) runs two.

* :func:`qkv_rope_into_cache`: the q/k/v projection, then what
  :func:`specattn.gpu.kernels.fused_llama.rope_into_cache` does (the folded RMSNorm's row scale, the bias, the rotary
  of q and k, q to its buffer and k and v into the cache at slot ``lengths[b] + t``);
* :func:`gate_up_silu`: the gate/up projection, then what :func:`specattn.gpu.kernels.fused_llama.silu_mul` does
  (the folded norm's row scale, ``silu(gate)`` rounded to the dtype, times ``up``).

docs/benchmarks.md, thirty-second session: a speculative step spends 4-6 ms above its byte floor over ~1,300
launches, and a small projection's time is its launch latency (a 2 MB projection 3.4 us with its weight in L2), so a
launch less a draft layer is what can shorten it.

Both stream, for every row, two ``HB``-column slices of the weight that the epilogue pairs (a head's first-half
columns and their rotary partners; a gate column block and its up block) as two float32 dot products over ``K``
(:func:`_paired_dots`, each weight slice read once, the input rows beside it and their sum of squares for the folded
norm). The projection is not rounded before the epilogue (one rounding fewer than the two launches: the same
function, rounded at other places).

With ``split_k = S > 1`` the grid gains an axis of ``S`` equal ``K`` ranges: each program stores its float32 partials
(both dot products and the rows' sums of squares) in the workspace, takes a ticket on its tile
(:func:`~specattn.gpu.kernels.skinny_gemm.last_ticket`), and the tile's last program sums the ``S`` parts in order and
runs the epilogue (the q/k/v projection is 18-36 programs for the draft's 2 MB weight without it). H100, thirty-fourth
session (docs/benchmarks.md): the q/k/v one launch in 8 ranges 5.59 us against the two launches' 6.42 at 16 rows; the
gate/up one launch 14.56 against 11.10 (its folded norm's row sums 3.2 us of it), so the fused MLP keeps two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .skinny_gemm import SplitKWorkspace, block_rows, last_ticket, range_width

#: (HB, BLOCK_K, stages, warps) the profile tries (scripts/gpu/profile_gemm.py)
CONFIGS = ((16, 128, 4, 4), (16, 256, 3, 4), (32, 128, 4, 4))
MAX_ROWS = 32


@triton.jit
def _paired_dots(x_ptr, w_ptr, n1, n2, M, k_lo, k_hi, sxm, swn, BLOCK_M: tl.constexpr, HB: tl.constexpr,
                 BLOCK_K: tl.constexpr, STAGES: tl.constexpr, NORM: tl.constexpr, LOOP_FOR: tl.constexpr):
    """``x (M, K)[:, k_lo:k_hi] @ W[n1, k_lo:k_hi].T`` and ``@ W[n2, k_lo:k_hi].T`` (``(BLOCK_M, HB)`` float32 each)
    and, with NORM, each row's sum of squares of ``x`` over the range ``(BLOCK_M,)`` (zeros otherwise; accumulated
    elementwise and reduced once after the loop, so the pipelined loop holds no cross-thread reduction)."""
    m = tl.arange(0, BLOCK_M)
    m_ok = m < M
    kk = tl.arange(0, BLOCK_K)
    acc1 = tl.zeros((BLOCK_M, HB), tl.float32)
    acc2 = tl.zeros((BLOCK_M, HB), tl.float32)
    sq = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    if LOOP_FOR:
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
            k = k0 + kk
            k_ok = k < k_hi
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w1 = tl.load(w_ptr + n1[:, None] * swn + k[None, :], mask=k_ok[None, :], other=0.0,
                         eviction_policy="evict_first")
            w2 = tl.load(w_ptr + n2[:, None] * swn + k[None, :], mask=k_ok[None, :], other=0.0,
                         eviction_policy="evict_first")
            acc1 += tl.dot(x, tl.trans(w1))
            acc2 += tl.dot(x, tl.trans(w2))
            if NORM:
                xf = x.to(tl.float32)
                sq += xf * xf
    else:  # the CPU interpreter
        k0 = k_lo
        while k0 < k_hi:
            k = k0 + kk
            k_ok = k < k_hi
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w1 = tl.load(w_ptr + n1[:, None] * swn + k[None, :], mask=k_ok[None, :], other=0.0)
            w2 = tl.load(w_ptr + n2[:, None] * swn + k[None, :], mask=k_ok[None, :], other=0.0)
            acc1 += tl.dot(x, tl.trans(w1))
            acc2 += tl.dot(x, tl.trans(w2))
            if NORM:
                xf = x.to(tl.float32)
                sq += xf * xf
            k0 += BLOCK_K
    return acc1, acc2, tl.sum(sq, 1)


@triton.jit
def _summed_over_split(acc1, acc2, ssq, ws_ptr, tk_ptr, tile, tiles, s, BLOCK_M: tl.constexpr, HB: tl.constexpr,
                       SPLIT: tl.constexpr):
    """Program ``s`` of tile ``tile``'s ``SPLIT`` (of ``tiles``): its float32 partials (``acc1, acc2 (BLOCK_M,
    HB)``, ``ssq (BLOCK_M,)``) stored in the workspace's slot ``(s, tile)``; returns whether it drew the tile's last
    ticket, and then the slots ``0 .. SPLIT-1`` summed in that order (the same sum whichever program ends last)."""
    TILE: tl.constexpr = BLOCK_M * (2 * HB + 1)
    m = tl.arange(0, BLOCK_M)
    at = m[:, None] * HB + tl.arange(0, HB)[None, :]
    slot = ws_ptr + (s * tiles + tile).to(tl.int64) * TILE
    tl.store(slot + at, acc1)
    tl.store(slot + BLOCK_M * HB + at, acc2)
    tl.store(slot + 2 * BLOCK_M * HB + m, ssq)
    last = last_ticket(tk_ptr + tile, SPLIT)
    if last:
        acc1 = tl.zeros((BLOCK_M, HB), tl.float32)
        acc2 = tl.zeros((BLOCK_M, HB), tl.float32)
        ssq = tl.zeros((BLOCK_M,), tl.float32)
        for i in tl.static_range(SPLIT):
            part = ws_ptr + (i * tiles + tile).to(tl.int64) * TILE
            acc1 += tl.load(part + at, cache_modifier=".cg")
            acc2 += tl.load(part + BLOCK_M * HB + at, cache_modifier=".cg")
            ssq += tl.load(part + 2 * BLOCK_M * HB + m, cache_modifier=".cg")
    return last, acc1, acc2, ssq


@triton.jit
def _qkv_rope_kernel(x_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr, len_ptr, q_ptr, k_ptr, v_ptr, ws_ptr, tk_ptr, M, T, K,
                     KS, HQ, HKV, eps, sxm, swn, scb, sct, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn,
                     D: tl.constexpr, HB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                     STAGES: tl.constexpr, NORM: tl.constexpr, BIAS: tl.constexpr, SPLIT: tl.constexpr,
                     LOOP_FOR: tl.constexpr):
    """Program ``(h, j, s)``: head ``h``'s columns ``j * HB ..`` of its first half and their partners ``+ D / 2``,
    over ``K`` range ``[s * KS, (s + 1) * KS)`` (the tile's last program of the ``SPLIT`` writes)."""
    h = tl.program_id(0)
    j = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    c = j * HB + tl.arange(0, HB)
    n1 = h * D + c
    k_lo = tl.program_id(2) * KS
    acc1, acc2, ssq = _paired_dots(x_ptr, w_ptr, n1, n1 + HALF, M, k_lo, tl.minimum(k_lo + KS, K), sxm, swn, BLOCK_M,
                                   HB, BLOCK_K, STAGES, NORM, LOOP_FOR)
    if SPLIT > 1:
        last, acc1, acc2, ssq = _summed_over_split(acc1, acc2, ssq, ws_ptr, tk_ptr, h * tl.num_programs(1) + j,
                                                   tl.num_programs(0) * tl.num_programs(1), tl.program_id(2), BLOCK_M,
                                                   HB, SPLIT)
    else:
        last = True
    if last:
        if NORM:  # the folded RMSNorm's row scale, then the bias
            scale = 1.0 / tl.sqrt(ssq / K + eps)
            acc1 = acc1 * scale[:, None]
            acc2 = acc2 * scale[:, None]
        if BIAS:
            acc1 = acc1 + tl.load(bias_ptr + n1).to(tl.float32)[None, :]
            acc2 = acc2 + tl.load(bias_ptr + n1 + HALF).to(tl.float32)[None, :]
        m = tl.arange(0, BLOCK_M)
        m_ok = m < M
        b = (m // T).to(tl.int64)
        t = m % T
        slot = (tl.load(len_ptr + b, mask=m_ok, other=0) + t).to(tl.int64)
        ok = m_ok[:, None]
        if h < HQ + HKV:  # q and k heads rotate
            rot = b[:, None] * scb + t[:, None] * sct
            cos1 = tl.load(cos_ptr + rot + c[None, :], mask=ok, other=0.0).to(tl.float32)
            sin1 = tl.load(sin_ptr + rot + c[None, :], mask=ok, other=0.0).to(tl.float32)
            cos2 = tl.load(cos_ptr + rot + HALF + c[None, :], mask=ok, other=0.0).to(tl.float32)
            sin2 = tl.load(sin_ptr + rot + HALF + c[None, :], mask=ok, other=0.0).to(tl.float32)
            o1 = acc1 * cos1 - acc2 * sin1
            o2 = acc2 * cos2 + acc1 * sin2
            if h < HQ:
                dst = q_ptr + b[:, None] * sqb + h * sqh + t[:, None] * sqt
            else:
                dst = k_ptr + b[:, None] * skb + (h - HQ) * skh + slot[:, None] * skn
        else:
            o1 = acc1
            o2 = acc2
            dst = v_ptr + b[:, None] * svb + (h - HQ - HKV) * svh + slot[:, None] * svn
        tl.store(dst + c[None, :], o1.to(q_ptr.dtype.element_ty), mask=ok)
        tl.store(dst + HALF + c[None, :], o2.to(q_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gate_up_silu_kernel(x_ptr, w_ptr, out_ptr, ws_ptr, tk_ptr, M, K, KS, I, eps, sxm, swn, som, HB: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr, NORM: tl.constexpr,
                         SPLIT: tl.constexpr, LOOP_FOR: tl.constexpr):
    """Program ``(j, s)``: gate columns ``j * HB ..`` and their up columns ``I + j * HB ..`` -> output columns
    ``j * HB ..``, over ``K`` range ``[s * KS, (s + 1) * KS)`` (the tile's last program of the ``SPLIT`` writes)."""
    c = tl.program_id(0) * HB + tl.arange(0, HB)
    c_ok = c < I
    n1 = tl.where(c_ok, c, 0)  # a column past I loads row 0 and is not stored
    k_lo = tl.program_id(1) * KS
    g, u, ssq = _paired_dots(x_ptr, w_ptr, n1, n1 + I, M, k_lo, tl.minimum(k_lo + KS, K), sxm, swn, BLOCK_M, HB,
                             BLOCK_K, STAGES, NORM, LOOP_FOR)
    if SPLIT > 1:
        last, g, u, ssq = _summed_over_split(g, u, ssq, ws_ptr, tk_ptr, tl.program_id(0), tl.num_programs(0),
                                             tl.program_id(1), BLOCK_M, HB, SPLIT)
    else:
        last = True
    if last:
        if NORM:
            scale = 1.0 / tl.sqrt(ssq / K + eps)
            g = g * scale[:, None]
            u = u * scale[:, None]
        act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)  # silu in the dtype, as silu_mul
        m = tl.arange(0, BLOCK_M)
        tl.store(out_ptr + m[:, None] * som + c[None, :], (act * u).to(out_ptr.dtype.element_ty),
                 mask=(m < M)[:, None] & c_ok[None, :])


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    rows = x.reshape(-1, k)
    return rows if rows.stride(1) == 1 else rows.contiguous()


def _workspace(rows: int, tiles: int, split_k: int, hb: int, device) -> SplitKWorkspace:
    """Partials of ``split_k`` parts of ``tiles`` tiles of ``rows`` rows (two ``HB``-column float32 blocks and a
    row's sum of squares each) and a ticket a tile."""
    return SplitKWorkspace(torch.empty(split_k * tiles * block_rows(rows) * (2 * hb + 1), dtype=torch.float32,
                                       device=device), torch.zeros(tiles, dtype=torch.int32, device=device))


def qkv_rope_workspace(rows: int, heads: int, kv_heads: int, head_dim: int, split_k: int,
                       config: tuple[int, int, int, int] = CONFIGS[0], device=None) -> SplitKWorkspace:
    """The :class:`~specattn.gpu.kernels.skinny_gemm.SplitKWorkspace` :func:`qkv_rope_into_cache` takes for launches
    of at most ``rows`` rows in ``split_k`` ``K`` ranges at ``config`` (left zeroed by every launch: one serves every
    launch on one stream and a captured graph's replays)."""
    return _workspace(rows, (heads + 2 * kv_heads) * (head_dim // 2 // config[0]), split_k, config[0], device)


def gate_up_workspace(rows: int, inter: int, split_k: int, config: tuple[int, int, int, int] = CONFIGS[0],
                      device=None) -> SplitKWorkspace:
    """The workspace :func:`gate_up_silu` takes for launches of at most ``rows`` rows and intermediate size ``inter``
    in ``split_k`` ranges at ``config``."""
    return _workspace(rows, triton.cdiv(inter, config[0]), split_k, config[0], device)


def _split_args(name: str, rows: int, k: int, tiles: int, config, split_k: int, workspace, device):
    """The launch's ``(partials, tickets, KS)`` (its workspace checked, or made where None) for ``split_k`` ranges."""
    hb, block_k = config[:2]
    ks = range_width(name, k, split_k, block_k)
    if split_k == 1:
        return None, None, ks
    workspace = workspace or _workspace(rows, tiles, split_k, hb, device)
    need = split_k * tiles * block_rows(rows) * (2 * hb + 1)
    if workspace.partials.numel() < need or workspace.tickets.numel() != tiles:
        raise ValueError(f"{name}: workspace of {workspace.partials.numel()} partials and {workspace.tickets.numel()} "
                         f"tickets does not fit split_k={split_k}, {rows} rows, {tiles} tiles of HB={hb} (needs "
                         f"{need} and {tiles}): make it with this launch's rows, shapes, split_k and config")
    return workspace.partials, workspace.tickets, ks


def qkv_rope_fits(rows: int, head_dim: int, config: tuple[int, int, int, int] = CONFIGS[0]) -> bool:
    """Whether :func:`qkv_rope_into_cache` takes ``rows`` rows (``B * T``) of heads of ``head_dim`` at ``config``."""
    return 0 < rows <= MAX_ROWS and (head_dim // 2) % config[0] == 0


def qkv_rope_into_cache(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        lengths: torch.Tensor, heads: int, kv_heads: int, keys: torch.Tensor, values: torch.Tensor,
                        norm_eps: float | None = None, bias: torch.Tensor | None = None,
                        config: tuple[int, int, int, int] = CONFIGS[0], split_k: int = 1,
                        workspace: SplitKWorkspace | None = None) -> torch.Tensor:
    """``x (B, T, K)`` (the layer's input rows; with ``norm_eps`` the input of a folded RMSNorm) projected by ``weight
    ((Hq + 2 Hkv) * D, K)`` (+ ``bias``), rotated by ``cos, sin (B, T, D)`` (or broadcastable), k and v written into
    ``keys, values (B, Hkv, cap, D)`` at slots ``lengths[b] + t`` -> q ``(B, Hq, T, D)``: what ``F.linear`` then
    :func:`~specattn.gpu.kernels.fused_llama.rope_into_cache` compute, in one launch. ``B * T <= 32``; ``config``:
    ``(HB, BLOCK_K, stages, warps)``, HB dividing ``D / 2``; ``split_k``: ``K`` in that many ranges (one launch, with
    ``workspace`` from :func:`qkv_rope_workspace`, made here if None, which a captured graph must not rely on)."""
    from . import interpreting

    b, t, k = x.shape
    d = keys.shape[-1]
    hb = config[0]
    if weight.shape != ((heads + 2 * kv_heads) * d, k) or weight.stride(1) != 1:
        raise ValueError(f"qkv_rope_into_cache: weight {tuple(weight.shape)} must be ({(heads + 2 * kv_heads) * d}, "
                         f"{k}) with unit stride along K")
    if not qkv_rope_fits(b * t, d, config):
        raise ValueError(f"qkv_rope_into_cache: B * T = {b * t} rows (at most {MAX_ROWS}) and head_dim {d} (D / 2 a "
                         f"multiple of HB = {hb}) do not fit: use F.linear and rope_into_cache")
    grid = (heads + 2 * kv_heads, d // 2 // hb, split_k)
    partials, tickets, ks = _split_args("qkv_rope_into_cache", b * t, k, grid[0] * grid[1], config, split_k,
                                        workspace, x.device)
    rows = _rows(x, k)
    q = torch.empty((b, heads, t, d), dtype=x.dtype, device=x.device)
    cos, sin = cos.expand(b, t, d), sin.expand(b, t, d)
    _, block_k, stages, warps = config
    _qkv_rope_kernel[grid](
        rows, weight, weight if bias is None else bias, cos, sin, lengths, q, keys, values,
        q if partials is None else partials, lengths if tickets is None else tickets, b * t, t, k, ks, heads,
        kv_heads, float(norm_eps or 0.0), rows.stride(0), weight.stride(0), cos.stride(0), cos.stride(1),
        q.stride(0), q.stride(1), q.stride(2), keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0),
        values.stride(1), values.stride(2), D=d, HB=hb, BLOCK_M=block_rows(b * t), BLOCK_K=block_k,
        STAGES=stages, NORM=norm_eps is not None, BIAS=bias is not None, SPLIT=split_k, LOOP_FOR=not interpreting(),
        num_warps=warps)
    return q


def gate_up_silu(x: torch.Tensor, weight: torch.Tensor, norm_eps: float | None = None,
                 config: tuple[int, int, int, int] = CONFIGS[0], split_k: int = 1,
                 workspace: SplitKWorkspace | None = None) -> torch.Tensor:
    """``x (..., K)`` (with ``norm_eps`` the input of a folded RMSNorm) projected by ``weight (2 I, K)`` (gate rows,
    then up rows) -> ``silu(gate) * up`` ``(..., I)``: what ``F.linear`` then
    :func:`~specattn.gpu.kernels.fused_llama.silu_mul` compute, in one launch. At most 32 rows; ``config``:
    ``(HB, BLOCK_K, stages, warps)``; ``split_k`` and ``workspace`` (:func:`gate_up_workspace`) as in
    :func:`qkv_rope_into_cache`."""
    from . import interpreting

    k = x.shape[-1]
    rows = _rows(x, k)
    inter = weight.shape[0] // 2
    if weight.shape != (2 * inter, k) or weight.stride(1) != 1:
        raise ValueError(f"gate_up_silu: weight {tuple(weight.shape)} must be (2 I, {k}) with unit stride along K")
    if rows.shape[0] > MAX_ROWS:
        raise ValueError(f"gate_up_silu: {rows.shape[0]} rows (at most {MAX_ROWS}): use F.linear and silu_mul")
    hb, block_k, stages, warps = config
    tiles = triton.cdiv(inter, hb)
    partials, tickets, ks = _split_args("gate_up_silu", rows.shape[0], k, tiles, config, split_k, workspace,
                                        x.device)
    out = torch.empty((rows.shape[0], inter), dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        _gate_up_silu_kernel[(tiles, split_k)](
            rows, weight, out, out if partials is None else partials, out if tickets is None else tickets,
            rows.shape[0], k, ks, inter, float(norm_eps or 0.0), rows.stride(0), weight.stride(0), out.stride(0),
            HB=hb, BLOCK_M=block_rows(rows.shape[0]), BLOCK_K=block_k, STAGES=stages, NORM=norm_eps is not None,
            SPLIT=split_k, LOOP_FOR=not interpreting(), num_warps=warps)
    return out.view(*x.shape[:-1], inter)


def _aot_check(compile_one) -> bool:
    """Compile both kernels for sm_90 (:mod:`.aot_check`) at the draft's shapes (Qwen2.5-Coder-0.5B: D = 64, hidden
    896, the norm folded, q/k/v biases; intermediate 4864: pointers, depth, widths and strides multiples of 16, as
    Triton specialises them at launch) at 16 and 32 rows, each config, in one ``K`` range and four."""
    ok = True
    for hb, block_k, stages, warps in CONFIGS:
        for rows in (16, 32):
            for split in (1, 4):
                ok &= compile_one(f"qkv_rope bf16 D=64 M={rows} {hb}x{block_k}x{stages} split {split}",
                                  _qkv_rope_kernel, {
                    "x_ptr": "*bf16", "w_ptr": "*bf16", "bias_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16",
                    "len_ptr": "*i32", "q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "ws_ptr": "*fp32",
                    "tk_ptr": "*i32", "M": "i32", "T": "i32", "K": "i32", "KS": "i32", "HQ": "i32", "HKV": "i32",
                    "eps": "fp32", "sxm": "i32", "swn": "i32", "scb": "i32", "sct": "i32", "sqb": "i32",
                    "sqh": "i32", "sqt": "i32", "skb": "i32", "skh": "i32", "skn": "i32", "svb": "i32", "svh": "i32",
                    "svn": "i32"},
                    {"D": 64, "HB": hb, "BLOCK_M": rows, "BLOCK_K": block_k, "STAGES": stages, "NORM": True,
                     "BIAS": True, "SPLIT": split, "LOOP_FOR": True}, warps,
                    div16=("x_ptr", "w_ptr", "bias_ptr", "cos_ptr", "sin_ptr", "len_ptr", "q_ptr", "k_ptr", "v_ptr",
                           "ws_ptr", "tk_ptr", "K", "KS", "sxm", "swn", "scb", "sct", "sqb", "sqh", "sqt", "skb",
                           "skh", "skn", "svb", "svh", "svn"),
                    spill_free=True)
                ok &= compile_one(f"gate_up_silu bf16 M={rows} {hb}x{block_k}x{stages} split {split}",
                                  _gate_up_silu_kernel, {
                    "x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "ws_ptr": "*fp32", "tk_ptr": "*i32",
                    "M": "i32", "K": "i32", "KS": "i32", "I": "i32", "eps": "fp32", "sxm": "i32", "swn": "i32",
                    "som": "i32"},
                    {"HB": hb, "BLOCK_M": rows, "BLOCK_K": block_k, "STAGES": stages, "NORM": True, "SPLIT": split,
                     "LOOP_FOR": True}, warps,
                    div16=("x_ptr", "w_ptr", "out_ptr", "ws_ptr", "tk_ptr", "K", "KS", "I", "sxm", "swn", "som"),
                    spill_free=True)
    return ok
