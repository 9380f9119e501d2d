"""The torch reference backend against a naive float64 dense-with-mask attention (CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.gpu.attention import (
    AttentionShape,
    allowed_keys,
    make_backend,
    n_prefix_chunks,
    verify_attention,
)


def naive_attention(q, k, v, chunk_mask, chunk_size, sm_scale=None):
    """float64, all N keys scored, disallowed ones masked: written independently of the backends."""
    t, hq, d = q.shape
    n, hkv, _ = k.shape
    p = n - t
    scale = sm_scale if sm_scale is not None else 1 / math.sqrt(d)
    out = torch.empty(t, hq, d, dtype=torch.float64)
    for i in range(t):
        for h in range(hq):
            kv = h // (hq // hkv)
            ok = [(j < p and bool(chunk_mask[j // chunk_size])) or (p <= j <= p + i) for j in range(n)]
            ok = torch.tensor(ok)
            s = (k[:, kv].double() @ q[i, h].double()) * scale
            s[~ok] = float("-inf")
            out[i, h] = torch.softmax(s, 0) @ v[:, kv].double()
    return out


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


CASES = [  # (T, Hq, Hkv, D, N, C)
    (5, 4, 1, 16, 70, 16),   # GQA 4:1, partial last chunk (P = 65 -> 4 full + 1 partial)
    (5, 4, 4, 16, 69, 16),   # MHA, P = 64 exactly (no partial chunk)
    (1, 2, 2, 8, 33, 16),    # decode-like single row
    (3, 6, 2, 8, 10, 4),     # GQA 3:1, tiny chunks, partial
    (4, 2, 1, 8, 4, 16),     # empty prefix: only the causal tail
    (5, 8, 2, 32, 300, 16),
]


@pytest.mark.parametrize("t,hq,hkv,d,n,c", CASES)
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_torch_backend_matches_naive_float64(t, hq, hkv, d, n, c, density):
    g = torch.Generator().manual_seed(n * 31 + t)
    q = torch.randn(t, hq, d, generator=g, dtype=torch.float64)
    k = torch.randn(n, hkv, d, generator=g, dtype=torch.float64)
    v = torch.randn(n, hkv, d, generator=g, dtype=torch.float64)
    mask = torch.rand(n_prefix_chunks(n, t, c), generator=g) < density
    attn = make_backend("torch", AttentionShape(hq, hkv, d, c, torch.float64), compute_dtype=torch.float64)
    attn.plan(mask, n, t)
    out = attn.run(q, k, v)
    ref = naive_attention(q, k, v, mask, c)
    assert out.shape == (t, hq, d) and out.dtype == torch.float64
    assert rel_err(out, ref) < 1e-12


def test_torch_backend_float32_and_bf16_inputs():
    g = torch.Generator().manual_seed(0)
    t, hq, hkv, d, n, c = 5, 8, 2, 32, 301, 16
    q, k, v = (torch.randn(s, generator=g) for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
    mask = torch.rand(n_prefix_chunks(n, t, c), generator=g) < 0.3
    ref = naive_attention(q, k, v, mask, c)
    assert rel_err(verify_attention(q, k, v, mask, c), ref) < 1e-5
    out = verify_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, c)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 1e-2


def test_all_chunks_equals_dense_causal():
    g = torch.Generator().manual_seed(1)
    t, h, d, n, c = 5, 2, 8, 50, 16
    q, k, v = (torch.randn(s, generator=g, dtype=torch.float64) for s in [(t, h, d), (n, h, d), (n, h, d)])
    mask = torch.ones(n_prefix_chunks(n, t, c), dtype=torch.bool)
    out = verify_attention(q, k, v, mask, c)
    s = torch.einsum("thd,nhd->htn", q, k) / math.sqrt(d)
    causal = torch.arange(n)[None, :] <= (n - t + torch.arange(t))[:, None]
    dense = torch.einsum("htn,nhd->thd", torch.softmax(s.masked_fill(~causal, float("-inf")), -1), v)
    assert rel_err(out, dense) < 1e-12


def test_allowed_keys_definition():
    mask = torch.tensor([True, False, True])  # P = 10, C = 4: chunks [0,4) [4,8) [8,10)
    a = allowed_keys(mask, 13, 3, 4)
    assert a.shape == (3, 13)
    assert a[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert a[2].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_errors_are_one_line_and_name_the_fix():
    shape = AttentionShape(4, 2, 16, 16, torch.float32)
    attn = make_backend("torch", shape)
    q, k = torch.randn(5, 4, 16), torch.randn(70, 2, 16)
    with pytest.raises(SpecAttnError, match=r"\(5,\) bool mask"):
        attn.plan(torch.ones(3, dtype=torch.bool), 70, 5)
    with pytest.raises(SpecAttnError, match="plan"):
        make_backend("torch", shape).run(q, k, k)
    with pytest.raises(SpecAttnError, match="multiple of num_kv_heads"):
        make_backend("torch", AttentionShape(4, 3, 16))
    with pytest.raises(SpecAttnError, match="unknown"):
        make_backend("cuda", shape)
    attn.plan(torch.ones(5, dtype=torch.bool), 70, 5)
    with pytest.raises(SpecAttnError, match="do not match"):
        attn.run(torch.randn(5, 4, 8), torch.randn(70, 2, 8), torch.randn(70, 2, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_flashinfer_without_gpu_names_torch_backend():
    with pytest.raises(SpecAttnError) as e:
        make_backend("flashinfer", AttentionShape(32, 8, 128))
    msg = str(e.value)
    assert "backend='torch'" in msg and "GPU" in msg and "\n" not in msg
