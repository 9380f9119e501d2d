"""Sparse verification attention over device-side chunk lists: the batched API in HF's layout.

What the decoder calls per verifier layer and step (shapes as HF attention functions see them):

* ``q (B, Hq, T, D)``: the step's T = gamma + 1 query rows;
* ``k, v (B, Hkv, K_cap, D)``: the layer's static KV cache (views with any strides, unit stride along
  D); ``lengths (B,)`` int32 on the device: keys ``[0, lengths[b])`` are valid and the step's own T keys
  are the last T of them, so sequence b's prefix is ``[0, P_b)``, ``P_b = lengths[b] - T``;
* ``chunk_ids (B, H_sel, cap)`` and ``n_chunks (B, H_sel)`` int32 on the device: the selected prefix
  chunks, ``H_sel = 1`` (one list for all heads) or ``Hkv`` (one per KV head); chunk c covers keys
  ``[c*C, min((c+1)*C, P_b))`` (a partial last prefix chunk is allowed); ids outside the prefix select
  nothing. ``cap`` is a fixed worst case (e.g. ``ceil((K_cap - T) / C)``).

:func:`sparse_verify` returns ``(B, T, Hq, D)`` (HF's attention output before its reshape): row t of
sequence b attends the listed prefix chunks and the step's keys ``P_b .. P_b + t``, exactly
:func:`specattn.core.visibility.visible_keys`. :func:`dense_verify` is the same kernel with every prefix chunk
listed implicitly (our dense baseline). Both can also write ``lse_out (B, Hq)`` float32: the last row's
(t = T - 1) base-2 log-sum-exp ``log2 sum_k 2^(q.k * sm_scale * log2 e)`` over the keys it attends (what
the decoder needs to recompute a draft row's probabilities). :func:`chunk_lists` turns a
``(B, H_sel, NC)`` bool chunk mask into such lists. On CUDA (fp16/bf16) these run the Triton kernels of :mod:`specattn.gpu.kernels` with no
host synchronisation (CUDA-graph capturable); elsewhere (CPU, float32/float64) the torch reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.errors import SpecAttnError
from ...core.visibility import visible_keys

KERNEL_DTYPES = (torch.float16, torch.bfloat16)
KERNEL_HEAD_DIMS = (16, 32, 64, 128, 256)


@dataclass
class ChunkLists:
    """Selected chunks per (sequence, selection head): ``ids (B, H_sel, cap)``, ``n (B, H_sel)`` int32."""

    ids: torch.Tensor
    n: torch.Tensor

    @staticmethod
    def empty(batch: int, heads: int, capacity: int, device) -> ChunkLists:
        return ChunkLists(torch.zeros((batch, heads, capacity), dtype=torch.int32, device=device),
                          torch.zeros((batch, heads), dtype=torch.int32, device=device))


def _use_kernel(impl: str, t: torch.Tensor, dtypes=KERNEL_DTYPES) -> bool:
    if impl not in ("auto", "triton", "torch"):
        raise SpecAttnError(f"impl={impl!r} is unknown: use 'auto', 'triton' or 'torch'")
    if impl == "torch":
        return False
    from ..kernels import available

    ok = available(t.device) and t.dtype in dtypes
    if impl == "triton" and not ok:
        raise SpecAttnError(f"impl='triton' needs a CUDA GPU (or TRITON_INTERPRET=1) with triton and one of "
                            f"{', '.join(map(str, dtypes))}; got {t.dtype} on {t.device}: use impl='torch'")
    return ok


# ------------------------------------------------------------------------------------------ lists
def chunk_lists(mask: torch.Tensor, capacity: int | None = None, out: ChunkLists | None = None,
                impl: str = "auto") -> ChunkLists:
    """``(B, H_sel, NC)`` bool chunk mask -> :class:`ChunkLists` of capacity ``capacity`` (default NC,
    at least NC), kept ids in increasing order. No host synchronisation (one launch on CUDA)."""
    if mask.dtype != torch.bool or mask.dim() != 3:
        raise SpecAttnError(f"chunk mask must be (B, H_sel, NC) bool, got {tuple(mask.shape)} {mask.dtype}")
    b, h, nc = mask.shape
    cap = nc if capacity is None else int(capacity)
    if cap < nc:
        raise SpecAttnError(f"capacity={cap} is below the mask's {nc} chunks: a list must hold every chunk")
    if out is None:
        out = ChunkLists.empty(b, h, cap, mask.device)
    elif out.ids.shape != (b, h, cap) or out.n.shape != (b, h):
        raise SpecAttnError(f"preallocated lists have shapes {tuple(out.ids.shape)}, {tuple(out.n.shape)}; "
                            f"the mask needs {(b, h, cap)}, {(b, h)}")
    if not (out.ids.is_contiguous() and out.n.is_contiguous()):
        raise SpecAttnError("preallocated chunk lists must be contiguous")
    flat = mask.reshape(b * h, nc)
    if nc and flat.stride(-1) != 1:
        flat = flat.contiguous()
    if b * h == 0:
        return out
    if _use_kernel(impl, mask, (torch.bool,)):
        from ..kernels.chunk_list import lists_from_mask

        lists_from_mask(flat, out.ids.view(b * h, cap), out.n.view(b * h))
    else:
        _lists_torch(flat, out.ids.view(b * h, cap), out.n.view(b * h))
    return out


def _lists_torch(mask: torch.Tensor, ids: torch.Tensor, n: torch.Tensor) -> None:
    """Torch version of the list build (any device, no host synchronisation)."""
    g, nc = mask.shape
    keep = mask.to(torch.int32)
    n.copy_(keep.sum(-1))
    if nc == 0:
        return
    pos = keep.cumsum(-1) - 1
    dump = ids.shape[1]  # one spare column absorbs the chunks not kept
    slot = torch.where(mask, pos, torch.full_like(pos, dump)).to(torch.int64)
    buf = torch.cat([ids, ids.new_zeros(g, 1)], dim=1)
    buf.scatter_(1, slot, torch.arange(nc, dtype=torch.int32, device=mask.device).expand(g, nc).contiguous())
    ids.copy_(buf[:, :dump])


# -------------------------------------------------------------------------------------- attention
def check_verify(q, k, v, lengths, lists: ChunkLists | None = None) -> None:
    """Validate shapes, dtypes and devices (host-side metadata only: no synchronisation)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise SpecAttnError(f"q, k, v must be (B, Hq, T, D), (B, Hkv, K_cap, D), (B, Hkv, K_cap, D); got "
                            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, hq, t, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
        raise SpecAttnError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not fit q {tuple(q.shape)}: "
                            "need k, v of shape (B, Hkv, K_cap, D) with q's B and D")
    hkv, cap_keys = k.shape[1], k.shape[2]
    if hq % hkv:
        raise SpecAttnError(f"Hq={hq} is not a multiple of Hkv={hkv}: GQA needs Hq = g * Hkv")
    if not 1 <= t <= cap_keys:
        raise SpecAttnError(f"{t} query rows with a cache of {cap_keys} keys: need 1 <= T <= K_cap")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise SpecAttnError(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}): cast them to one dtype")
    if not (q.device == k.device == v.device == lengths.device):
        raise SpecAttnError(f"q, k, v, lengths are on {q.device}, {k.device}, {v.device}, {lengths.device}: "
                            "put them on one device")
    if lengths.shape != (b,) or lengths.dtype != torch.int32:
        raise SpecAttnError(f"lengths must be ({b},) int32, got {tuple(lengths.shape)} {lengths.dtype}")
    if lists is not None:
        ids, n = lists.ids, lists.n
        if ids.dim() != 3 or ids.shape[:2] != n.shape or ids.shape[0] != b or ids.shape[1] not in (1, hkv):
            raise SpecAttnError(f"chunk_ids {tuple(ids.shape)} / n_chunks {tuple(n.shape)} must be (B, H_sel, cap) "
                                f"and (B, H_sel) with B={b} and H_sel 1 or Hkv={hkv}")
        if ids.dtype != torch.int32 or n.dtype != torch.int32 or ids.device != q.device or n.device != q.device:
            raise SpecAttnError(f"chunk_ids and n_chunks must be int32 on {q.device}, got {ids.dtype} on {ids.device}"
                                f" and {n.dtype} on {n.device}")
        if ids.shape[2] and ids.stride(2) != 1:
            raise SpecAttnError("chunk_ids needs unit stride along its last dimension")


