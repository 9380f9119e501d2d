"""Nucleus (top-p) selection over attention rows, the semantics every path of specattn shares.

The nucleus of a row of non-negative weights ``a`` (shape ``(L,)``, total mass ``m = sum(a)``,
which may be < 1 for masked or partial rows) at mass ``p`` in (0, 1] is the smallest set of keys,
taking the largest weights first, whose mass reaches ``p * m``; every key whose weight ties the
last one taken is in too. Equivalently, with the threshold

    theta = max { v in a : sum(a_i for a_i >= v) >= p * m },

the nucleus is ``{i : a_i >= theta}``. It always holds the row's largest weight (a row of zeros
keeps every key), and ``p = 1.0`` keeps every key, zeros included.

The functions here are the float64 sort-based reference. On CUDA they dispatch to the Triton
kernel in :mod:`specattn.kernels` when it is installed; both give identical masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import SpecAttnError


def check_p(p: float) -> float:
    """Return ``p`` as float if it lies in (0, 1], else raise a one-line error."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not (0.0 < float(p) <= 1.0):
        raise SpecAttnError(f"p={p!r} is outside (0, 1]: the nucleus mass must be a number with 0 < p <= 1 (e.g. p=0.95)")
    return float(p)


def _kernel_for(weights: torch.Tensor):
    """The Triton implementation for CUDA tensors when available, else None."""
    if not weights.is_cuda:
        return None
    try:
        from .gpu.kernels import nucleus as kernel
    except ImportError:
        return None
    return kernel


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


def nucleus_threshold(weights: torch.Tensor, p: float) -> torch.Tensor:
    """Per-row nucleus threshold.

    Args:
        weights: ``(..., L)`` non-negative attention weights (fp32, fp16, bf16 or fp64).
        p: nucleus mass in (0, 1].
    Returns:
        ``(...)`` float64 thresholds; the nucleus of a row is ``weights >= threshold``.
    """
    kernel = _kernel_for(weights)
    if kernel is not None:
        return kernel.nucleus_threshold(weights, check_p(p))
    return nucleus_threshold_reference(weights, p)


def nucleus_mask(weights: torch.Tensor, p: float) -> torch.Tensor:
    """``(..., L)`` bool mask of each row's nucleus (see the module docstring)."""
    theta = nucleus_threshold(weights, p)
    return weights.to(torch.float64) >= theta.unsqueeze(-1)


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


def nucleus_chunk_mask(weights: torch.Tensor, p: float, chunk_size: int, group: int = 1) -> torch.Tensor:
    """Nucleus of each row, OR-ed over groups of ``group`` consecutive rows, pooled to chunks.

    Args:
        weights: ``(..., R, L)`` attention rows.
    Returns:
        ``(..., ceil(R / group), ceil(L / chunk_size))`` bool chunk mask.
    """
    kernel = _kernel_for(weights)
    if kernel is not None and hasattr(kernel, "nucleus_chunk_mask"):
        return kernel.nucleus_chunk_mask(weights, check_p(p), chunk_size, group)
    return pool_chunks(union_groups(nucleus_mask(weights, p), group), chunk_size)
