"""Quest's page bounds on the device (Triton): each query row's upper bound of its attention logit over every page,
``sum_d max(q_d lo_d, q_d hi_d) * scaling`` = ``(relu(q) . hi + min(q, 0) . lo) * scaling``, for the graph decoder's
Quest selection (:meth:`specattn.decode.quest_pages.QuestPages.scores`; in torch two float32 GEMMs, two clamps, an
add and a mask a layer: 52 x 38 us of GEMM alone in a 32K batch-16 step, docs/benchmarks.md, fifteenth session).

One program per (sequence, KV head) and block of pages: the KV head's query rows (its query heads x the step's rows)
against the pages' bounds (the keys' 16-bit type, as the decoder keeps them, or float32 cast to it), two tensor-core
dots accumulating in float32. The bounds are exact in that type (minima and maxima of its keys) and so is every product
(8- or 11-bit significands): only the float32 summation order differs from the torch version. Pages without prefix
keys get -inf.
Use it through ``QuestPages.scores``, which checks when it applies and runs the torch version elsewhere. H200, 32K
batch 16 (``scripts/gpu/profile_quest.py``): a layer's page scores 126.2 -> 68.8 us, a step's 28 selections 6.34 ->
4.66 ms; the kernel itself 51 us for 35 MB of float32 bounds (its registers limit occupancy; bfloat16 bounds since:
half the bytes, untimed).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..attention.sparse import KERNEL_DTYPES, KERNEL_HEAD_DIMS

BLOCK_P = 32  # pages a program (sm_90: 221 registers at 4 warps, no spills; 64 spilled)


@triton.jit
def _quest_bound_kernel(q_ptr, lo_ptr, hi_ptr, keys_ptr, out_ptr, R, NC, HKV, scaling,
                        D: tl.constexpr, RP: tl.constexpr, BLOCK: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    pages = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    rows = tl.arange(0, RP)
    dims = tl.arange(0, D)
    row_in = rows < R
    page_in = pages < NC
    ty = q_ptr.dtype.element_ty
    q = tl.load(q_ptr + bh * R * D + rows[:, None] * D + dims[None, :], mask=row_in[:, None], other=0.0)
    keys = tl.load(keys_ptr + (bh // HKV) * NC + pages, mask=page_in, other=0)
    has = page_in & (keys > 0)  # pages without keys keep infinite bounds: not loaded (no inf * 0)
    at = bh * NC * D + pages[:, None] * D + dims[None, :]
    lo = tl.load(lo_ptr + at, mask=has[:, None], other=0.0).to(ty)
    hi = tl.load(hi_ptr + at, mask=has[:, None], other=0.0).to(ty)
    pos = tl.maximum(q, 0.0).to(ty)
    neg = tl.minimum(q, 0.0).to(ty)
    bound = tl.dot(pos, tl.trans(hi)) + tl.dot(neg, tl.trans(lo))  # (RP, BLOCK) float32
    bound = tl.where(has[None, :], bound * scaling, float("-inf"))
    tl.store(out_ptr + bh * R * NC + rows[:, None] * NC + pages[None, :], bound,
             mask=row_in[:, None] & page_in[None, :])


def applies(query: torch.Tensor, head_dim: int) -> bool:
    """Whether the kernel serves these queries: the attention kernels' types and head dims (16-bit, 16-256)."""
    return query.dtype in KERNEL_DTYPES and head_dim in KERNEL_HEAD_DIMS


def launch(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, prefix_keys: torch.Tensor, scaling: float,
           out: torch.Tensor) -> torch.Tensor:
    """One launch on validated contiguous tensors: ``q (B, Hkv, R, D)`` bfloat16/float16 (R: a KV head's query rows),
    ``lo, hi (B, Hkv, NC, D)`` bounds of keys of ``q``'s type (in that type or float32), ``prefix_keys (B, NC)``
    integer (0: not in the prefix) -> ``out (B, Hkv, R, NC)`` float32."""
    b, hkv, r, d = q.shape
    nc = lo.shape[2]
    if b * hkv and r and nc:
        _quest_bound_kernel[(b * hkv, triton.cdiv(nc, BLOCK_P))](q, lo, hi, prefix_keys, out, r, nc, hkv, scaling,
                                                                 D=d, RP=max(triton.next_power_of_2(r), 16),
                                                                 BLOCK=BLOCK_P, num_warps=4)
    return out


def _aot_check(compile_one) -> bool:
    """Compile for sm_90 (:mod:`.aot_check`): Qwen2.5-Coder-1.5B's verifier (6 query heads a KV head x 5 rows, head dim
    128) and Llama-3.1-8B's (4 x 5, 128), bfloat16 and float16."""
    ok = True
    for ty, bounds in (("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32")):
        sig = {"q_ptr": f"*{ty}", "lo_ptr": f"*{bounds}", "hi_ptr": f"*{bounds}", "keys_ptr": "*i64",
               "out_ptr": "*fp32", "R": "i32", "NC": "i32", "HKV": "i32", "scaling": "fp32"}
        ok &= compile_one(f"quest_bound {ty} D=128 RP=32 {bounds} bounds", _quest_bound_kernel, sig,
                          {"D": 128, "RP": 32, "BLOCK": BLOCK_P}, 4)
    return ok
