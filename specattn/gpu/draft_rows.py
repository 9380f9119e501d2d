"""The draft's head-aggregated attention rows for SpecAttn's selection, without per-head probabilities.

The decoder saves, for each draft row of a verification step and each draft layer the layer map needs,
the row's rotated query and its attention's base-2 log-sum-exp (written by the draft's attention kernel,
``dense_verify(..., lse_out=...)``). :func:`draft_rows` then recomputes every such row's probabilities
from the keys in the draft's cache and aggregates them over the query heads, writing one row per (layer,
sequence, draft row):

* ``q (S, B, Hq, R, D)``: slot s's draft layer, R = gamma draft rows per sequence;
* ``lse (S, B, Hq, R)`` float32: ``log2 sum_k 2^(q.k * sm_scale * log2 e)`` over the keys the row attends;
* ``keys (NL, B, Hkv, cap, D)``: the draft cache's keys (all its layers); ``layers (S,)`` int32: the
  cache layer of each slot; ``first (B,)`` int32: row r of sequence b attends keys ``[0, first[b] + r)``;
* ``out (S, B, R, W)`` float32, W <= cap: ``mean_h`` (``agg="mean"``) or ``max_h`` (``"max"``) of the
  probabilities, zero at and past each row's own key count, exactly what
  :func:`specattn.core.heads.aggregate_heads` gives for those modes.

On CUDA with fp16/bf16 it is one Triton launch (:mod:`.kernels.draft_rows`) with no host
synchronisation (CUDA-graph capturable); elsewhere the same formula in torch (float32, also without
host reads).
"""

from __future__ import annotations

import math

import torch

from ..core.errors import SpecAttnError

AGGREGATIONS = ("mean", "max")
KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def draft_rows(q, lse, keys, layers, first, out, sm_scale: float, agg: str = "mean", impl: str = "auto",
               config=None):
    """Fill ``out (S, B, R, W)`` with the aggregated draft rows (module docstring); returns ``out``. ``config``: the
    kernel's :class:`~specattn.gpu.kernels.draft_rows.RowsConfig` (None: its default)."""
    _check(q, lse, keys, layers, first, out, agg)
    if impl not in ("auto", "torch", "triton"):
        raise SpecAttnError(f"impl={impl!r} is unknown: use 'auto', 'triton' or 'torch'")
    from .kernels import available

    use = impl != "torch" and available(q.device) and q.dtype in KERNEL_DTYPES and keys.dtype == q.dtype
    if impl == "triton" and not use:
        raise SpecAttnError(f"impl='triton' needs a CUDA GPU (or TRITON_INTERPRET=1) and fp16/bf16, got {q.dtype}")
    if use:
        from .kernels import draft_rows as kernel

        return kernel.launch(q, lse, keys, layers, first, out, sm_scale, agg, config or kernel.DEFAULT)
    return draft_rows_torch(q, lse, keys, layers, first, out, sm_scale, agg)


def draft_rows_torch(q, lse, keys, layers, first, out, sm_scale: float, agg: str = "mean"):
    """The torch version (float32; float64 for float64 inputs): any device, no host synchronisation."""
    s, b, hq, r, d = q.shape
    hkv, width = keys.shape[2], out.shape[3]
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = keys.index_select(0, layers.long())[:, :, :, :width].to(cdt).repeat_interleave(hq // hkv, dim=2)
    scores = torch.einsum("sbhrd,sbhwd->sbhrw", q.to(cdt), k) * (sm_scale / math.log(2))
    probs = torch.exp2(scores - lse.to(cdt)[..., None])
    visible = torch.arange(width, device=q.device) < (first.long()[:, None] + torch.arange(r, device=q.device))[..., None]
    probs = probs.masked_fill(~visible[None, :, None], 0.0)  # (S, B, Hq, R, W)
    out.copy_(probs.mean(dim=2) if agg == "mean" else probs.amax(dim=2))
    return out


def _check(q, lse, keys, layers, first, out, agg) -> None:
    if agg not in AGGREGATIONS:
        raise SpecAttnError(f"head_agg={agg!r}: the decoder's draft rows support {', '.join(AGGREGATIONS)}")
    if q.dim() != 5 or keys.dim() != 5:
        raise SpecAttnError(f"q must be (S, B, Hq, R, D) and keys (NL, B, Hkv, cap, D); got {tuple(q.shape)}, "
                            f"{tuple(keys.shape)}")
    s, b, hq, r, d = q.shape
    if keys.shape[1] != b or keys.shape[4] != d or hq % keys.shape[2]:
        raise SpecAttnError(f"keys {tuple(keys.shape)} do not fit q {tuple(q.shape)}: need (NL, B, Hkv, cap, D) "
                            "with Hq a multiple of Hkv")
    if lse.shape != (s, b, hq, r) or lse.dtype != torch.float32:
        raise SpecAttnError(f"lse must be {(s, b, hq, r)} float32, got {tuple(lse.shape)} {lse.dtype}")
    if layers.shape != (s,) or first.shape != (b,) or layers.dtype != torch.int32 or first.dtype != torch.int32:
        raise SpecAttnError(f"layers ({s},) and first ({b},) must be int32, got {tuple(layers.shape)} {layers.dtype}, "
                            f"{tuple(first.shape)} {first.dtype}")
    if out.dim() != 4 or out.shape[:3] != (s, b, r) or out.dtype != torch.float32 or out.shape[3] > keys.shape[3]:
        raise SpecAttnError(f"out must be ({s}, {b}, {r}, W <= {keys.shape[3]}) float32, got {tuple(out.shape)} "
                            f"{out.dtype}")
    if q.stride(4) != 1 or keys.stride(4) != 1 or lse.stride(3) != 1 or out.stride(3) != 1:
        raise SpecAttnError("q, keys need unit stride along D, lse along R, out along W")
    if len({t.device for t in (q, lse, keys, layers, first, out)}) != 1:
        raise SpecAttnError("draft rows: put q, lse, keys, layers, first and out on one device")
