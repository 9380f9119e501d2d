"""The skinny GEMM (specattn/gpu/kernels/skinny_gemm.py), the projections' alternative to cuBLAS timed in
scripts/gpu/profile_gemm.py: ``x @ W.T (+ residual)`` against a float64 product for row counts 1 to 128, widths and
depths no multiple of the blocks, every config, with and without the residual; bad shapes refused."""

from __future__ import annotations

import pytest
import torch

from .availability import needs_gpu, needs_interpreter

SHAPES = [(1, 16, 128), (5, 33, 200), (16, 40, 96), (80, 70, 300), (128, 17, 64)]


def _check(device, dtype, configs, shapes, tol):
    from specattn.gpu.kernels.skinny_gemm import skinny_linear

    gen = torch.Generator().manual_seed(0)
    for m, n, k in shapes:
        x, w, r = (torch.randn(s, generator=gen).to(dtype) for s in ((m, k), (n, k), (m, n)))
        ref = x.double() @ w.double().T
        x, w, r = x.to(device), w.to(device), r.to(device)
        for config in configs:
            out = skinny_linear(x, w, config=config)
            assert out.shape == (m, n) and out.dtype == dtype
            assert (out.double().cpu() - ref).abs().max().item() <= tol * (1 + ref.abs().max().item()), (m, n, k)
            both = skinny_linear(x, w, residual=r, config=config)
            expect = ref + r.double().cpu()
            assert (both.double().cpu() - expect).abs().max().item() <= tol * (1 + expect.abs().max().item())


@needs_interpreter
def test_skinny_linear_matches_the_product_interpreter():
    _check("cpu", torch.float32, [(16, 128, 4, 4), (32, 64, 2, 4)], SHAPES, 1e-5)


@needs_interpreter
def test_skinny_linear_refuses_what_it_cannot_compute_interpreter():
    from specattn.gpu.kernels.skinny_gemm import skinny_linear

    with pytest.raises(ValueError, match="M <= 128"):
        skinny_linear(torch.zeros(129, 8), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="unit stride"):
        skinny_linear(torch.zeros(4, 8), torch.zeros(8, 4).T)
    with pytest.raises(ValueError, match="residual"):
        skinny_linear(torch.zeros(4, 8), torch.zeros(3, 8), residual=torch.zeros(4, 4))


@needs_gpu
def test_skinny_linear_matches_the_product_at_the_pairs_shapes_gpu():
    from specattn.gpu.kernels.skinny_gemm import CONFIGS

    # bfloat16 output: one rounding of a float32 sum (relative 2^-8 of the largest value)
    _check("cuda", torch.bfloat16, [c for c in CONFIGS if c[1] * c[2] <= 512], SHAPES + [(16, 1152, 896),
                                                                                 (80, 1536, 8960)], 1e-2)
