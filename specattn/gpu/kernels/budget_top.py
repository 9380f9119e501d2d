"""The budgeted baselines' chunk choice on the device (Triton): :func:`specattn.methods.budget.top_chunks` in one
launch, for Quest's selection in the graph decoder (about 15 small torch launches and a stable argsort a layer
otherwise).

One program per (sequence, head) row of ``scores (S, H, NC)`` float32: the chunks in rank order (score descending,
ties to the lower index, chunks without prefix keys last) by one sort of a 63-bit key (the score's order-preserving
32 bits above the complemented chunk index), the running sum of their prefix keys ``keys (S, NC)``, and chunk ``c``
of rank ``r`` kept iff it has keys and (``before_r + keys_c / 2 <= budget[s]`` or ``r < min_chunks``), exactly as
``top_chunks`` decides (the budget test doubled, in float64: exact). Writes ``mask (S, H, NC)`` bool (every entry).
Use it through :func:`specattn.methods.budget.top_chunks`, which checks shapes and runs the torch version elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_CHUNKS = 8192  # one program sorts every chunk of its row in registers (128K keys at 16-key chunks; sm_90:
#                    no spills up to here at NCP / 512 warps)
LOW = tl.constexpr(2147483647)  # 2^31 - 1: the index field's mask


@triton.jit(do_not_specialize=["NC", "H", "min_chunks"])
def _budget_top_kernel(sc_ptr, keys_ptr, budget_ptr, mask_ptr, NC, H, min_chunks, ss_row, sk_row, sm_row,
                       NCP: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    s = row // H
    c = tl.arange(0, NCP)
    inside = c < NC
    keys = tl.load(keys_ptr + s * sk_row + c, mask=inside, other=0).to(tl.int64)
    score = tl.load(sc_ptr + row * ss_row + c, mask=inside, other=0.0) + 0.0  # -0.0 -> +0.0 (they tie)
    score = tl.where(keys == 0, float("-inf"), score)
    bits = score.to(tl.int32, bitcast=True).to(tl.int64)
    mono = tl.where(bits >= 0, bits + 2147483648, LOW - (bits & LOW))  # float order as 0 .. 2^32 - 1
    order = tl.where(inside, (mono << 31) | (LOW - c.to(tl.int64)), -1)  # ties: the lower index first
    ranked = tl.sort(order, descending=True)
    valid = ranked >= 0
    cs = LOW - (ranked & LOW)  # the chunk of each rank
    taken = tl.load(keys_ptr + s * sk_row + cs, mask=valid, other=0).to(tl.int64)
    before = tl.cumsum(taken, 0) - taken
    budget2 = 2.0 * tl.load(budget_ptr + s)
    rank = tl.arange(0, NCP)
    keep = (((2 * before + taken).to(tl.float64) <= budget2) | (rank < min_chunks)) & (taken > 0)
    tl.store(mask_ptr + row * sm_row + cs, keep.to(tl.int8), mask=valid)


def launch(scores: torch.Tensor, prefix_keys: torch.Tensor, budget: torch.Tensor, min_chunks: int,
           out: torch.Tensor) -> torch.Tensor:
    """One launch on validated tensors: ``scores (S, H, NC)`` float32, ``prefix_keys (S, NC)`` integer, ``budget
    (S,)`` float64, ``out (S, H, NC)`` bool, all contiguous, ``NC <= MAX_CHUNKS``."""
    s, h, nc = scores.shape
    ncp = max(triton.next_power_of_2(nc), 16)
    _budget_top_kernel[(s * h,)](scores, prefix_keys, budget, out.view(torch.int8), nc, h, min_chunks, nc, nc, nc,
                                 NCP=ncp, num_warps=min(max(ncp // 512, 4), 16))
    return out


def _aot_check(compile_one) -> bool:
    """Compile for sm_90 (:mod:`.aot_check`): rows of up to 4,096 and 8,192 chunks (32K and 128K keys at 16)."""
    sig = {"sc_ptr": "*fp32", "keys_ptr": "*i64", "budget_ptr": "*fp64", "mask_ptr": "*i8", "NC": "i32", "H": "i32",
           "min_chunks": "i32", "ss_row": "i32", "sk_row": "i32", "sm_row": "i32"}
    ok = True
    for ncp, warps in ((4096, 8), (8192, 16)):
        ok &= compile_one(f"budget_top NC={ncp}", _budget_top_kernel, sig, {"NCP": ncp}, warps)
    return ok