def _kernel_ok(q, k, v, impl: str) -> bool:
    use = _use_kernel(impl, q)
    if use and (q.shape[3] not in KERNEL_HEAD_DIMS or k.stride(3) != 1 or v.stride(3) != 1):
        if impl == "triton":
            raise SpecAttnError(f"impl='triton' needs head_dim in {KERNEL_HEAD_DIMS} and k, v with unit stride "
                                f"along D; got D={q.shape[3]}, strides {k.stride()}, {v.stride()}")
        return False
    return use


def kernel_runs(q, k, v) -> bool:
    """Whether :func:`sparse_verify` (``impl="auto"``) runs the Triton kernel for these tensors (else the torch
    reference): CUDA (or the interpreter), fp16/bf16, a supported head dim, unit stride along D."""
    return _kernel_ok(q, k, v, "auto")


def _run_kernel(q, k, v, lengths, lists, chunk_size, sm_scale, out, workspace, config, dense, lse_out=None,
                q_out=None, scores_out=None):
    from ..kernels import sparse_attn as K

    b, hq, t, d = q.shape
    hkv = k.shape[1]
    capacity = lists.ids.shape[2] if lists is not None else n_chunks_capacity(k.shape[2], t, chunk_size)
    config = config or K.SplitConfig()
    if out is None:
        out = torch.empty((b, t, hq, d), dtype=q.dtype, device=q.device)
    elif out.shape != (b, t, hq, d) or out.dtype != q.dtype or out.stride(3) != 1:
        raise SpecAttnError(f"out must be ({b}, {t}, {hq}, {d}) {q.dtype} with unit stride along D")
    if workspace is None:
        workspace = K.make_workspace(b, hkv, hq // hkv, t, d, config, q.device)
    if q.stride(3) != 1:
        q = q.contiguous()
    ids, n = (lists.ids, lists.n) if lists is not None else (None, None)
    return K.launch(q, k, v, lengths, ids, n, chunk_size, sm_scale, out, workspace, capacity, config, dense, lse_out,
                    q_out, scores_out)


def n_chunks_capacity(k_cap: int, n_queries: int, chunk_size: int) -> int:
    """Chunks of the longest prefix a ``k_cap``-key cache holds with ``n_queries`` step rows."""
    return math.ceil(max(k_cap - n_queries, 0) / chunk_size)


def sparse_verify(q, k, v, lengths, chunk_ids, n_chunks, chunk_size: int = 16, sm_scale: float | None = None,
                  out: torch.Tensor | None = None, workspace=None, config=None, impl: str = "auto",
                  lse_out: torch.Tensor | None = None, q_out: torch.Tensor | None = None) -> torch.Tensor:
    """Verification attention over the listed prefix chunks + the causal tail; ``(B, T, Hq, D)``.

    Args (see the module docstring for shapes): ``out`` a preallocated output; ``workspace`` a
    :class:`specattn.gpu.kernels.sparse_attn.Workspace` (split partials; allocated per call when None);
    ``config`` a :class:`~specattn.gpu.kernels.sparse_attn.SplitConfig`; ``impl`` ``"auto"`` (Triton on
    CUDA for fp16/bf16, else torch), ``"triton"`` or ``"torch"``; ``lse_out`` ``(B, Hq)`` float32 (any
    strides), written with the last row's base-2 log-sum-exp (module docstring); ``q_out`` ``(B, Hq, D)`` in q's
    dtype (unit stride along D), written with the last row's query ``q[:, :, -1]`` (the kernel's merge stores it,
    so a caller that needs it, the decoder's draft rows, launches no copy).
    """
    lists = ChunkLists(chunk_ids, n_chunks)
    check_verify(q, k, v, lengths, lists)
    _check_chunk_size(chunk_size)
    _check_taps(lse_out, q_out, q)
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[3])
    if _kernel_ok(q, k, v, impl):
        return _run_kernel(q, k, v, lengths, lists, chunk_size, scale, out, workspace, config, False, lse_out, q_out)
    _last_query(q_out, q)
    return _into(out, sparse_verify_torch(q, k, v, lengths, chunk_ids, n_chunks, chunk_size, scale, lse_out=lse_out))


