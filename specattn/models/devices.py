"""Where and in what precision models run: ``device`` and ``dtype`` settings -> torch objects."""

from __future__ import annotations

import torch

from ..core.errors import SpecAttnError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda`` -> a device that exists here, or a one-line error."""
    if name not in DEVICES:
        raise SpecAttnError(f"device={name!r} is unknown: allowed are {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecAttnError(
            f"device=cuda but no CUDA GPU is visible (torch {torch.__version__}): use device=cpu or device=auto"
        )
    return torch.device(name)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """``float32|bfloat16|float16|auto`` -> torch dtype (auto: bf16 on CUDA, fp32 on CPU)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
