"""The sparse verification attention interface shared by every backend.

One verification step of one sequence:

* ``q``: ``(T, Hq, D)`` — the T = gamma+1 query rows of the step (last accepted token + gamma drafts);
* ``k``, ``v``: ``(N, Hkv, D)`` — the verifier layer's KV cache, *including* the T keys of the step
  itself at positions ``[P, N)``, ``P = N - T``; ``Hq`` a multiple of ``Hkv`` (MHA or GQA);
* a chunk selection over the prefix ``[0, P)``: ``chunk_mask`` ``(ceil(P / C),)`` bool, chunk ``c``
  covering keys ``[c*C, min((c+1)*C, P))`` (the last chunk may be partial), shared by all heads.

Query row ``i`` attends the keys of the selected prefix chunks (non-causally: they all precede it)
and the step's own keys ``P .. P+i`` (causally), always including itself:

    allowed(i, j) = (j < P and chunk_mask[j // C]) or (P <= j <= P + i)
    out[i, h] = softmax_j(sm_scale * q[i, h] . k[j, h // (Hq/Hkv)] over allowed j) @ v

A backend is built once per layer shape (``make_backend``), then per step ``plan(chunk_mask, ...)``
(may synchronise with the host: FlashInfer's does) and ``run(q, k, v)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ...core.errors import SpecAttnError
from ...core.visibility import visible_keys


@dataclass(frozen=True)
class AttentionShape:
    """Static shape of one verifier layer's attention."""

    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    chunk_size: int = 16
    dtype: torch.dtype = torch.bfloat16
    sm_scale: float | None = None

    @property
    def scale(self) -> float:
        return self.sm_scale if self.sm_scale is not None else 1.0 / math.sqrt(self.head_dim)

    def validate(self) -> None:
        for name in ("num_qo_heads", "num_kv_heads", "head_dim", "chunk_size"):
            val = getattr(self, name)
            if not isinstance(val, int) or val < 1:
                raise SpecAttnError(f"{name}={val!r} must be a positive integer")
        if self.num_qo_heads % self.num_kv_heads:
            raise SpecAttnError(
                f"num_qo_heads={self.num_qo_heads} is not a multiple of num_kv_heads={self.num_kv_heads}: "
                "GQA needs Hq = g * Hkv (g = 1 for MHA)"
            )


class VerifyBackend(Protocol):
    """What every backend provides."""

    name: str
    shape: AttentionShape

    def plan(self, chunk_mask: torch.Tensor, n_keys: int, n_queries: int) -> None:
        """Prepare a step: ``chunk_mask`` over the prefix of an ``n_keys`` cache with ``n_queries`` rows."""

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(T, Hq, D)`` output of the step planned last."""


def n_prefix_chunks(n_keys: int, n_queries: int, chunk_size: int) -> int:
    """Chunks of the prefix ``[0, n_keys - n_queries)`` (the last one may be partial)."""
    return math.ceil((n_keys - n_queries) / chunk_size)


def check_step(shape: AttentionShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               chunk_mask: torch.Tensor | None = None) -> None:
    """Validate the tensors of a step against ``shape``; one-line SpecAttnError naming the bad value."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise SpecAttnError(
            f"q, k, v must be (T, Hq, D), (N, Hkv, D), (N, Hkv, D); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    t, hq, d = q.shape
    n, hkv, dk = k.shape
    if v.shape != k.shape:
        raise SpecAttnError(f"v has shape {tuple(v.shape)} but k has {tuple(k.shape)}: they must match")
    if (hq, hkv, d) != (shape.num_qo_heads, shape.num_kv_heads, shape.head_dim) or dk != d:
        raise SpecAttnError(
            f"q {tuple(q.shape)} / k {tuple(k.shape)} do not match the backend's heads "
            f"{shape.num_qo_heads}/{shape.num_kv_heads} and head_dim {shape.head_dim}"
        )
    if not (1 <= t <= n):
        raise SpecAttnError(f"{t} query rows with a cache of {n} keys: need 1 <= T <= N (the step's keys are in the cache)")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise SpecAttnError(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}): cast them to one dtype")
    if not (q.device == k.device == v.device):
        raise SpecAttnError(f"q, k, v are on {q.device}, {k.device}, {v.device}: put them on one device")
    if chunk_mask is not None:
        check_chunk_mask(chunk_mask, n, t, shape.chunk_size)


def check_chunk_mask(chunk_mask: torch.Tensor, n_keys: int, n_queries: int, chunk_size: int) -> None:
    want = n_prefix_chunks(n_keys, n_queries, chunk_size)
    if chunk_mask.dtype != torch.bool or chunk_mask.shape != (want,):
        raise SpecAttnError(
            f"chunk_mask has shape {tuple(chunk_mask.shape)} and dtype {chunk_mask.dtype}; a cache of {n_keys} keys "
            f"with {n_queries} query rows and chunk_size={chunk_size} needs a ({want},) bool mask over the prefix"
        )


def allowed_keys(chunk_mask: torch.Tensor, n_keys: int, n_queries: int, chunk_size: int) -> torch.Tensor:
    """``(T, N)`` bool: which keys each query row attends (:func:`specattn.core.visibility.visible_keys`
    for one step with prefix ``[0, N - T)``)."""
    prefix = n_keys - n_queries
    positions = torch.arange(prefix, n_keys, device=chunk_mask.device)
    return visible_keys(positions, torch.full_like(positions, prefix), chunk_mask.expand(n_queries, -1),
                        chunk_size, n_keys)
