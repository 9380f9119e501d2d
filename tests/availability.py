"""What this machine offers the GPU tests, and the decorators that mark and skip them."""

import importlib
import os

import pytest
import torch


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = _importable("triton")
HAS_FLASHINFER = _importable("flashinfer")
INTERPRET = HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1"

def needs_interpreter(test):
    """A test of the Triton kernels on the CPU interpreter (``pip install triton``, ``TRITON_INTERPRET=1``): marked
    ``interpreter`` (``pytest -m interpreter`` selects them), skipped without it."""
    test = pytest.mark.skipif(not INTERPRET, reason="needs triton with TRITON_INTERPRET=1")(test)
    return pytest.mark.interpreter(test)


def needs_gpu(test):
    """A GPU test of the Triton kernels: marked ``gpu``, skipped without CUDA and triton."""
    test = pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA GPU and triton")(test)
    return pytest.mark.gpu(test)


def needs_flashinfer(test):
    """A GPU test that also needs flashinfer: marked ``gpu``, skipped without them."""
    test = pytest.mark.skipif(not (HAS_CUDA and HAS_FLASHINFER), reason="needs a CUDA GPU and flashinfer")(test)
    return pytest.mark.gpu(test)
