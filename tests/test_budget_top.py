"""The budgeted chunk choice on the device (:mod:`specattn.gpu.kernels.budget_top`, also through
:func:`specattn.methods.budget.top_chunks`) equals the
torch version mask for mask: ties to the lower index, partial and empty chunks, budgets from nothing to more than
everything, a minimum of chunks, rows of a power of two and not, rows longer than a program's block."""

from __future__ import annotations

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.methods.budget import top_chunks, top_chunks_torch

from .availability import needs_gpu, needs_interpreter


def case(s, h, nc, seed, levels=None):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(s, h, nc, generator=g)
    if levels:  # few distinct values: many ties
        scores = (scores * levels).floor() / levels
    prefix = torch.randint(0, nc * 16, (s,), generator=g)  # each row's prefix length in keys, chunks of 16
    keys = (prefix[:, None] - 16 * torch.arange(nc)).clamp(0, 16)  # full chunks, a partial one, then empty ones
    return scores, keys, prefix


@needs_interpreter
@pytest.mark.parametrize("s,h,nc,levels", [(3, 2, 37, None), (2, 4, 64, 4), (1, 1, 5, 2), (2, 2, 150, 8)])
@pytest.mark.parametrize("min_chunks", [0, 3])
def test_device_choice_equals_the_torch_version(s, h, nc, levels, min_chunks):
    from specattn.gpu.kernels import budget_top

    scores, keys, prefix = case(s, h, nc, nc + min_chunks, levels)
    for frac in (0.0, 0.13, 0.5, 2.0):
        budget = frac * prefix.double()
        want = top_chunks_torch(scores, keys, budget, min_chunks)
        out = torch.ones(s, h, nc, dtype=torch.bool)  # poisoned: every entry must be written
        got = budget_top.launch(scores, keys, budget, min_chunks, out)
        assert torch.equal(got, want), (frac, min_chunks)
    assert torch.equal(top_chunks(scores, keys, budget, min_chunks), want)  # the dispatch takes a kernel here


@needs_gpu
@pytest.mark.parametrize("s,h,nc,levels", [(16, 2, 1040, None), (16, 2, 2132, None), (32, 1, 2132, 16),
                                           (4, 8, 8192, None), (3, 2, 8191, 4)])
def test_device_choice_equals_the_torch_version_at_decoder_sizes_gpu(s, h, nc, levels):
    """On the GPU at the graph decoder's row lengths (16K to 128K keys at 16-key chunks, up to MAX_CHUNKS): the sort
    kernel, and the dispatch (the kernel up to SORT_KERNEL_MAX_CHUNKS, torch beyond)."""
    from specattn.gpu.kernels import budget_top

    scores, keys, prefix = case(s, h, nc, nc + s, levels)
    scores, keys = scores.cuda(), keys.cuda()
    for frac in (0.0, 0.1, 0.33, 1.5):
        budget = (frac * prefix.double()).cuda()
        for min_chunks in (0, 4):
            want = top_chunks_torch(scores, keys, budget, min_chunks)
            assert torch.equal(top_chunks(scores, keys, budget, min_chunks), want), (frac, min_chunks)
            out = torch.ones_like(want)
            assert torch.equal(budget_top.launch(scores, keys, budget, min_chunks, out), want), (frac, min_chunks)


def test_top_chunks_refuses_mismatched_shapes():
    with pytest.raises(SpecAttnError, match="do not fit scores"):
        top_chunks(torch.zeros(2, 1, 4), torch.zeros(2, 5, dtype=torch.long), torch.zeros(2))
