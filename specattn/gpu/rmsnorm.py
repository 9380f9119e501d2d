"""A drop-in for transformers' Llama-family RMSNorm modules that runs as one kernel on the GPU.

:func:`fuse_rmsnorms` replaces every ``*RMSNorm`` module of a model (same ``weight`` parameter, same
epsilon) with :class:`FusedRMSNorm`: one Triton launch for fp16/bf16 inputs on CUDA
(:mod:`specattn.gpu.kernels.rmsnorm`, the same arithmetic), HF's formula elsewhere. The graph decoder's
benchmark uses it to cut the number of launches a decoding step replays (eight per norm in HF's version).
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_DTYPES = (torch.float16, torch.bfloat16)


class FusedRMSNorm(nn.Module):
    """``weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(x.dtype)``, as ``LlamaRMSNorm``."""

    def __init__(self, weight: nn.Parameter, eps: float):
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        from .kernels import available

        if (available(hidden_states.device) and hidden_states.dtype in KERNEL_DTYPES
                and self.weight.dtype == hidden_states.dtype and hidden_states.stride(-1) == 1):
            from .kernels.rmsnorm import rmsnorm

            return rmsnorm(hidden_states.contiguous(), self.weight, self.variance_epsilon)
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def fuse_rmsnorms(model: nn.Module) -> int:
    """Replace every RMSNorm module of ``model`` in place; returns how many were replaced."""
    targets = [(name, module) for name, module in model.named_modules()
               if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FusedRMSNorm(module.weight, module.variance_epsilon))
    return len(targets)
