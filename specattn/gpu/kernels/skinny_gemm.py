"""A skinny GEMM for decoding's projections: ``out = x @ W.T (+ residual)`` with few rows (a decoding step's tokens,
``M <= 128``) and a weight that is read once from device memory (docs/benchmarks.md, thirty-second session: cuBLAS
spends 4-8 us on the draft's projections of 0.5-17 MB at batch 16, 46% of their read floor).

Program ``n`` of the grid ``(cdiv(N, BLOCK_N),)`` owns ``BLOCK_N`` output columns for all rows and streams their
``BLOCK_N x K`` weight slice once (pipelined over ``BLOCK_K``-wide steps, bypassing L1/L2 reuse: ``evict_first``),
the rows' activations ``x`` (small, re-read by every program from L2) beside it; float32 accumulation on the tensor
cores; the optional residual is added in float32 before the one rounding to the output's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: (BLOCK_N, BLOCK_K, stages, warps) the profile tries (scripts/gpu/profile_gemm.py)
CONFIGS = ((16, 128, 4, 4), (16, 256, 3, 4), (32, 128, 4, 4), (32, 256, 3, 4), (64, 128, 4, 4), (16, 512, 2, 4))


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, out_ptr, res_ptr, M, N, K, sxm, swn, som, srm,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
                   RESIDUAL: tl.constexpr, LOOP_FOR: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    kk = tl.arange(0, BLOCK_K)
    n_ok = n < N
    m_ok = m < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    if LOOP_FOR:
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            k = k0 + kk
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & (k[None, :] < K), other=0.0)
            w = tl.load(w_ptr + n[:, None] * swn + k[None, :], mask=n_ok[:, None] & (k[None, :] < K), other=0.0,
                        eviction_policy="evict_first")
            acc += tl.dot(x, tl.trans(w))
    else:  # the CPU interpreter
        k0 = 0
        while k0 < K:
            k = k0 + kk
            x = tl.load(x_ptr + m[:, None] * sxm + k[None, :], mask=m_ok[:, None] & (k[None, :] < K), other=0.0)
            w = tl.load(w_ptr + n[:, None] * swn + k[None, :], mask=n_ok[:, None] & (k[None, :] < K), other=0.0)
            acc += tl.dot(x, tl.trans(w))
            k0 += BLOCK_K
    ok = m_ok[:, None] & n_ok[None, :]
    if RESIDUAL:
        acc += tl.load(res_ptr + m[:, None] * srm + n[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m[:, None] * som + n[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None,
                  out: torch.Tensor | None = None, config: tuple[int, int, int, int] = CONFIGS[0]) -> torch.Tensor:
    """``x (M, K) @ weight (N, K).T`` (+ ``residual (M, N)``) into ``out (M, N)`` (allocated if None), ``M <= 128``;
    rows of ``x``, ``weight``, ``residual`` and ``out`` with unit stride along the last dimension. ``config``:
    ``(BLOCK_N, BLOCK_K, stages, warps)``."""
    from . import interpreting

    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k or m > 128 or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"skinny_linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} must be (M <= 128, K) "
                         "and (N, K) with unit stride along K")
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if residual is not None and (residual.shape != (m, n) or residual.stride(1) != 1):
        raise ValueError(f"skinny_linear: residual {tuple(residual.shape)} must be ({m}, {n}), unit stride along N")
    block_n, block_k, stages, warps = config
    res = residual if residual is not None else out
    _skinny_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, res, m, n, k, x.stride(0), weight.stride(0), out.stride(0), res.stride(0),
        BLOCK_M=max(16, triton.next_power_of_2(m)), BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages,
        RESIDUAL=residual is not None, LOOP_FOR=not interpreting(), num_warps=warps)
    return out


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`) at the draft's batch-16 rows with a residual, each config (a
    benchmark arm, timed as compiled: 16 x 128 over 4 stages keeps an 8-byte stack frame, so spills are allowed)."""
    ok = True
    for block_n, block_k, stages, warps in CONFIGS:
        ok &= compile_one(f"skinny_gemm bf16 M=16 {block_n}x{block_k}x{stages}", _skinny_kernel,
                          {"x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "res_ptr": "*bf16", "M": "i32",
                           "N": "i32", "K": "i32", "sxm": "i32", "swn": "i32", "som": "i32", "srm": "i32"},
                          {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "STAGES": stages, "RESIDUAL": True,
                           "LOOP_FOR": True}, warps,
                          div16=("x_ptr", "w_ptr", "out_ptr", "res_ptr", "sxm", "swn", "som", "srm"))
    return ok
