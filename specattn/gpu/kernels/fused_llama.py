"""Two small Triton kernels that cut the launches of a Llama decoder layer in a decoding step
(:mod:`specattn.hooks.fused_llama`):

* :func:`rope_into_cache`: from the fused q/k/v projection ``qkv (B, T, (Hq + 2 Hkv) * D)``, rotate q and k
  (``x * cos + rotate_half(x) * sin``, float32, rounded once) and write q to ``q_out (B, Hq, T, D)`` and the
  rotated k and the v of row t of sequence b into the static cache at slot ``lengths[b] + t`` (HF's rotary
  is ten launches, the cache update four);
* :func:`silu_mul`: ``silu(gate).to(dtype) * up`` from the fused gate/up projection ``(..., 2 I)``, as
  ``LlamaMLP`` computes it in the input dtype (two launches in HF's version).

Both also take the RMSNorm before their projection folded into it (``norm_input``: the norm's input rows; the
projection's weight then holds the norm's weight, ``W diag(g)``, and no bias): each program computes its row's
``rsqrt(mean(x_f32^2) + eps)`` from ``norm_input`` and scales the projection's output by it (and adds the
q/k/v bias after), so the norm needs no launch of its own (:class:`specattn.hooks.fused_llama.FusedDecoderLayer`,
``fold_norms``).

One program per (row, head) and per row; no host synchronisation (CUDA-graph capturable).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _row_rms_scale(x_ptr, row, H, eps, BLOCK_H: tl.constexpr):
    """``rsqrt(mean(x_f32^2) + eps)`` of row ``row`` of a contiguous ``(rows, H)`` matrix, as RMSNorm computes it."""
    cols = tl.arange(0, BLOCK_H)
    x = tl.load(x_ptr + row.to(tl.int64) * H + cols, mask=cols < H, other=0.0).to(tl.float32)
    return 1.0 / tl.sqrt(tl.sum(x * x, 0) / H + eps)


@triton.jit
def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, len_ptr, q_ptr, k_ptr, v_ptr, norm_ptr, bias_ptr, T, HQ, HKV, H,
                       eps, sxb, sxt, scb, sct, sqb, sqh, sqt, skb, skh, skn, svb, svh, svn,
                       D: tl.constexpr, HALF: tl.constexpr, NORM: tl.constexpr, BIAS: tl.constexpr,
                       BLOCK_H: tl.constexpr):
    bt = tl.program_id(0)
    h = tl.program_id(1)
    b = (bt // T).to(tl.int64)
    t = bt % T
    d = tl.arange(0, HALF)
    src = qkv_ptr + b * sxb + t * sxt + h * D
    x1 = tl.load(src + d).to(tl.float32)
    x2 = tl.load(src + HALF + d).to(tl.float32)
    if NORM:  # the folded RMSNorm's row scale, then the bias
        scale = _row_rms_scale(norm_ptr, bt, H, eps, BLOCK_H)
        x1 = x1 * scale
        x2 = x2 * scale
    if BIAS:
        x1 = x1 + tl.load(bias_ptr + h * D + d).to(tl.float32)
        x2 = x2 + tl.load(bias_ptr + h * D + HALF + d).to(tl.float32)
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
                    kv_heads: int, keys: torch.Tensor, values: torch.Tensor, norm_input: torch.Tensor | None = None,
                    eps: float = 0.0, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``qkv (B, T, (Hq + 2 Hkv) * D)`` (unit stride along the last dim), ``cos, sin (B, T, D)``, ``lengths (B,)``
    (the cache's lengths before this forward), ``keys, values (B, Hkv, cap, D)`` -> rotated q ``(B, Hq, T, D)``.
    ``norm_input (B, T, H)``: ``qkv`` is the projection of these rows before a folded RMSNorm (epsilon ``eps``),
    scaled here by each row's ``rsqrt(mean(x^2) + eps)``; ``bias ((Hq + 2 Hkv) * D,)``: added after that."""
    b, t, _ = qkv.shape
    d = keys.shape[-1]
    q = torch.empty((b, heads, t, d), dtype=qkv.dtype, device=qkv.device)
    cos, sin = cos.expand(b, t, d), sin.expand(b, t, d)
    rows = qkv if norm_input is None else norm_input.reshape(b * t, -1).contiguous()
    _rope_cache_kernel[(b * t, heads + 2 * kv_heads)](
        qkv, cos, sin, lengths, q, keys, values, rows, qkv if bias is None else bias, t, heads, kv_heads,
        rows.shape[-1], float(eps),
        qkv.stride(0), qkv.stride(1), cos.stride(0), cos.stride(1), q.stride(0), q.stride(1), q.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
        D=d, HALF=d // 2, NORM=norm_input is not None, BIAS=bias is not None,
        BLOCK_H=triton.next_power_of_2(rows.shape[-1]) if norm_input is not None else 1, num_warps=1)
    return q


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, norm_ptr, I, H, eps, sx, so, BLOCK: tl.constexpr, NORM: tl.constexpr,
                     BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < I
    g = tl.load(x_ptr + row * sx + cols, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * sx + I + cols, mask=ok, other=0.0).to(tl.float32)
    if NORM:  # the folded RMSNorm's row scale
        scale = _row_rms_scale(norm_ptr, row, H, eps, BLOCK_H)
        g = g * scale
        u = u * scale
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * so + cols, (act * u).to(out_ptr.dtype.element_ty), mask=ok)


