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
  :func:`specattn.core.heads.aggregate_heads` gives for those modes;
* ``reads`` (optional, :class:`RowReads`): under a draft read policy (``decode.draft_reads``), also zero at the
  prefix keys each row's forward did not read (the rows as the draft computed them).

On CUDA with fp16/bf16 it is one Triton launch (:mod:`.kernels.draft_rows`) with no host
synchronisation (CUDA-graph capturable); elsewhere the same formula in torch (float32, also without
host reads).

:func:`rows_from_scores` gives one such row (``R = 1``) from the row's scores saved by the draft's own attention
(``dense_verify(..., scores_out=...)``) instead of the keys: the ``first_*`` policies' row 0, whose forward read every
key anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import SpecAttnError

AGGREGATIONS = ("mean", "max")
KERNEL_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class RowReads:
    """The keys each draft row's forward read under a draft read policy
    (:mod:`specattn.decode.draft_reads`). Row ``r`` of sequence ``b`` in slot ``s`` keeps its probability at
    key ``k`` iff the slot is not a policy layer (``policy[s]`` False), ``r < dense_rows`` (the forwards that
    read everything: 1 under ``first_dense`` / ``first_window``), ``k``'s chunk is in ``chunks[s, b]`` (the
    read set ``R_i``; one row for every slot when ``chunks`` has one), ``k``'s chunk holds a key of
    ``[lo[b], lo[b] + r)`` (the chunk straddling ``lo[b]`` included: the forward read its own keys by whole
    chunks), or ``k >= lo[b] - 1`` (row 0) / ``k >= lo[b] + r`` (row r >= 1); elsewhere 0.

    chunks ``(S or 1, B, NC)`` bool; lo ``(B,)`` int32 or int64: ``P``, the step's first draft position; policy ``(S,)``
    bool; chunk_size: keys per chunk; dense_rows: 0 or 1; row0: the index of the launch's first row among the step's
    rows (a launch of rows ``row0 ..``, its ``first`` advanced by ``row0``; ``r`` above is ``row0`` + the launch's
    row)."""

    chunks: torch.Tensor
    lo: torch.Tensor
    policy: torch.Tensor
    chunk_size: int
    dense_rows: int = 0
    row0: int = 0

    def kept(self, rows: int, width: int) -> torch.Tensor:
        """``(S, B, R, W)`` bool: where the rows keep their probabilities (the class docstring)."""
        c, dev = self.chunk_size, self.lo.device
        key = torch.arange(width, device=dev)
        chunk = key // c
        r = torch.arange(self.row0, self.row0 + rows, device=dev)
        lo = self.lo.long()[:, None, None]  # (B, 1, 1)
        inside = chunk < self.chunks.shape[2]  # keys past the chunk lists: not read (no mask indexing: capturable)
        read = self.chunks.index_select(2, chunk.clamp(max=self.chunks.shape[2] - 1)) & inside
        own = (chunk * c < lo + r[:, None]) & (chunk * c + c > lo)  # (B, R, W)
        tail = torch.where(r[:, None] == 0, lo - 1, lo + r[:, None])  # (B, R, 1)
        kept = read[:, :, None] | (own | (key >= tail))[None] | (r < self.dense_rows)[:, None]
        return kept | ~self.policy[:, None, None, None]


def draft_rows(q, lse, keys, layers, first, out, sm_scale: float, agg: str = "mean", impl: str = "auto",
               config=None, reads: RowReads | None = None):
    """Fill ``out (S, B, R, W)`` with the aggregated draft rows (module docstring); returns ``out``. ``config``: the
    kernel's :class:`~specattn.gpu.kernels.rows_config.RowsConfig` (None: the default for the draft's KV heads);
    ``reads``: zero each row at the keys its forward did not read (:class:`RowReads`)."""
    _check(q, lse, keys, layers, first, out, agg, reads)
    if impl not in ("auto", "torch", "triton"):
        raise SpecAttnError(f"impl={impl!r} is unknown: use 'auto', 'triton' or 'torch'")
    from .kernels import available

    use = impl != "torch" and available(q.device) and q.dtype in KERNEL_DTYPES and keys.dtype == q.dtype
    if impl == "triton" and not use:
        raise SpecAttnError(f"impl='triton' needs a CUDA GPU (or TRITON_INTERPRET=1) and fp16/bf16, got {q.dtype}")
    if use:
        from .kernels import draft_rows as kernel

        return kernel.launch(q, lse, keys, layers, first, out, sm_scale, agg, config, reads)
    return draft_rows_torch(q, lse, keys, layers, first, out, sm_scale, agg, reads)