def dense_verify(q, k, v, lengths, chunk_size: int = 16, sm_scale: float | None = None,
                 out: torch.Tensor | None = None, workspace=None, config=None, impl: str = "auto",
                 lse_out: torch.Tensor | None = None, q_out: torch.Tensor | None = None,
                 scores_out: torch.Tensor | None = None) -> torch.Tensor:
    """Dense verification attention (every prefix key + the causal tail) with the same kernel; ``(B, T, Hq, D)``
    (``lse_out`` and ``q_out`` as in :func:`sparse_verify`). ``scores_out (B, Hq, >= K_cap)`` float32 (unit stride
    along keys), if given, receives the last row's scaled scores ``q . k * sm_scale * log2 e`` at the keys it
    attends, ``[0, lengths[b])`` (its other entries are left alone): what
    :func:`specattn.gpu.draft_rows.rows_from_scores` turns into the row's probabilities without the keys."""
    check_verify(q, k, v, lengths)
    _check_chunk_size(chunk_size)
    _check_taps(lse_out, q_out, q)
    if scores_out is not None and (scores_out.dim() != 3 or scores_out.shape[:2] != q.shape[:2]
                                   or scores_out.shape[2] < k.shape[2] or scores_out.dtype != torch.float32
                                   or scores_out.stride(2) != 1 or scores_out.device != q.device):
        raise SpecAttnError(f"scores_out must be (B, Hq, >= {k.shape[2]}) = {tuple(q.shape[:2])} + (K,) float32 on "
                            f"{q.device} with unit stride along K, got {tuple(scores_out.shape)} {scores_out.dtype}")
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[3])
    if _kernel_ok(q, k, v, impl):
        return _run_kernel(q, k, v, lengths, None, chunk_size, scale, out, workspace, config, True, lse_out, q_out,
                           scores_out)
    _last_query(q_out, q)
    _last_scores(scores_out, q, k, lengths, scale)
    b, hq, t, _ = q.shape
    nc = n_chunks_capacity(k.shape[2], t, chunk_size)
    every = ChunkLists(torch.arange(nc, dtype=torch.int32, device=q.device).expand(b, 1, nc),
                       torch.full((b, 1), nc, dtype=torch.int32, device=q.device))
    return _into(out, sparse_verify_torch(q, k, v, lengths, every.ids, every.n, chunk_size, scale, lse_out=lse_out))


