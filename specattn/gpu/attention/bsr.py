"""Chunk masks -> FlashInfer BSR arrays (``indptr``, ``indices``) on the device, with no host sync.

A verification step of one sequence attends its prefix with one block row (the gamma+1 query rows,
all heads share the pattern), so the BSR of a verifier layer is ``indptr = [0, nnz]`` and
``indices`` = the kept chunk ids in increasing order. Several layers (or block rows) are built in
one call: ``mask`` has shape ``(..., MB, NB)`` (MB block rows, NB chunk columns) and the result is
``indptr (..., MB + 1)`` and ``indices (..., MB * NB)`` int32, preallocated for the worst case
(every chunk kept). Entries of ``indices`` past ``indptr[..., -1]`` are unspecified (the torch path
writes zeros). No ``.item()``, no ``nonzero()``: the output size never depends on the data, so the
call can be captured in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.errors import SpecAttnError


@dataclass
class BSR:
    """Block-sparse row pattern: ``indptr (..., MB+1)``, ``indices (..., MB*NB)`` int32, ``n_cols = NB``."""

    indptr: torch.Tensor
    indices: torch.Tensor
    n_cols: int


def _bsr_torch(mask: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor) -> None:
    """Torch version of the BSR build (any device, no host synchronisation)."""
    b, mb, nb = mask.shape
    if b * mb * nb == 0:
        indptr.zero_()
        return
    m = mask.to(torch.int32)
    counts = m.sum(-1)  # (B, MB)
    indptr.zero_()
    indptr[:, 1:] = counts.cumsum(-1)
    pos = m.cumsum(-1) - 1 + indptr[:, :-1, None]  # (B, MB, NB) slot of each kept chunk
    dump = mb * nb  # one spare slot absorbs the writes of the chunks not kept
    slot = torch.where(mask, pos, torch.full_like(pos, dump)).reshape(b, -1).to(torch.int64)
    cols = torch.arange(nb, dtype=torch.int32, device=mask.device).expand(b, mb, nb).reshape(b, -1)
    buf = torch.zeros((b, dump + 1), dtype=torch.int32, device=mask.device)
    buf.scatter_(1, slot, cols)
    indices.copy_(buf[:, :dump])


def chunk_mask_to_bsr(mask: torch.Tensor, out: BSR | None = None, impl: str = "auto") -> BSR:
    """Build the BSR arrays of ``mask (..., MB, NB)`` bool (a ``(NB,)`` mask is one block row).

    Args:
        mask: kept chunks per block row.
        out: preallocated :class:`BSR` to fill in place (for CUDA graphs); allocated when None.
        impl: ``"triton"`` (one launch, CUDA), ``"torch"`` (any device) or ``"auto"`` (triton on CUDA
            when available, else torch).
    """
    if mask.dtype != torch.bool:
        raise SpecAttnError(f"chunk mask has dtype {mask.dtype}: pass a bool mask (e.g. mask > 0)")
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.dim() < 2:
        raise SpecAttnError(f"chunk mask needs shape (..., MB, NB), got {tuple(mask.shape)}")
    lead, (mb, nb) = mask.shape[:-2], mask.shape[-2:]
    b = 1
    for size in lead:
        b *= size
    flat = mask.reshape(b, mb, nb)
    if out is None:
        out = BSR(
            torch.empty((*lead, mb + 1), dtype=torch.int32, device=mask.device),
            torch.empty((*lead, mb * nb), dtype=torch.int32, device=mask.device),
            nb,
        )
    elif out.indptr.shape != (*lead, mb + 1) or out.indices.shape != (*lead, mb * nb):
        raise SpecAttnError(
            f"preallocated BSR has shapes {tuple(out.indptr.shape)}, {tuple(out.indices.shape)}; "
            f"mask {tuple(mask.shape)} needs {(*lead, mb + 1)}, {(*lead, mb * nb)}"
        )
    indptr = out.indptr.view(b, mb + 1)
    indices = out.indices.view(b, mb * nb)
    if impl not in ("auto", "triton", "torch"):
        raise SpecAttnError(f"impl={impl!r} is not a CSR implementation: use 'auto', 'triton' or 'torch'")
    if impl == "auto":
        from ..kernels import available

        impl = "triton" if mask.is_cuda and available(mask.device) else "torch"
    if impl == "triton":
        from ..kernels import bsr as kbsr

        kbsr.bsr_from_mask(flat, indptr, indices)
    else:
        _bsr_torch(flat, indptr, indices)
    return out


def bsr_reference(mask: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
    """Plain-Python BSR of ``mask (B, MB, NB)``: per matrix, indptr and the kept indices (tests)."""
    ptrs, idxs = [], []
    b = 1
    for size in mask.shape[:-2]:
        b *= size
    for mat in mask.reshape(b, *mask.shape[-2:]).tolist():
        ptr, idx = [0], []
        for row in mat:
            idx += [c for c, keep in enumerate(row) if keep]
            ptr.append(len(idx))
        ptrs.append(ptr)
        idxs.append(idx)
    return ptrs, idxs
