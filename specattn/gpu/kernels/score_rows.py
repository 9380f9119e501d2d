"""A draft row from its saved scores (Triton): the ``first_*`` draft policies' row 0 without reading the keys again.

Forward 0 of a ``first_*`` policy reads every key of every draft layer anyway; its attention kernel stores the
last query row's scaled scores ``q . k * sm_scale * log2 e`` per query head (``dense_verify(..., scores_out=...)``,
float32). This launch turns them into the head-aggregated probabilities the selection reads:

    out[s, b, k] = agg_h 2^(scores[s, b, h, k] - lse[s, b, h])   for k < first[b], else 0,

``agg`` the mean (or max) over the ``Hq`` query heads: :func:`specattn.gpu.draft_rows.draft_rows` at ``R = 1``
(which scores the keys again: 2 x Hkv x D bytes a key against Hq x 4 here, 256 against 56 at the real pair's draft).
Grid ``(S * B, cdiv(W, BLOCK))``; each program loads its block of every head's scores once.
Use it through :func:`specattn.gpu.draft_rows.rows_from_scores` (shape checks, torch fallback).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # keys per program


@triton.jit
def _score_rows_kernel(sc_ptr, lse_ptr, first_ptr, out_ptr, inv_heads, W, B, sss, ssb, ssh, sls, slb, slh, sos, sob,
                       HQ: tl.constexpr, BLOCK: tl.constexpr, MAX: tl.constexpr):
    sb = tl.program_id(0)
    s = (sb // B).to(tl.int64)
    b = (sb % B).to(tl.int64)
    keys = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    visible = keys < tl.load(first_ptr + b)
    base = sc_ptr + s * sss + b * ssb
    acc = tl.zeros((BLOCK,), tl.float32)
    for h in tl.static_range(HQ):
        lse = tl.load(lse_ptr + s * sls + b * slb + h * slh)
        p = tl.exp2(tl.load(base + h * ssh + keys, mask=visible, other=float("-inf")) - lse)
        if MAX:
            acc = tl.maximum(acc, p)
        else:
            acc += p
    if not MAX:
        acc = acc * inv_heads
    tl.store(out_ptr + s * sos + b * sob + keys, tl.where(visible, acc, 0.0), mask=keys < W)


def launch(scores: torch.Tensor, lse: torch.Tensor, first: torch.Tensor, out: torch.Tensor, agg: str) -> torch.Tensor:
    """One launch on validated tensors: ``scores (S, B, Hq, >= W)`` float32 (unit stride along keys), ``lse (S, B,
    Hq)`` float32, ``first (B,)`` int32, ``out (S, B, W)`` float32 (unit stride along W)."""
    s, b, hq, _ = scores.shape
    w = out.shape[2]
    _score_rows_kernel[(s * b, triton.cdiv(w, BLOCK))](
        scores, lse, first, out, 1.0 / hq, w, b, scores.stride(0), scores.stride(1), scores.stride(2),
        lse.stride(0), lse.stride(1), lse.stride(2), out.stride(0), out.stride(1),
        HQ=hq, BLOCK=BLOCK, MAX=agg == "max", num_warps=4,
    )
    return out


def _aot_check(compile_one) -> bool:
    """Compile for sm_90 (:mod:`.aot_check`): the real pair's draft (14 query heads), mean and max."""
    ints = ["W", "B", "sss", "ssb", "ssh", "sls", "slb", "slh", "sos", "sob"]
    ok = True
    for agg in ("mean", "max"):
        ok &= compile_one(f"score_rows Hq=14 {agg}", _score_rows_kernel,
                          {"sc_ptr": "*fp32", "lse_ptr": "*fp32", "first_ptr": "*i32", "out_ptr": "*fp32",
                           "inv_heads": "fp32", **{name: "i32" for name in ints}},
                          {"HQ": 14, "BLOCK": BLOCK, "MAX": agg == "max"}, 4)
    return ok