def _check_taps(lse_out, q_out, q) -> None:
    if lse_out is not None and (lse_out.shape != (q.shape[0], q.shape[1]) or lse_out.dtype != torch.float32
                                or lse_out.device != q.device):
        raise SpecAttnError(f"lse_out must be (B, Hq) = {(q.shape[0], q.shape[1])} float32 on {q.device}, got "
                            f"{tuple(lse_out.shape)} {lse_out.dtype} on {lse_out.device}")
    want = (q.shape[0], q.shape[1], q.shape[3])
    if q_out is not None and (q_out.shape != want or q_out.dtype != q.dtype or q_out.device != q.device
                              or q_out.stride(2) != 1):
        raise SpecAttnError(f"q_out must be (B, Hq, D) = {want} {q.dtype} on {q.device} with unit stride along D, "
                            f"got {tuple(q_out.shape)} {q_out.dtype} on {q_out.device}, strides {q_out.stride()}")


def _last_scores(scores_out, q, k, lengths, scale: float) -> None:
    """The torch path's ``scores_out``: the last row's scaled scores at keys ``[0, lengths[b])``."""
    if scores_out is None:
        return
    width = k.shape[2]
    keys = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = torch.einsum("bhd,bhkd->bhk", q[:, :, -1].float(), keys) * (scale / math.log(2))
    visible = (torch.arange(width, device=q.device) < lengths.long()[:, None])[:, None]
    scores_out[:, :, :width] = torch.where(visible, scores, scores_out[:, :, :width])


def _last_query(q_out, q) -> None:
    """The torch paths' ``q_out``: the last row's query, copied."""
    if q_out is not None:
        q_out.copy_(q[:, :, -1])


def _check_chunk_size(chunk_size) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise SpecAttnError(f"chunk_size={chunk_size!r} must be a positive integer (e.g. 16)")


def _into(out, result):
    if out is None:
        return result
    out.copy_(result)
    return out


def sparse_verify_torch(q, k, v, lengths, chunk_ids, n_chunks, chunk_size: int, sm_scale: float,
                        compute_dtype: torch.dtype | None = None, lse_out: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: exact masked softmax over :func:`visible_keys` (float32, float64 for float64 inputs);
    ``lse_out (B, Hq)``, if given, gets the last row's base-2 log-sum-exp of the scaled scores.
    Reads ``lengths`` and ``n_chunks`` on the host (synchronises): not for the fast path."""
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    h_sel = chunk_ids.shape[1]
    cdt = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    out = torch.empty((b, t, hq, d), dtype=q.dtype, device=q.device)
    lens, counts = lengths.tolist(), n_chunks.tolist()
    for i in range(b):
        n_keys = lens[i]
        prefix = n_keys - t
        width = math.ceil(n_keys / chunk_size)
        sel = torch.zeros((h_sel, width), dtype=torch.bool, device=q.device)
        for h in range(h_sel):
            ids = chunk_ids[i, h, : counts[i][h]].long()
            sel[h, ids[(ids >= 0) & (ids < width)]] = True
        pos = torch.arange(prefix, n_keys, device=q.device)
        vis = visible_keys(pos, torch.full_like(pos, prefix), sel[:, None, :].expand(h_sel, t, width), chunk_size,
                           n_keys)  # (H_sel, T, N)
        vis = vis.repeat_interleave(hq // h_sel, dim=0)  # query head h uses list h // (Hq / H_sel)
        kk = k[i, :, :n_keys].to(cdt).repeat_interleave(hq // hkv, dim=0)  # (Hq, N, D)
        vv = v[i, :, :n_keys].to(cdt).repeat_interleave(hq // hkv, dim=0)
        s = torch.einsum("htd,hnd->htn", q[i].to(cdt), kk) * sm_scale
        s = s.masked_fill(~vis, float("-inf"))
        if lse_out is not None:
            lse_out[i] = (torch.logsumexp(s[:, -1], dim=-1) / math.log(2)).float()
        out[i] = torch.einsum("htn,hnd->thd", torch.softmax(s, dim=-1), vv).to(q.dtype)
    return out
