"""Quest's page bounds on the device (:mod:`specattn.gpu.kernels.quest_bound`, through ``QuestPages.scores``) equal a
float64 reference of the definition, ``sum_d max(q_d lo_d, q_d hi_d) * scaling``, to float32 summation error: bfloat16
and float16 keys, query rows not a power of two and fewer than a dot's 16, pages not a multiple of a program's block,
pages outside the prefix (-inf, never NaN from their infinite bounds), partial pages, a query aligned with one page."""

from __future__ import annotations

import pytest
import torch

from specattn.decode.quest_pages import QuestPages

from .availability import needs_gpu, needs_interpreter


def case(b, hkv, g, t, d, nc, chunk, dtype, seed, device="cpu", bounds=None):
    """Random keys folded into pages kept in ``bounds`` (default the keys' type, as the decoder keeps them; each
    sequence's prefix a different length, one page left partial), queries, the prefix's keys per page and the float64
    bounds by definition."""
    gen = torch.Generator().manual_seed(seed)
    cap = nc * chunk
    keys = torch.randn(b, hkv, cap, d, generator=gen).to(dtype)
    stop = torch.randint(cap // 2, cap - 1, (b,), generator=gen)
    stop[0] = cap - chunk // 2  # a partial last page
    query = torch.randn(b, hkv * g, t, d, generator=gen).to(dtype)
    query[0, 0, 0] = keys[0, 0, chunk : 2 * chunk].float().mean(dim=0).to(dtype) * 8  # aligned with page 1
    keys, query, stop = keys.to(device), query.to(device), stop.to(device)
    pages = QuestPages(b, hkv, nc, d, device, bounds or dtype)
    pages.fold(keys, torch.zeros_like(stop), stop, chunk, cap)
    outside = (torch.arange(cap, device=device) >= stop[:, None])[:, None, :, None]  # (B, 1, cap, 1): not folded
    paged = lambda x: x.reshape(b, hkv, nc, chunk, d)  # noqa: E731  (cap = nc * chunk)
    # each page's bounds are exactly its folded keys' min and max (pages without keys: +-inf)
    assert torch.equal(pages.lo.float(), paged(keys.float().masked_fill(outside, float("inf"))).amin(3))
    assert torch.equal(pages.hi.float(), paged(keys.float().masked_fill(outside, float("-inf"))).amax(3))
    prefix = (stop[:, None] - chunk * torch.arange(nc, device=device)).clamp(0, chunk)
    q64 = query.double().reshape(b, hkv, g * t, 1, d)
    lo, hi = pages.lo.double()[:, :, None], pages.hi.double()[:, :, None]  # (B, Hkv, 1, NC, D)
    want = torch.maximum(q64 * lo.nan_to_num(posinf=0), q64 * hi.nan_to_num(neginf=0)).sum(-1) * d ** -0.5
    want = want.masked_fill((prefix == 0)[:, None, None, :], float("-inf"))
    return pages, query, prefix, want


def check(pages, query, prefix, want):
    from specattn.gpu.kernels import quest_bound

    b, hq, t, d = query.shape
    hkv = pages.lo.shape[1]
    q = query.reshape(b, hkv, (hq // hkv) * t, d).contiguous()
    out = torch.full(want.shape, float("nan"), dtype=torch.float32, device=query.device)  # poisoned
    got = quest_bound.launch(q, pages.lo, pages.hi, prefix, d ** -0.5, out).double().cpu()
    want = want.cpu()
    outside = torch.isinf(want)
    assert torch.equal(torch.isinf(got), outside) and not torch.isnan(got).any()
    scale = (q.double().abs().cpu()[..., None, :] * pages.hi.double().abs().cpu()[:, :, None].nan_to_num(neginf=0)
             ).sum(-1) * d ** -0.5 + 1e-6  # the size of the terms summed
    assert ((got - want).abs()[~outside] <= 1e-5 * scale[~outside]).all()
    torch_path = pages.bounds_torch(q, prefix, d ** -0.5).double().cpu()
    assert ((got - torch_path).abs()[~outside] <= 1e-5 * scale[~outside]).all()
    scores = pages.scores(query, prefix, d ** -0.5)  # the dispatch: the kernel here
    assert torch.allclose(scores.cpu(), torch.softmax(want, dim=-1).amax(dim=2).float(), rtol=1e-4, atol=1e-7)


@needs_interpreter
@pytest.mark.parametrize("bounds", [torch.float16, torch.float32])
@pytest.mark.parametrize("b,hkv,g,t,d,nc", [(2, 2, 3, 5, 16, 37), (1, 1, 1, 1, 32, 5), (2, 1, 4, 5, 16, 70)])
def test_page_bounds_equal_the_definition(b, hkv, g, t, d, nc, bounds):
    """float16 only: Triton 3.6's interpreter computes bfloat16 tl.dot wrongly (bfloat16 runs on the GPU); bounds
    in the keys' type (the decoder's) and in float32."""
    check(*case(b, hkv, g, t, d, nc, 4, torch.float16, seed=nc + t, bounds=bounds))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,hkv,g,nc", [(16, 2, 6, 2132), (4, 8, 4, 2051), (3, 2, 6, 40)])
def test_page_bounds_equal_the_definition_at_decoder_sizes_gpu(dtype, b, hkv, g, nc):
    """Qwen2.5-Coder-1.5B's verifier at 32K batch 16, Llama-3.1-8B's at 32K batch 4, a short prefix."""
    check(*case(b, hkv, g, 5, 128, nc, 16, dtype, seed=nc, device="cuda"))


@needs_interpreter
def test_float32_queries_take_the_torch_bounds():
    from specattn.gpu.kernels import quest_bound

    query = torch.zeros(1, 2, 5, 64)
    assert not quest_bound.applies(query, 64) and quest_bound.applies(query.bfloat16(), 64)
    assert not quest_bound.applies(query.half(), 96)  # not a power of two
