"""RMSNorm in one Triton launch (one program per row), computing exactly what transformers'
``LlamaRMSNorm`` computes: ``weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(dtype)``, the product in the
input dtype (float32 arithmetic, rounded once). HF's version is eight elementwise launches; in a
decoding step of a small batch each launch costs more than its bytes. Use it through
:class:`specattn.gpu.rmsnorm.FusedRMSNorm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, out_ptr, H, eps, sx, so, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < H
    x = tl.load(x_ptr + row * sx + cols, mask=ok, other=0.0).to(tl.float32)
    scale = 1.0 / tl.sqrt(tl.sum(x * x, 0) / H + eps)
    y = (x * scale).to(out_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * so + cols, (w * y).to(out_ptr.dtype.element_ty), mask=ok)


def launch_config(hidden: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for rows of ``hidden`` values: one block holds a row."""
    block = triton.next_power_of_2(hidden)
    return block, 4 if block <= 2048 else 8


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x (..., H)`` with unit stride along H (rows may be strided only as a whole), ``weight (H,)``."""
    h = x.shape[-1]
    rows = x.reshape(-1, h)
    out = torch.empty_like(rows)
    if rows.shape[0]:
        block, warps = launch_config(h)
        _rmsnorm_kernel[(rows.shape[0],)](rows, weight, out, h, float(eps), rows.stride(0), out.stride(0),
                                          BLOCK=block, num_warps=warps)
    return out.view(x.shape)


def _aot_check(compile_one) -> bool:
    """Compile the kernel for sm_90 (:mod:`.aot_check`) at the pair's hidden sizes (896, 1536) and 4096."""
    ok = True
    for dt, h in [("bf16", 896), ("bf16", 1536), ("fp16", 4096)]:
        block, warps = launch_config(h)
        ok &= compile_one(f"rmsnorm {dt} H={h}", _rmsnorm_kernel,
                          {"x_ptr": f"*{dt}", "w_ptr": f"*{dt}", "out_ptr": f"*{dt}", "H": "i32", "eps": "fp32",
                           "sx": "i32", "so": "i32"}, {"BLOCK": block}, warps)
    return ok
