"""Sparse verification attention: one interface, several backends.

>>> from specattn.gpu.attention import AttentionShape, make_backend
>>> attn = make_backend("torch", AttentionShape(num_qo_heads=32, num_kv_heads=8, head_dim=128, chunk_size=16))
>>> attn.plan(chunk_mask, n_keys=k.shape[0], n_queries=q.shape[0])   # doctest: +SKIP
>>> out = attn.run(q, k, v)                                            # doctest: +SKIP

Backends: ``torch`` (reference; CPU or GPU; gathers the selected keys), ``triton`` (GPU; our split-KV
kernel over a device-side chunk list, no host synchronisation) and ``flashinfer`` (GPU; FlashInfer
``BlockSparseAttentionWrapper``, whose ``plan`` synchronises, + a Triton kernel for the partial chunk
and causal tail). The semantics (which keys each query row attends) are defined in
:mod:`specattn.gpu.attention.base`.

The batched, HF-layout API that a decoder calls (``q (B, Hq, T, D)``, a static ``(B, Hkv, K_cap, D)``
cache, per-sequence lengths and chunk lists on the device) is :mod:`.sparse`: :func:`sparse_verify`,
:func:`dense_verify`, :func:`chunk_lists`; the whole per-layer step is :mod:`specattn.gpu.step`.
"""

from __future__ import annotations

import torch

from ...core.errors import SpecAttnError
from .base import (
    AttentionShape,
    VerifyBackend,
    allowed_keys,
    check_step,
    n_prefix_chunks,
)
from .bsr import BSR, chunk_mask_to_bsr
from .sparse import ChunkLists, chunk_lists, dense_verify, sparse_verify

BACKENDS = ("torch", "triton", "flashinfer")


def make_backend(name: str, shape: AttentionShape, device: torch.device | str | None = None, **kwargs) -> VerifyBackend:
    """Build backend ``name`` for ``shape`` on ``device`` (flashinfer: default cuda)."""
    if name == "torch":
        from .torch_backend import TorchVerify

        return TorchVerify(shape, device, **kwargs)
    if name == "triton":
        from .triton_backend import TritonVerify

        return TritonVerify(shape, device if device is not None else "cuda", **kwargs)
    if name == "flashinfer":
        from .flashinfer_backend import FlashInferVerify

        return FlashInferVerify(shape, device if device is not None else "cuda", **kwargs)
    raise SpecAttnError(f"backend={name!r} is unknown: choose one of {', '.join(BACKENDS)}")


_CACHE: dict = {}


def verify_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_mask: torch.Tensor,
                     chunk_size: int = 16, backend: str = "torch", sm_scale: float | None = None) -> torch.Tensor:
    """One-call form: plan + run a verification step (backends are cached per shape and device)."""
    if q.dim() != 3 or k.dim() != 3:
        raise SpecAttnError(f"q, k must be (T, Hq, D) and (N, Hkv, D); got {tuple(q.shape)}, {tuple(k.shape)}")
    shape = AttentionShape(q.shape[1], k.shape[1], q.shape[2], chunk_size, q.dtype, sm_scale)
    key = (backend, shape, str(q.device))
    if key not in _CACHE:
        _CACHE[key] = make_backend(backend, shape, q.device)
    attn = _CACHE[key]
    attn.plan(chunk_mask, k.shape[0], q.shape[0])
    return attn.run(q, k, v)


__all__ = [
    "AttentionShape", "VerifyBackend", "BACKENDS", "BSR", "make_backend", "verify_attention",
    "chunk_mask_to_bsr", "allowed_keys", "check_step", "n_prefix_chunks", "ChunkLists", "chunk_lists",
    "sparse_verify", "dense_verify",
]
