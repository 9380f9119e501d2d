"""The streaming-read kernel behind the read-bandwidth floor: its partial sums total the float64 sum of
its input, for every setting the probe tries and for lengths that are no multiple of a program's span."""

from __future__ import annotations

import pytest
import torch

from .availability import needs_gpu


@needs_gpu
@pytest.mark.parametrize("n", [1, 7, 4095, 4096 * 8, 4096 * 8 + 1, 1_000_003])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_partial_sums_total_the_float64_sum(n, dtype):
    from specattn.gpu.kernels.stream_read import CONFIGS, partial_sums

    gen = torch.Generator(device="cuda").manual_seed(n)
    x = torch.rand(n, generator=gen, device="cuda").to(dtype)
    reference = x.double().sum().item()
    for block, iters, warps in CONFIGS:
        sums = partial_sums(x, block, iters, warps)
        assert sums.numel() == -(-n // (block * iters))
        assert sums.double().sum().item() == pytest.approx(reference, rel=1e-5, abs=1e-6)
    spike = torch.zeros(n, device="cuda", dtype=dtype)
    spike[-1] = 3.0  # all mass on the last element: the masked tail is read
    assert partial_sums(spike).sum().item() == 3.0


@needs_gpu
def test_read_bandwidth_is_a_bandwidth_above_a_strided_reduction():
    from specattn.bench.timing import measure_bandwidth, measure_read_bandwidth

    read, copy = measure_read_bandwidth(1 << 30), measure_bandwidth(1 << 30)
    assert 0.5 * copy < read < 20e12  # bytes/s: a streaming read is not slower than half a copy
