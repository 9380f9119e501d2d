"""A skinny GEMM for decoding's projections: ``out = x @ W.T (+ residual)`` with few rows (a decoding step's tokens,
``M <= 128``) and a weight that is read once from device memory (docs/benchmarks.md, thirty-second session: cuBLAS
spends 4-8 us on the draft's projections of 0.5-17 MB at batch 16, 46% of their read floor).

Program ``n`` of the grid ``(cdiv(N, BLOCK_N),)`` owns ``BLOCK_N`` output columns for all rows and streams their
``BLOCK_N x K`` weight slice once (pipelined over ``BLOCK_K``-wide steps, bypassing L1/L2 reuse: ``evict_first``),
the rows' activations ``x`` (small, re-read by every program from L2) beside it; float32 accumulation on the tensor
cores; the optional residual is added in float32 before the one rounding to the output's dtype.

With ``split_k = S > 1`` (a long ``K`` and few output columns: the down projection, where cuBLAS runs a split-K GEMM
and a reduction, two launches) the grid is ``(cdiv(N, BLOCK_N), S)``: program ``(n, s)`` streams the ``s``-th of
``S`` equal ``K`` ranges (whole ``BLOCK_K`` steps), stores its float32 partial in the workspace
(:class:`SplitKWorkspace`), and takes a ticket on column block ``n``'s counter (acquire-release at GPU scope, after a
barrier so every thread's partial is stored first); the program that draws the last ticket resets the counter for the
next launch and sums the ``S`` partials in the order ``s = 0 .. S-1`` (read past L1; the sum is the same whichever
program finishes last), adds the residual and rounds once: one launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

#: (BLOCK_N, BLOCK_K, stages, warps) the profile tries (scripts/gpu/profile_gemm.py)
CONFIGS = ((16, 128, 4, 4), (16, 256, 3, 4), (32, 128, 4, 4), (32, 256, 3, 4), (64, 128, 4, 4), (16, 512, 2, 4))
MAX_ROWS = 128  # the most rows (M) a launch takes
MAX_SPLIT = 32  # the most K ranges of one launch


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, out_ptr, res_ptr, ws_ptr, tk_ptr, M, N, K, KS, sxm, swn, som, srm,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
                   RESIDUAL: tl.constexpr, SPLIT: tl.constexpr, LOOP_FOR: tl.constexpr):
    """Program ``(n, s)``: columns ``n * BLOCK_N ..`` over ``K`` range ``[s * KS, (s + 1) * KS)``."""
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    kk = tl.arange(0, BLOCK_K)
    n_ok = n < N
    m_ok = m < M
    k_lo = tl.program_id(1) * KS
    k_hi = tl.minimum(k_lo + KS, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    if LOOP_FOR:
        for k0 in tl.range(k_lo, k_hi, BLOCK_K, num_stages=STAGES):
            k = k0 + kk
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & (k[None, :] < k_hi), other=0.0)
            w = tl.load(w_ptr + n[:, None] * swn + k[None, :], mask=n_ok[:, None] & (k[None, :] < k_hi), other=0.0,
                        eviction_policy="evict_first")
            acc += tl.dot(x, tl.trans(w))
    else:  # the CPU interpreter
        k0 = k_lo
        while k0 < k_hi:
            k = k0 + kk
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & (k[None, :] < k_hi), other=0.0)
            w = tl.load(w_ptr + n[:, None] * swn + k[None, :], mask=n_ok[:, None] & (k[None, :] < k_hi), other=0.0)
            acc += tl.dot(x, tl.trans(w))
            k0 += BLOCK_K
    ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT > 1:  # store the partial; the column block's last program sums them all, in order
        at = m[:, None] * N + n[None, :]
        tl.store(ws_ptr + tl.program_id(1) * M * N + at, acc, mask=ok)
        if last_ticket(tk_ptr + pid, SPLIT):
            acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for s in tl.static_range(SPLIT):
                acc += tl.load(ws_ptr + s * M * N + at, mask=ok, other=0.0, cache_modifier=".cg")
            _store_rows(acc, out_ptr, res_ptr, m, n, ok, som, srm, RESIDUAL)
    else:
        _store_rows(acc, out_ptr, res_ptr, m, n, ok, som, srm, RESIDUAL)


@triton.jit
def last_ticket(ticket_ptr, count):
    """Whether this program, having stored its partial, draws the last of ``count`` tickets on ``ticket_ptr`` (a
    compile-time or run-time count; a barrier first, so every thread's stores precede the acquire-release add at GPU
    scope); the last one resets the counter to zero for the next launch or graph replay. The split-K GEMM's, the
    projection epilogues' and the sparse kernel's one-launch merge's protocol."""
    tl.debug_barrier()
    last = tl.atomic_add(ticket_ptr, 1, sem="acq_rel", scope="gpu") == count - 1
    if last:
        tl.atomic_xchg(ticket_ptr, 0, sem="relaxed", scope="gpu")
    return last


