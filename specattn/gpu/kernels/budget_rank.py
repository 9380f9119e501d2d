"""The budgeted chunk choice by counting instead of sorting (Triton): the same masks as
:func:`specattn.methods.budget.top_chunks` and :mod:`.budget_top`, for a row's chunks spread over many programs.

:mod:`.budget_top` sorts each (sequence, head) row in one program: 32 programs at 32K batch 16 for Quest, each
sorting 4,096 keys. Here chunk ``c`` of a row needs only two numbers of the chunks ranked above it (the same 63-bit
key: the score's order-preserving bits above the complemented chunk index, so a strict order with ties to the lower
index, chunks without prefix keys last: :func:`.budget_top.rank_key`): how many there are (its rank) and their
prefix keys (``before``). Program ``(row, tile)`` takes ``BLOCK_C`` chunks of the row and compares them with every
chunk of it, ``BLOCK_O`` at a time (NC^2 comparisons a row, spread over ``ceil(NC / BLOCK_C)`` programs). Chunk
``c`` is kept iff it has keys and (``2 before + keys_c <= 2 budget`` or ``rank < min_chunks``), exactly the sorted
version's rule. Writes ``mask (S, H, NC)`` bool (every entry); compiled per ``NCP`` (NC rounded up to a power of
two: the loop's bound). Which of the two is faster inside the decoder's graph is ``scripts/gpu/profile_quest.py``'s
question; :func:`~specattn.methods.budget.top_chunks` dispatches to :mod:`.budget_top` until that is measured.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .budget_top import rank_key

BLOCK_C, BLOCK_O = 32, 128  # chunks decided per program, chunks compared with them per loop step


@triton.jit(do_not_specialize=["NC", "H", "min_chunks"])
def _budget_rank_kernel(sc_ptr, keys_ptr, budget_ptr, mask_ptr, NC, H, min_chunks, ss_row, sk_row, sm_row,
                        NCP: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    s = row // H
    sc_row, keys_row = sc_ptr + row * ss_row, keys_ptr + s * sk_row
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mine, taken = rank_key(sc_row, keys_row, c, NC)
    before = tl.zeros([BLOCK_C], dtype=tl.int32)
    rank = tl.zeros([BLOCK_C], dtype=tl.int32)
    for start in range(0, NCP, BLOCK_O):  # NCP: NC rounded up to a power of two (chunks past NC rank last)
        other, keys = rank_key(sc_row, keys_row, start + tl.arange(0, BLOCK_O), NC)
        above = other[None, :] > mine[:, None]  # (BLOCK_C, BLOCK_O): ranked before the chunk of the row
        before += tl.sum(tl.where(above, keys[None, :], 0), axis=1)
        rank += tl.sum(above.to(tl.int32), axis=1)
    budget2 = 2.0 * tl.load(budget_ptr + s)
    keep = (((2 * before + taken).to(tl.float64) <= budget2) | (rank < min_chunks)) & (taken > 0)
    tl.store(mask_ptr + row * sm_row + c, keep.to(tl.int8), mask=c < NC)


def launch(scores: torch.Tensor, prefix_keys: torch.Tensor, budget: torch.Tensor, min_chunks: int,
           out: torch.Tensor) -> torch.Tensor:
    """One launch on validated tensors: ``scores (S, H, NC)`` float32, ``prefix_keys (S, NC)`` integer (a row's keys
    summing below 2^30), ``budget (S,)`` float64, ``out (S, H, NC)`` bool, all contiguous."""
    s, h, nc = scores.shape
    if s * h and nc:
        ncp = max(triton.next_power_of_2(nc), BLOCK_O)
        _budget_rank_kernel[(s * h, triton.cdiv(nc, BLOCK_C))](scores, prefix_keys, budget, out.view(torch.int8), nc,
                                                                h, min_chunks, nc, nc, nc, NCP=ncp, BLOCK_C=BLOCK_C,
                                                                BLOCK_O=BLOCK_O, num_warps=4)
    return out


def _aot_check(compile_one) -> bool:
    """Compile for sm_90 (:mod:`.aot_check`)."""
    sig = {"sc_ptr": "*fp32", "keys_ptr": "*i64", "budget_ptr": "*fp64", "mask_ptr": "*i8", "NC": "i32", "H": "i32",
           "min_chunks": "i32", "ss_row": "i32", "sk_row": "i32", "sm_row": "i32"}
    ok = True
    for ncp in (4096, 8192):  # rows of 32K and 128K keys at 16-key chunks
        ok &= compile_one(f"budget_rank NC={ncp}", _budget_rank_kernel, sig,
                          {"NCP": ncp, "BLOCK_C": BLOCK_C, "BLOCK_O": BLOCK_O}, 4)
    return ok