def draft_rows_torch(q, lse, keys, layers, first, out, sm_scale: float, agg: str = "mean",
                     reads: RowReads | None = None):
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
    if reads is not None:
        out.mul_(reads.kept(r, width))
    return out


def rows_from_scores(scores, lse, first, out, agg: str = "mean", impl: str = "auto"):
    """Fill ``out (S, B, W)`` float32 with ``agg_h 2^(scores[s, b, h, k] - lse[s, b, h])`` for ``k < first[b]``, else
    0: the rows :func:`draft_rows` gives at ``R = 1`` when ``scores (S, B, Hq, >= W)`` float32 holds the rows' scaled
    scores ``q . k * sm_scale * log2 e`` (as ``dense_verify``'s ``scores_out`` writes them) and ``lse (S, B, Hq)``
    float32 their base-2 log-sum-exps; ``first (B,)`` int32. Returns ``out``."""
    _check_agg(agg)
    if scores.dim() != 4 or scores.dtype != torch.float32 or scores.stride(3) != 1:
        raise SpecAttnError(f"scores must be (S, B, Hq, K) float32 with unit stride along K, got "
                            f"{tuple(scores.shape)} {scores.dtype}")
    s, b, hq, k = scores.shape
    if lse.shape != (s, b, hq) or lse.dtype != torch.float32 or first.shape != (b,) or first.dtype != torch.int32:
        raise SpecAttnError(f"lse must be {(s, b, hq)} float32 and first ({b},) int32, got {tuple(lse.shape)} "
                            f"{lse.dtype}, {tuple(first.shape)} {first.dtype}")
    if out.dim() != 3 or out.shape[:2] != (s, b) or out.shape[2] > k or out.dtype != torch.float32 or out.stride(2) != 1:
        raise SpecAttnError(f"out must be ({s}, {b}, W <= {k}) float32 with unit stride along W, got {tuple(out.shape)} "
                            f"{out.dtype}")
    if len({t.device for t in (scores, lse, first, out)}) != 1:
        raise SpecAttnError("rows_from_scores: put scores, lse, first and out on one device")
    from .kernels import available

    if impl == "auto" and available(scores.device) or impl == "triton":
        from .kernels import score_rows

        return score_rows.launch(scores, lse, first, out, agg)
    w = out.shape[2]
    probs = torch.exp2(scores[..., :w] - lse[..., None])
    probs = probs.masked_fill(~(torch.arange(w, device=out.device) < first.long()[:, None])[None, :, None], 0.0)
    return out.copy_(probs.mean(dim=2) if agg == "mean" else probs.amax(dim=2))


def _check_agg(agg) -> None:
    if agg not in AGGREGATIONS:
        raise SpecAttnError(f"head_agg={agg!r}: the decoder's draft rows support {', '.join(AGGREGATIONS)}")


def _check(q, lse, keys, layers, first, out, agg, reads=None) -> None:
    _check_agg(agg)
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
    if reads is not None:
        c = reads.chunks
        if (c.dim() != 3 or c.shape[0] not in (1, s) or c.shape[1] != b or c.dtype != torch.bool or c.stride(2) != 1
                or reads.policy.shape != (s,) or reads.policy.dtype != torch.bool or reads.lo.shape != (b,)
                or reads.lo.dtype not in (torch.int32, torch.int64) or reads.dense_rows not in (0, 1)
                or reads.chunk_size < 1 or reads.row0 < 0
                or len({t.device for t in (c, reads.lo, reads.policy, q)}) != 1):
            raise SpecAttnError(f"reads must hold chunks (1 or {s}, {b}, NC) bool (unit stride along NC), lo ({b},) "
                                f"int32 or int64, policy ({s},) bool on q's device, chunk_size >= 1, dense_rows 0 "
                                f"or 1 and row0 >= 0; got "
                                f"chunks {tuple(c.shape)} {c.dtype}, lo {tuple(reads.lo.shape)} {reads.lo.dtype}, "
                                f"policy {tuple(reads.policy.shape)}, dense_rows {reads.dense_rows}, row0 {reads.row0}")
