"""Two small Triton kernels that cut the launches of a Llama decoder layer in a decoding step
(:mod:`specattn.hooks.fused_llama`):

* :func:`rope_into_cache`: from the fused q/k/v projection ``qkv (B, T, (Hq + 2 Hkv) * D)``, rotate q and k
  (``x * cos + rotate_half(x) * sin``, float32, rounded once) and write q to ``q_out (B, Hq, T, D)`` and the
  rotated k and the v of row t of sequence b into the static cache at slot ``lengths[b] + t`` (HF's rotary
  is ten launches, the cache update four);
* :func:`silu_mul`: ``silu(gate).to(dtype) * up`` from the fused gate/up projection ``(..., 2 I)``, as
  ``LlamaMLP`` computes it in the input dtype (two launches in HF's version).

One program per (row, head) and per row; no host synchronisation (CUDA-graph capturable).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, len_ptr, q_ptr, k_ptr, v_ptr, T, HQ, HKV,
                       sxb, sxt, scb, sct, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn,
                       D: tl.constexpr, HALF: tl.constexpr):
    bt = tl.program_id(0)
    h = tl.program_id(1)
    b = (bt // T).to(tl.int64)
    t = bt % T
    d = tl.arange(0, HALF)
    src = qkv_ptr + b * sxb + t * sxt + h * D
    x1 = tl.load(src + d).to(tl.float32)
    x2 = tl.load(src + HALF + d).to(tl.float32)
    slot = (tl.load(len_ptr + b) + t).to(tl.int64)
    if h < HQ + HKV:
        cs = cos_ptr + b * scb + t * sct
        sn = sin_ptr + b * scb + t * sct
        o1 = x1 * tl.load(cs + d).to(tl.float32) - x2 * tl.load(sn + d).to(tl.float32)
        o2 = x2 * tl.load(cs + HALF + d).to(tl.float32) + x1 * tl.load(sn + HALF + d).to(tl.float32)
        if h < HQ:
            dst = q_ptr + b * sqb + h * sqh + t * sqt
        else:
            dst = k_ptr + b * skb + (h - HQ) * skh + slot * skn
        tl.store(dst + d, o1.to(q_ptr.dtype.element_ty))
        tl.store(dst + HALF + d, o2.to(q_ptr.dtype.element_ty))
    else:
        dst = v_ptr + b * svb + (h - HQ - HKV) * svh + slot * svn
        tl.store(dst + d, x1.to(v_ptr.dtype.element_ty))
        tl.store(dst + HALF + d, x2.to(v_ptr.dtype.element_ty))


def rope_into_cache(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lengths: torch.Tensor, heads: int,
                    kv_heads: int, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``qkv (B, T, (Hq + 2 Hkv) * D)`` (unit stride along the last dim), ``cos, sin (B, T, D)``, ``lengths (B,)``
    (the cache's lengths before this forward), ``keys, values (B, Hkv, cap, D)`` -> rotated q ``(B, Hq, T, D)``."""
    b, t, _ = qkv.shape
    d = keys.shape[-1]
    q = torch.empty((b, heads, t, d), dtype=qkv.dtype, device=qkv.device)
    cos, sin = cos.expand(b, t, d), sin.expand(b, t, d)
    _rope_cache_kernel[(b * t, heads + 2 * kv_heads)](
        qkv, cos, sin, lengths, q, keys, values, t, heads, kv_heads,
        qkv.stride(0), qkv.stride(1), cos.stride(0), cos.stride(1), q.stride(0), q.stride(1), q.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
        D=d, HALF=d // 2, num_warps=1)
    return q


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, I, sx, so, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < I
    g = tl.load(x_ptr + row * sx + cols, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * sx + I + cols, mask=ok, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * so + cols, (act * u).to(out_ptr.dtype.element_ty), mask=ok)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``(..., 2 I)`` (gate then up, unit stride along the last dim) -> ``silu(gate) * up`` ``(..., I)``."""
    inter = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * inter)
    out = torch.empty((rows.shape[0], inter), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    if rows.shape[0]:
        _silu_mul_kernel[(rows.shape[0], triton.cdiv(inter, block))](rows, out, inter, rows.stride(0), out.stride(0),
                                                                    BLOCK=block, num_warps=4)
    return out.view(*gate_up.shape[:-1], inter)


def _aot_check(compile_one) -> bool:
    """Compile both kernels for sm_90 (:mod:`.aot_check`) at the pair's head sizes (64: the draft, 128: the
    verifier) in bf16 and fp16."""
    ok = True
    for dt, d in [("bf16", 128), ("bf16", 64), ("fp16", 128)]:
        ok &= compile_one(f"rope_cache {dt} D={d}", _rope_cache_kernel, {
            "qkv_ptr": f"*{dt}", "cos_ptr": f"*{dt}", "sin_ptr": f"*{dt}", "len_ptr": "*i32", "q_ptr": f"*{dt}",
            "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "T": "i32", "HQ": "i32", "HKV": "i32", "sxb": "i32", "sxt": "i32",
            "scb": "i32", "sct": "i32", "sqb": "i32", "sqh": "i32", "sqt": "i32", "skb": "i32", "skh": "i32",
            "skn": "i32", "svb": "i32", "svh": "i32", "svn": "i32"}, {"D": d, "HALF": d // 2}, 1)
    for dt in ("bf16", "fp16"):
        ok &= compile_one(f"silu_mul {dt}", _silu_mul_kernel,
                          {"x_ptr": f"*{dt}", "out_ptr": f"*{dt}", "I": "i32", "sx": "i32", "so": "i32"},
                          {"BLOCK": 1024}, 4)
    return ok
