"""The float64 sort-based reference of nucleus (top-p) selection, and chunk pooling / row-group union.

Semantics in :mod:`specattn.methods.nucleus` (which dispatches CUDA tensors to the GPU kernels and everything
else here). This module imports no kernel, so the kernels can check against it without importing
:mod:`specattn.methods.nucleus` back.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .checks import check_p
from .errors import SpecAttnError


def nucleus_threshold_reference(weights: torch.Tensor, p: float) -> torch.Tensor:
    """Sort-based float64 reference of :func:`nucleus_threshold`; same shapes and semantics."""
    p = check_p(p)
    if weights.shape[-1] == 0:
        raise SpecAttnError("nucleus_threshold got rows of length 0: every row needs at least one key")
    w = weights.detach()
    if p == 1.0:
        return w.amin(dim=-1).to(torch.float64)
    ordered = _sorted_descending(w).to(torch.float64)  # casting after sorting: same values, same order
    mass = ordered.cumsum(dim=-1)
    target = p * mass[..., -1:]
    # index of the first key at which the running mass reaches the target
    first = (mass < target).sum(dim=-1, keepdim=True).clamp_(max=w.shape[-1] - 1)
    return ordered.gather(-1, first).squeeze(-1)

def _sorted_descending(weights: torch.Tensor) -> torch.Tensor:
    """Rows sorted largest first; numpy's sort for CPU float tensors (several times faster than torch's)."""
    if weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(weights.numpy(), axis=-1)).flip(-1)
    return weights.sort(dim=-1, descending=True).values

def nucleus_mask_reference(weights: torch.Tensor, p: float) -> torch.Tensor:
    """``(..., L)`` bool mask of each row's nucleus, from :func:`nucleus_threshold_reference`."""
    return weights.to(torch.float64) >= nucleus_threshold_reference(weights, p).unsqueeze(-1)

def nucleus_chunk_mask_reference(weights: torch.Tensor, p: float, chunk_size: int, group: int = 1) -> torch.Tensor:
    """Reference of :func:`specattn.methods.nucleus.nucleus_chunk_mask`: ``(..., R, L)`` -> ``(..., ceil(R / group), ceil(L / chunk_size))``."""
    return pool_chunks(union_groups(nucleus_mask_reference(weights, p), group), chunk_size)

def pool_chunks(mask: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Chunk granularity: ``(..., L)`` bool -> ``(..., ceil(L / chunk_size))``, a chunk kept if any key is.

    The last chunk may be partial (L not divisible by ``chunk_size``).
    """
    if chunk_size < 1:
        raise SpecAttnError(f"chunk_size={chunk_size} must be a positive integer (e.g. chunk_size=16)")
    length = mask.shape[-1]
    n_chunks = math.ceil(length / chunk_size)
    pad = n_chunks * chunk_size - length
    if pad:
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    return mask.reshape(*mask.shape[:-1], n_chunks, chunk_size).any(dim=-1)

def union_groups(mask: torch.Tensor, group: int, dim: int = -2) -> torch.Tensor:
    """OR together consecutive groups of ``group`` slices along ``dim`` (the last group may be short).

    ``(..., R, K)`` -> ``(..., ceil(R / group), K)`` for the default ``dim=-2``.
    """
    if group < 1:
        raise SpecAttnError(f"gamma={group} must be a positive integer (e.g. gamma=4)")
    dim = dim % mask.dim()
    rows = mask.shape[dim]
    n_groups = math.ceil(rows / group)
    pad = n_groups * group - rows
    if pad:
        pad_shape = list(mask.shape)
        pad_shape[dim] = pad
        mask = torch.cat([mask, mask.new_zeros(pad_shape)], dim=dim)
    shape = list(mask.shape)
    shape[dim : dim + 1] = [n_groups, group]
    return mask.reshape(shape).any(dim=dim + 1)
