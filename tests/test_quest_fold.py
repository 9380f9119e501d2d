"""A step's keys folded into Quest's page bounds on the device (:mod:`specattn.gpu.kernels.quest_fold`, through
``QuestPages.fold``) equal the torch fold exactly: folds crossing a page boundary, shorter than their width (stop
before start + width), past the cache's end, several steps in a row onto bounds already holding keys, bfloat16 and
float32 keys; wide folds (the prefill's) and non-contiguous caches keep the torch fold."""

from __future__ import annotations

import pytest
import torch

from specattn.decode.quest_pages import QuestPages

from .availability import needs_gpu, needs_interpreter


def torch_fold(pages: QuestPages, keys, start, stop, chunk, width):
    """The torch fold on a copy of the bounds."""
    ref = QuestPages(*pages.lo.shape, pages.lo.device, pages.lo.dtype)
    ref.lo.copy_(pages.lo), ref.hi.copy_(pages.hi)
    ref.fold_torch(keys, start, stop, chunk, width)
    return ref


def check_steps(b, hkv, cap, d, chunk, dtype, device, seed, bounds=None):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, hkv, cap, d, generator=g).to(dtype).to(device)
    nc = -(-cap // chunk)
    pages = QuestPages(b, hkv, nc, d, device, bounds or dtype)  # the decoder's: the keys' type
    last = torch.randint(0, cap // 2, (b,), generator=g).to(device)
    pages.fold(keys, torch.zeros_like(last), last, chunk, cap)  # the prefill's fold (torch: wide)
    width = 5
    for _ in range(6):  # steps: each commits 1..width keys, some runs reach the cache's end
        kept = torch.randint(0, width, (b,), generator=g).to(device)
        stop = last + kept + 1
        want = torch_fold(pages, keys, last, stop, chunk, width)
        pages.fold(keys, last, stop, chunk, width)
        assert torch.equal(pages.lo, want.lo) and torch.equal(pages.hi, want.hi)
        last = torch.minimum(stop, torch.full_like(stop, cap - 2))
    pages.fold(keys, torch.full_like(last, cap - 3), torch.full_like(last, cap + 4), chunk, width)  # past the end
    assert torch.isfinite(pages.lo[:, :, -1]).all()


@needs_interpreter
@pytest.mark.parametrize("dtype,bounds", [(torch.bfloat16, None), (torch.bfloat16, torch.float32),
                                          (torch.float32, None)])
@pytest.mark.parametrize("chunk", [4, 16])
def test_step_folds_equal_the_torch_fold(dtype, bounds, chunk):
    check_steps(3, 2, 70, 16, chunk, dtype, "cpu", seed=chunk, bounds=bounds)


@needs_gpu
def test_step_folds_equal_the_torch_fold_at_decoder_sizes_gpu():
    check_steps(16, 2, 33000, 128, 16, torch.bfloat16, "cuda", seed=0)


@needs_interpreter
def test_wide_folds_and_strided_caches_take_the_torch_fold():
    from specattn.gpu.kernels import quest_fold

    keys = torch.zeros(2, 2, 100, 16)
    assert quest_fold.applies(keys, 5) and not quest_fold.applies(keys, 100)  # the prefill's width
    assert not quest_fold.applies(torch.zeros(2, 2, 40, 32)[..., :16], 5)  # a strided view
    assert not quest_fold.applies(torch.zeros(2, 2, 40, 24), 5)  # head dim not a power of two
