"""Quest's page bounds kept on the device (Triton): a step's committed keys folded into their pages' elementwise min
and max, for the graph decoder (:meth:`specattn.decode.quest_pages.QuestPages.fold`; in torch a gather, two masked
fills and two ``scatter_reduce`` a layer: 38.9 us at 32K batch 16 on the H200, ``scripts/gpu/profile_quest.py``).

One program per (sequence, KV head) owns its rows of the bounds, so no atomics: it walks the ``W`` positions
``start .. start + W - 1`` in order (those before ``stop`` and inside the cache), each key read once and folded into
its page (``pos // chunk``, the last page for positions past the pages) by a load, a min / max and a store. Exact:
min and max of the keys' values in float32, stored in the bounds' type (the keys', or float32). Use it through
``QuestPages.fold``, which runs the torch version for wide folds (the prefill's) and elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..attention.sparse import KERNEL_HEAD_DIMS

MAX_WIDTH = 64  # positions a fold may cover here (a step's gamma + 1; the prefill's whole prompt goes to torch)


@triton.jit
def _quest_fold_kernel(keys_ptr, lo_ptr, hi_ptr, start_ptr, stop_ptr, HKV, CAP, NC, CHUNK,
                       W: tl.constexpr, D: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // HKV
    start = tl.load(start_ptr + b).to(tl.int64)
    stop = tl.load(stop_ptr + b).to(tl.int64)
    dims = tl.arange(0, D)
    for i in tl.static_range(W):
        pos = start + i
        if (pos < stop) & (pos < CAP):
            key = tl.load(keys_ptr + (bh * CAP + pos) * D + dims).to(tl.float32)
            page = tl.minimum(pos // CHUNK, NC - 1)
            lo_at = lo_ptr + (bh * NC + page) * D + dims
            hi_at = hi_ptr + (bh * NC + page) * D + dims
            lo = tl.minimum(tl.load(lo_at).to(tl.float32), key)  # the next position may fold into the same page:
            hi = tl.maximum(tl.load(hi_at).to(tl.float32), key)  # each thread reads back its own store, in order
            tl.store(lo_at, lo.to(lo_ptr.dtype.element_ty))  # exact: one of the keys or the bound it was
            tl.store(hi_at, hi.to(hi_ptr.dtype.element_ty))


def applies(keys: torch.Tensor, width: int) -> bool:
    """Whether the kernel serves this fold: a contiguous cache layer (the decoder's; no copy of it a step), at most
    ``MAX_WIDTH`` positions, one of the attention kernels' head dims (16-256, powers of two)."""
    return keys.is_contiguous() and 0 < width <= MAX_WIDTH and keys.shape[-1] in KERNEL_HEAD_DIMS


def launch(keys: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor, stop: torch.Tensor,
           chunk_size: int, width: int) -> None:
    """One launch on validated contiguous tensors: ``keys (B, Hkv, cap, D)`` (any float type), ``lo, hi (B, Hkv,
    NC, D)`` the keys' type or float32 (updated in place), ``start, stop (B,)`` integer: fold keys ``[start[b],
    min(stop[b], start[b] + width))``."""
    b, hkv, cap, d = keys.shape
    if b * hkv:
        _quest_fold_kernel[(b * hkv,)](keys, lo, hi, start, stop, hkv, cap, lo.shape[2], chunk_size, W=width, D=d,
                                       num_warps=1)


def _aot_check(compile_one) -> bool:
    """Compile for sm_90 (:mod:`.aot_check`): a step's fold (gamma 4: 5 positions), head dim 128, bfloat16 keys into
    bfloat16 (the decoder's) and float32 bounds."""
    ok = True
    for bounds in ("bf16", "fp32"):
        sig = {"keys_ptr": "*bf16", "lo_ptr": f"*{bounds}", "hi_ptr": f"*{bounds}", "start_ptr": "*i64",
               "stop_ptr": "*i64", "HKV": "i32", "CAP": "i32", "NC": "i32", "CHUNK": "i32"}
        ok &= compile_one(f"quest_fold bf16 W=5 D=128 {bounds} bounds", _quest_fold_kernel, sig, {"W": 5, "D": 128}, 1)
    return ok
