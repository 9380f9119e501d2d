"""Nucleus (top-p) selection over attention rows, the semantics every path of specattn shares.

The nucleus of a row of non-negative weights ``a`` (shape ``(L,)``, total mass ``m = sum(a)``,
which may be < 1 for masked or partial rows) at mass ``p`` in (0, 1] is the smallest set of keys,
taking the largest weights first, whose mass reaches ``p * m``; every key whose weight ties the
last one taken is in too. Equivalently, with the threshold

    theta = max { v in a : sum(a_i for a_i >= v) >= p * m },

the nucleus is ``{i : a_i >= theta}``. It always holds the row's largest weight (a row of zeros
keeps every key), and ``p = 1.0`` keeps every key, zeros included.

On CUDA the functions here dispatch to the GPU kernels of :mod:`specattn.kernels` when they are
installed; everything else uses the float64 sort-based reference of
:mod:`specattn.core.nucleus_reference`. Both give identical masks.
"""

from __future__ import annotations

import torch

from ..core.nucleus_reference import (
    check_p,
    nucleus_chunk_mask_reference,
    nucleus_threshold_reference,
    pool_chunks,
    union_groups,
)

__all__ = ["check_p", "nucleus_threshold", "nucleus_threshold_reference", "nucleus_mask", "nucleus_chunk_mask",
           "pool_chunks", "union_groups"]


def _kernel_for(weights: torch.Tensor):
    """The Triton implementation for CUDA tensors when available, else None."""
    if not weights.is_cuda:
        return None
    try:
        from ..gpu.kernels import nucleus as kernel
    except ImportError:
        return None
    return kernel


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
    return nucleus_chunk_mask_reference(weights, p, chunk_size, group)
