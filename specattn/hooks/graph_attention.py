"""Attention of the graph-friendly decoder (:mod:`specattn.decode.graph_engine`), through transformers'
attention interface (``attn_implementation="specattn_graph"``).

Every forward passes one :class:`ForwardPlan` as ``specattn_graph=``; nothing in it is read on the host,
so a whole forward can be captured in a CUDA graph:

* ``prefill``: the rows are positions ``0 .. T-1`` of every sequence (an empty cache): causal SDPA over
  the first T keys;
* ``decode``: the rows are the last T of ``lengths`` keys (``lengths (B,)`` int32 on the device, the step's
  keys already written); a layer with lists in ``plan.lists`` reads only the listed prefix chunks + the
  step's own keys (:func:`~specattn.gpu.attention.sparse.sparse_verify`), every other layer the whole
  prefix (:func:`~specattn.gpu.attention.sparse.dense_verify`); a layer in ``plan.selectors`` first builds
  its lists from its own queries (Quest); a layer in ``plan.taps`` also saves its last row's rotated query
  and base-2 log-sum-exp (the draft rows' inputs, :mod:`specattn.gpu.draft_rows`).

On CUDA with fp16/bf16 the attention is the Triton split-KV kernel; elsewhere (CPU, float32)
:func:`masked_verify_torch`, the same semantics as masked torch attention with no host reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv

from ..core.errors import SpecAttnError
from ..gpu.attention.sparse import (
    KERNEL_DTYPES,
    KERNEL_HEAD_DIMS,
    ChunkLists,
    dense_verify,
    sparse_verify,
)

GRAPH_ATTENTION = "specattn_graph"


@dataclass
class RowTap:
    """Where one layer's last query row goes: ``q (B, Hq, D)`` and ``lse (B, Hq)`` float32 views, and optionally
    its scaled scores at every key, ``scores (B, Hq, K_cap)`` float32 (dense reads on the kernel path:
    ``dense_verify(..., scores_out=...)``)."""

    q: torch.Tensor
    lse: torch.Tensor
    scores: torch.Tensor | None = None


@dataclass
class ForwardPlan:
    """One forward of one model: phase, device-side lengths, the sparse layers' lists, the row taps."""

    phase: str  # "prefill" | "decode"
    lengths: torch.Tensor | None = None  # (B,) int32: keys valid after this forward's writes
    chunk_size: int = 16
    lists: dict[int, ChunkLists] = field(default_factory=dict)  # layer -> its chunk lists
    taps: dict[int, RowTap] = field(default_factory=dict)  # layer -> where its last row goes
    workspace: object = None  # the split kernel's workspace (shared by the layers: they run in order)
    selectors: dict = field(default_factory=dict)  # layer -> f(query, scaling) -> ChunkLists (e.g. Quest)
    split: object = None  # the kernel's SplitConfig (None: its default; the workspace must be made for it)
    sparse_split: object = None  # the launch of the layers that read chunk lists (None: split's, in workspace)
    sparse_workspace: object = None  # made for sparse_split (None: workspace)


def use_kernels(device, dtype: torch.dtype, head_dim: int) -> bool:
    """True where the Triton attention kernels run (CUDA or the interpreter, fp16/bf16, a supported D)."""
    from ..gpu.kernels import available

    return available(device) and dtype in KERNEL_DTYPES and head_dim in KERNEL_HEAD_DIMS


