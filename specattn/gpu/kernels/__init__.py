"""GPU kernels, in Triton (and one in CUDA, built on first use with nvcc).

Importing this package needs neither Triton nor a GPU: the kernels live in submodules that are
imported on demand (``from specattn.gpu.kernels import nucleus``), and :func:`available` says whether
they can run here. :mod:`specattn.methods.nucleus` dispatches to :mod:`.nucleus` for CUDA tensors.

- :mod:`.nucleus`: exact sorting-free top-p (nucleus) selection, fused union-over-rows + chunk pooling.
- :mod:`.radix`: the same thresholds from a CUDA radix kernel (``nucleus_radix.cu``), loaded with ctypes.
- :mod:`.bsr`: device-side chunk mask -> BSR (indptr, indices) with no host synchronisation.
- :mod:`.tail`: the dense causal tail of a verification step merged with a sparse prefix result.
"""

from __future__ import annotations

import importlib.util
import os


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it is never imported here)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device=None) -> bool:
    """True when the Triton kernels can run on ``device`` (a CUDA device, or any under the interpreter)."""
    if not triton_available():
        return False
    if interpreting():
        return True
    import torch

    if device is not None and torch.device(device).type != "cuda":
        return False
    return torch.cuda.is_available()
