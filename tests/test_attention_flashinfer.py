"""The flashinfer backend against the float64 reference (GPU + flashinfer), and its Triton tail-merge
kernel against the reference on the CPU interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

import math
import os

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.gpu.attention import AttentionShape, make_backend, n_prefix_chunks
from specattn.gpu.attention.torch_backend import gathered_attention

from .availability import needs_flashinfer, needs_interpreter


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def sparse_part_torch(q, k, v, chunk_mask, c, scale):
    """What FlashInfer returns for the full chunks: (o, lse in base 2), float64, or (None, None)."""
    t, hq, d = q.shape
    p = k.shape[0] - t
    nfull = p // c
    keep = chunk_mask[:nfull].repeat_interleave(c).nonzero().flatten()
    if keep.numel() == 0:
        return None, None
    g = hq // k.shape[1]
    ks = k[keep].double().repeat_interleave(g, 1)
    vs = v[keep].double().repeat_interleave(g, 1)
    s = torch.einsum("thd,mhd->thm", q.double(), ks) * scale
    lse = torch.logsumexp(s, -1)
    o = torch.einsum("thm,mhd->thd", torch.softmax(s, -1), vs)
    return o.to(q.dtype), (lse / math.log(2)).float()


TAIL_CASES = [  # (T, Hq, Hkv, D, N, C, density)
    (5, 4, 1, 16, 70, 16, 0.5), (5, 4, 4, 16, 69, 16, 1.0), (1, 2, 2, 16, 40, 16, 0.5),
    (5, 2, 1, 32, 37, 8, 0.0), (3, 2, 2, 16, 3, 16, 1.0),
]


@needs_interpreter
@pytest.mark.parametrize("t,hq,hkv,d,n,c,density", TAIL_CASES)
@pytest.mark.parametrize("partial_kept", [True, False])
def test_tail_merge_interpreter(t, hq, hkv, d, n, c, density, partial_kept):
    from specattn.gpu.kernels.tail import tail_merge

    g = torch.Generator().manual_seed(n + t)
    q, k, v = (torch.randn(s, generator=g).half() for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
    nch = n_prefix_chunks(n, t, c)
    mask = torch.rand(nch, generator=g) < density
    if nch and (n - t) % c:
        mask[-1] = partial_kept
    scale = 1 / math.sqrt(d)
    o_s, lse_s = sparse_part_torch(q, k, v, mask, c, scale)
    out = tail_merge(q, k, v, mask, c, o_s, lse_s, scale, lse_base2=True)
    ref = gathered_attention(q, k, v, mask, c, scale, torch.float64)
    assert rel_err(out, ref) < 2e-3


# ---------------------------------------------------------------------------------------------- GPU
FI_CASES = [  # (T, Hq, Hkv, D, N, C), bf16
    (5, 32, 8, 128, 4096 + 5, 16),    # Llama-3.1-8B shape, P divisible by C
    (5, 32, 8, 128, 4099, 16),        # partial last chunk
    (5, 32, 32, 128, 3001, 16),       # Llama-2-7B shape (MHA), partial chunk
    (1, 32, 8, 128, 2049, 16),        # T = 1
    (3, 32, 32, 128, 777, 16),        # MHA with T = 3: FlashInfer's decode kernel (R * g < 4)
    (5, 8, 1, 128, 1000, 32),         # GQA 8:1, chunk 32
    (5, 32, 8, 128, 17, 16),          # prefix of 12 keys: no full chunk
    (5, 32, 8, 128, 40000, 64),       # long, chunk 64
]
# Each (dtype, head_dim) is a separate FlashInfer JIT build (about a minute on a fresh machine):
# the other dtypes and head dims run with SPECATTN_GPU_FULL=1.
FULL = os.environ.get("SPECATTN_GPU_FULL") == "1"
FI_EXTRA = [(5, 32, 8, 128, 4099, 16, torch.float16), (3, 8, 8, 64, 777, 32, torch.bfloat16),
            (5, 16, 2, 256, 1500, 16, torch.bfloat16), (5, 16, 16, 64, 2000, 16, torch.float16)]
FI_ALL = [(*case, torch.bfloat16) for case in FI_CASES] + (FI_EXTRA if FULL else [])


@pytest.mark.parametrize("t,hq,hkv,d,n,c,dtype", FI_ALL)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
@needs_flashinfer
def test_flashinfer_matches_reference(t, hq, hkv, d, n, c, density, dtype):
    g = torch.Generator(device="cuda").manual_seed(n * 13 + t + int(density * 100))
    q, k, v = (torch.randn(s, generator=g, device="cuda").to(dtype) for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
    mask = torch.rand(n_prefix_chunks(n, t, c), generator=g, device="cuda") < density
    attn = make_backend("flashinfer", AttentionShape(hq, hkv, d, c, dtype))
    attn.plan(mask, n, t)
    out = attn.run(q, k, v)
    ref = gathered_attention(q.double(), k.double(), v.double(), mask, c, 1 / math.sqrt(d), torch.float64)
    assert out.dtype == dtype and out.shape == (t, hq, d)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@needs_flashinfer
def test_flashinfer_lse_is_base2(dtype):
    import flashinfer

    t, hq, hkv, d, c, nb = 5, 8, 2, 128, 16, 64
    q = torch.randn(t, hq, d, device="cuda", dtype=dtype)
    k = torch.randn(nb * c, hkv, d, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    w = flashinfer.BlockSparseAttentionWrapper(torch.empty(128 << 20, dtype=torch.uint8, device="cuda"))
    indptr = torch.tensor([0, nb], dtype=torch.int32, device="cuda")
    indices = torch.arange(nb, dtype=torch.int32, device="cuda")
    w.plan(indptr, indices, t, nb * c, t, c, hq, hkv, d, q_data_type=dtype, kv_data_type=dtype, o_data_type=dtype)
    _, lse = w.run(q, k, v, return_lse=True)
    s = torch.einsum("thd,nhd->thn", q.double(), k.double().repeat_interleave(hq // hkv, 1)) / math.sqrt(d)
    nat = torch.logsumexp(s, -1)
    assert (lse.double() - nat / math.log(2)).abs().max() < 1e-2
    assert (lse.double() - nat).abs().max() > 0.1  # and not natural-log based


@needs_flashinfer
def test_flashinfer_many_steps_reuse_backend():
    t, hq, hkv, d, c = 5, 32, 8, 128, 16
    attn = make_backend("flashinfer", AttentionShape(hq, hkv, d, c, torch.bfloat16))
    for n in [100, 101, 117, 2048, 5000]:
        q, k, v = (torch.randn(s, device="cuda", dtype=torch.bfloat16) for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
        mask = torch.rand(n_prefix_chunks(n, t, c), device="cuda") < 0.2
        attn.plan(mask, n, t)
        out = attn.run(q, k, v)
        ref = gathered_attention(q.double(), k.double(), v.double(), mask, c, 1 / math.sqrt(d), torch.float64)
        assert rel_err(out, ref) < 1e-2


@needs_flashinfer
def test_flashinfer_refuses_unsupported_before_launch():
    with pytest.raises(SpecAttnError, match="head_dim=96"):
        make_backend("flashinfer", AttentionShape(8, 8, 96, 16, torch.bfloat16))
    with pytest.raises(SpecAttnError, match="float32"):
        make_backend("flashinfer", AttentionShape(8, 8, 128, 16, torch.float32))
    with pytest.raises(SpecAttnError, match="device=cpu"):
        make_backend("flashinfer", AttentionShape(8, 8, 128, 16, torch.bfloat16), device="cpu")


@needs_flashinfer
def test_pipeline_selection_csr_attention():
    """Draft weights -> fused nucleus chunk mask -> BSR -> flashinfer == torch reference on the same mask."""
    from specattn.gpu.attention.bsr import chunk_mask_to_bsr
    from specattn.methods.nucleus import nucleus_chunk_mask

    t, hq, hkv, d, c, n = 5, 32, 8, 128, 16, 20000 + 5 + 7
    p = n - t
    draft = torch.softmax(3 * torch.randn(32 * (t - 1), p, device="cuda"), -1)
    mask = nucleus_chunk_mask(draft, 0.95, c, group=draft.shape[0])[0]
    assert mask.shape == (n_prefix_chunks(n, t, c),)
    ref_mask = nucleus_chunk_mask(draft.cpu(), 0.95, c, group=draft.shape[0])[0]
    assert torch.equal(mask.cpu(), ref_mask)
    q, k, v = (torch.randn(s, device="cuda", dtype=torch.bfloat16) for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
    attn = make_backend("flashinfer", AttentionShape(hq, hkv, d, c, torch.bfloat16))
    attn.plan(mask, n, t, bsr=chunk_mask_to_bsr(mask[: p // c]))
    out = attn.run(q, k, v)
    ref = gathered_attention(q.double(), k.double(), v.double(), mask, c, 1 / math.sqrt(d), torch.float64)
    assert rel_err(out, ref) < 1e-2