@triton.jit
def _store_rows(acc, out_ptr, res_ptr, m, n, ok, som, srm, RESIDUAL: tl.constexpr):
    """``acc (BLOCK_M, BLOCK_N)`` float32 (+ the residual's rows ``m``, columns ``n``) rounded once into ``out``."""
    if RESIDUAL:
        acc += tl.load(res_ptr + m[:, None] * srm + n[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m[:, None] * som + n[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)


@dataclass(frozen=True)
class SplitKWorkspace:
    """A split-K launch's scratch: ``partials`` float32, at least ``S * M * N`` (a launch of fewer rows uses its first
    ``S * M * N``), and ``tickets (cdiv(N, BLOCK_N),)`` int32 zeros (each launch leaves them zero: one workspace serves
    every launch of its width on one stream, and a captured graph's replays)."""

    partials: torch.Tensor
    tickets: torch.Tensor


def block_rows(m: int) -> int:
    """The row tile (``BLOCK_M``) of a launch of ``m`` rows: the next power of two, at least 16 (``tl.dot``'s least)."""
    return max(16, triton.next_power_of_2(m))


def range_width(name: str, k: int, split_k: int, block_k: int) -> int:
    """The width ``KS`` of each of ``split_k`` equal ``K`` ranges in whole ``block_k`` steps (the last ones may be
    short or empty), ``split_k`` checked: 1 to :data:`MAX_SPLIT` (``name``: the function refusing)."""
    if isinstance(split_k, bool) or not isinstance(split_k, int) or not 1 <= split_k <= MAX_SPLIT:
        raise ValueError(f"{name}: split_k={split_k!r} must be 1..{MAX_SPLIT} (1: no split)")
    return triton.cdiv(triton.cdiv(k, split_k), block_k) * block_k


def splitk_workspace(m: int, n: int, split_k: int, block_n: int, device) -> SplitKWorkspace:
    """A :class:`SplitKWorkspace` for ``(m, n)`` outputs in ``split_k`` parts over ``block_n``-column programs."""
    return SplitKWorkspace(torch.empty((split_k, m, n), dtype=torch.float32, device=device),
                           torch.zeros(triton.cdiv(n, block_n), dtype=torch.int32, device=device))


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None,
                  out: torch.Tensor | None = None, config: tuple[int, int, int, int] = CONFIGS[0], split_k: int = 1,
                  workspace: SplitKWorkspace | None = None) -> torch.Tensor:
    """``x (M, K) @ weight (N, K).T`` (+ ``residual (M, N)``, which ``out`` may be) into ``out (M, N)`` (allocated if
    None), ``M <= 128``; rows of ``x``, ``weight``, ``residual`` and ``out`` with unit stride along the last dimension.
    ``config``: ``(BLOCK_N, BLOCK_K, stages, warps)``; ``split_k``: ``K`` in that many ranges, one launch, with
    ``workspace`` (:func:`splitk_workspace` of at least these ``M``, these ``N``, ``split_k`` and ``BLOCK_N``; made
    here if None, which a captured graph must not rely on: its tickets would be zeroed inside the graph)."""
    from . import interpreting

    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k or m > MAX_ROWS or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"skinny_linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} must be "
                         f"(M <= {MAX_ROWS}, K) and (N, K) with unit stride along K")
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if residual is not None and (residual.shape != (m, n) or residual.stride(1) != 1):
        raise ValueError(f"skinny_linear: residual {tuple(residual.shape)} must be ({m}, {n}), unit stride along N")
    block_n, block_k, stages, warps = config
    ks = range_width("skinny_linear", k, split_k, block_k)
    if split_k > 1:
        workspace = workspace or splitk_workspace(m, n, split_k, block_n, x.device)
        if workspace.partials.numel() < split_k * m * n or workspace.tickets.numel() != triton.cdiv(n, block_n):
            raise ValueError(f"skinny_linear: workspace {tuple(workspace.partials.shape)} with "
                             f"{workspace.tickets.numel()} tickets does not fit split_k={split_k}, ({m}, {n}) over "
                             f"{block_n}-column programs: splitk_workspace({m}, {n}, {split_k}, {block_n}, device)")
    res = residual if residual is not None else out
    ws = (workspace.partials, workspace.tickets) if split_k > 1 else (out, out)
    _skinny_kernel[(triton.cdiv(n, block_n), split_k)](
        x, weight, out, res, *ws, m, n, k, ks, x.stride(0), weight.stride(0), out.stride(0), res.stride(0),
        BLOCK_M=block_rows(m), BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages,
        RESIDUAL=residual is not None, SPLIT=split_k, LOOP_FOR=not interpreting(), num_warps=warps)
    return out


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`) at the draft's batch-16 rows with a residual, each config, in
    one K range and in four (a benchmark arm, timed as compiled: 16 x 128 over 4 stages keeps an 8-byte stack frame,
    so spills are allowed)."""
    ok = True
    for (block_n, block_k, stages, warps), split in ((c, s) for c in CONFIGS for s in (1, 4)):
        ok &= compile_one(f"skinny_gemm bf16 M=16 {block_n}x{block_k}x{stages} split {split}", _skinny_kernel,
                          {"x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "res_ptr": "*bf16",
                           "ws_ptr": "*fp32", "tk_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32", "KS": "i32",
                           "sxm": "i32", "swn": "i32", "som": "i32", "srm": "i32"},
                          {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "STAGES": stages, "RESIDUAL": True,
                           "SPLIT": split, "LOOP_FOR": True}, warps,
                          div16=("x_ptr", "w_ptr", "out_ptr", "res_ptr", "ws_ptr", "tk_ptr", "sxm", "swn", "som",
                                 "srm"))
    return ok