def masked_verify_torch(q, k, v, lengths, chunk_size: int, sm_scale: float, lists: ChunkLists | None = None,
                        lse_out: torch.Tensor | None = None) -> torch.Tensor:
    """``sparse_verify`` (``lists``) / ``dense_verify`` (None) semantics as masked attention over the whole
    cache, without host reads: ``q (B, Hq, T, D)``, ``k, v (B, Hkv, K_cap, D)``, ``lengths (B,)`` ->
    ``(B, T, Hq, D)``; float32 (float64 for float64 inputs). ``lse_out (B, Hq)``: the last row's base-2
    log-sum-exp."""
    b, hq, t, _ = q.shape
    hkv, k_cap = k.shape[1], k.shape[2]
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    key = torch.arange(k_cap, device=q.device)
    prefix = (lengths.long() - t)[:, None, None]  # (B, 1, 1)
    rows = torch.arange(t, device=q.device)[None, :, None]
    tail = (key >= prefix) & (key <= prefix + rows)  # (B, T, K)
    if lists is None:
        head = (key < prefix)[:, None]  # (B, 1, 1, K): every prefix key
    else:
        n_cols = -(-k_cap // chunk_size)
        ids, n = lists.ids.long(), lists.n.long()
        entry = torch.arange(ids.shape[-1], device=q.device)
        ok = (entry < n[..., None]) & (ids >= 0) & (ids < n_cols)
        chosen = torch.zeros(*ids.shape[:2], n_cols + 1, dtype=torch.bool, device=q.device)
        chosen.scatter_(-1, torch.where(ok, ids, n_cols), True)  # not-kept entries land in the spare column
        head = (chosen[..., key // chunk_size] & (key < prefix))[:, :, None]  # (B, H_sel, 1, K)
    visible = (head | tail[:, None]).repeat_interleave(hq // head.shape[1], dim=1)  # (B, Hq, T, K)
    keys = repeat_kv(k, hq // hkv).to(cdt)
    values = repeat_kv(v, hq // hkv).to(cdt)
    scores = torch.einsum("bhtd,bhkd->bhtk", q.to(cdt), keys) * sm_scale
    scores = scores.masked_fill(~visible, float("-inf"))
    if lse_out is not None:
        lse_out.copy_(torch.logsumexp(scores[:, :, -1], dim=-1) / math.log(2))
    out = torch.einsum("bhtk,bhkd->bthd", torch.softmax(scores, dim=-1), values)
    return out.to(q.dtype)


def graph_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                    specattn_graph: ForwardPlan | None = None, **kwargs):
    """Attention-interface function; query ``(B, Hq, T, D)``, key/value the layer's whole static cache
    ``(B, Hkv, K_cap, D)``; returns ``((B, T, Hq, D), None)``."""
    plan = specattn_graph
    if plan is None:
        raise TypeError("attn_implementation='specattn_graph' needs specattn_graph=ForwardPlan(...) in the forward")
    t = query.shape[2]
    if plan.phase == "prefill":
        keys = repeat_kv(key[:, :, :t], module.num_key_value_groups)
        values = repeat_kv(value[:, :, :t], module.num_key_value_groups)
        out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, is_causal=True, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    layer = module.layer_idx
    lists, tap = plan.lists.get(layer), plan.taps.get(layer)
    if layer in plan.selectors:  # the layer selects from its own queries (Quest)
        lists = plan.selectors[layer](query, scaling)
    lse, last_q = (tap.lse, tap.q) if tap is not None else (None, None)
    if use_kernels(query.device, query.dtype, query.shape[-1]):  # the kernel's merge writes the tap's lse and query
        if lists is None:
            out = dense_verify(query, key, value, plan.lengths, plan.chunk_size, scaling, workspace=plan.workspace,
                               config=plan.split, lse_out=lse, q_out=last_q,
                               scores_out=tap.scores if tap is not None else None)
        else:
            if tap is not None and tap.scores is not None:
                raise SpecAttnError(f"layer {layer}: a row tap with scores needs a dense read (it has chunk lists)")
            split, workspace = ((plan.sparse_split, plan.sparse_workspace) if plan.sparse_split is not None
                                else (plan.split, plan.workspace))
            out = sparse_verify(query, key, value, plan.lengths, lists.ids, lists.n, plan.chunk_size, scaling,
                                workspace=workspace, config=split, lse_out=lse, q_out=last_q)
    else:
        out = masked_verify_torch(query, key, value, plan.lengths, plan.chunk_size, scaling, lists, lse)
        if tap is not None:
            tap.q.copy_(query[:, :, -1])
    return out, None


AttentionInterface.register(GRAPH_ATTENTION, graph_attention)