def silu_mul(gate_up: torch.Tensor, norm_input: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    """``(..., 2 I)`` (gate then up, unit stride along the last dim) -> ``silu(gate) * up`` ``(..., I)``.
    ``norm_input (..., H)``: ``gate_up`` is the projection of these rows before a folded RMSNorm (epsilon ``eps``):
    gate and up are first scaled by each row's ``rsqrt(mean(x^2) + eps)``."""
    inter = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * inter)
    out = torch.empty((rows.shape[0], inter), dtype=gate_up.dtype, device=gate_up.device)
    norm = rows if norm_input is None else norm_input.reshape(rows.shape[0], -1).contiguous()
    block = 1024
    if rows.shape[0]:
        _silu_mul_kernel[(rows.shape[0], triton.cdiv(inter, block))](
            rows, out, norm, inter, norm.shape[-1], float(eps), rows.stride(0), out.stride(0), BLOCK=block,
            NORM=norm_input is not None,
            BLOCK_H=triton.next_power_of_2(norm.shape[-1]) if norm_input is not None else 1, num_warps=4)
    return out.view(*gate_up.shape[:-1], inter)


def _aot_check(compile_one) -> bool:
    """Compile both kernels for sm_90 (:mod:`.aot_check`) at the pair's head sizes (64: the draft, 128: the
    verifier) in bf16 and fp16, plain and with the RMSNorm folded (the pair's hidden sizes 896 and 1536, with
    Qwen2's q/k/v bias)."""
    ok = True
    for dt, d, h in [("bf16", 128, 0), ("bf16", 64, 0), ("fp16", 128, 0), ("bf16", 64, 896), ("bf16", 128, 1536)]:
        ok &= compile_one(f"rope_cache {dt} D={d}" + (f" folded H={h}" if h else ""), _rope_cache_kernel, {
            "qkv_ptr": f"*{dt}", "cos_ptr": f"*{dt}", "sin_ptr": f"*{dt}", "len_ptr": "*i32", "q_ptr": f"*{dt}",
            "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "norm_ptr": f"*{dt}", "bias_ptr": f"*{dt}", "T": "i32", "HQ": "i32",
            "HKV": "i32", "H": "i32", "eps": "fp32", "sxb": "i32", "sxt": "i32", "scb": "i32", "sct": "i32",
            "sqb": "i32", "sqh": "i32", "sqt": "i32", "skb": "i32", "skh": "i32", "skn": "i32", "svb": "i32",
            "svh": "i32", "svn": "i32"},
            {"D": d, "HALF": d // 2, "NORM": bool(h), "BIAS": bool(h), "BLOCK_H": triton.next_power_of_2(max(h, 1))}, 1)
    for dt, h in [("bf16", 0), ("fp16", 0), ("bf16", 896), ("bf16", 1536)]:
        ok &= compile_one(f"silu_mul {dt}" + (f" folded H={h}" if h else ""), _silu_mul_kernel,
                          {"x_ptr": f"*{dt}", "out_ptr": f"*{dt}", "norm_ptr": f"*{dt}", "I": "i32", "H": "i32",
                           "eps": "fp32", "sx": "i32", "so": "i32"},
                          {"BLOCK": 1024, "NORM": bool(h), "BLOCK_H": triton.next_power_of_2(max(h, 1))}, 4)
    return ok
