"""The skinny GEMM (specattn/gpu/kernels/skinny_gemm.py), the projections' alternative to cuBLAS timed in
scripts/gpu/profile_gemm.py: ``x @ W.T (+ residual)`` against a float64 product for row counts 1 to 128, widths and
depths no multiple of the blocks, every config, with and without the residual, in one K range and split (one launch
whose last program per column block sums the parts: the workspace's tickets left at zero, so a second launch on the
same workspace is right too, and bit for bit the same sum); bad shapes refused."""

from __future__ import annotations

import pytest
import torch

from .availability import needs_gpu, needs_interpreter

SHAPES = [(1, 16, 128), (5, 33, 200), (16, 40, 96), (80, 70, 300), (128, 17, 64)]


def _check(device, dtype, configs, shapes, tol, splits=(1,)):
    from specattn.gpu.kernels.skinny_gemm import skinny_linear, splitk_workspace

    gen = torch.Generator().manual_seed(0)
    for m, n, k in shapes:
        x, w, r = (torch.randn(s, generator=gen).to(dtype) for s in ((m, k), (n, k), (m, n)))
        ref = x.double() @ w.double().T
        x, w, r = x.to(device), w.to(device), r.to(device)
        for config, split in ((c, s) for c in configs for s in splits):
            ws = splitk_workspace(m, n, split, config[0], device) if split > 1 else None
            out = skinny_linear(x, w, config=config, split_k=split, workspace=ws)
            assert out.shape == (m, n) and out.dtype == dtype
            assert (out.double().cpu() - ref).abs().max().item() <= tol * (1 + ref.abs().max().item()), (m, n, k)
            both = skinny_linear(x, w, residual=r, config=config, split_k=split, workspace=ws)
            expect = ref + r.double().cpu()
            assert (both.double().cpu() - expect).abs().max().item() <= tol * (1 + expect.abs().max().item())
            if ws is not None:  # every launch leaves the tickets at zero, and sums the parts in one order
                assert not ws.tickets.any().item()
                in_place = r.clone()
                skinny_linear(x, w, residual=in_place, out=in_place, config=config, split_k=split, workspace=ws)
                assert torch.equal(in_place, both) and not ws.tickets.any().item()


@needs_interpreter
def test_skinny_linear_matches_the_product_interpreter():
    _check("cpu", torch.float32, [(16, 128, 4, 4), (32, 64, 2, 4)], SHAPES, 1e-5)


@needs_interpreter
def test_split_k_sums_its_parts_in_one_launch_interpreter():
    # ranges of whole BLOCK_K steps: 300 keys in 3 ranges of 128 (the last 44), 4 of 128 (one empty), 2 of 64
    _check("cpu", torch.float32, [(16, 128, 4, 4), (32, 64, 2, 4)], SHAPES[1:4], 1e-5, splits=(2, 3, 4))


@needs_interpreter
def test_skinny_linear_refuses_what_it_cannot_compute_interpreter():
    from specattn.gpu.kernels.skinny_gemm import skinny_linear

    with pytest.raises(ValueError, match="M <= 128"):
        skinny_linear(torch.zeros(129, 8), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="unit stride"):
        skinny_linear(torch.zeros(4, 8), torch.zeros(8, 4).T)
    with pytest.raises(ValueError, match="residual"):
        skinny_linear(torch.zeros(4, 8), torch.zeros(3, 8), residual=torch.zeros(4, 4))
    for bad in (0, 33, True):  # the K ranges' check the epilogue kernels share (skinny_gemm.range_width)
        with pytest.raises(ValueError, match=f"split_k={bad!r} must be 1..32"):
            skinny_linear(torch.zeros(4, 8), torch.zeros(3, 8), split_k=bad)
    from specattn.gpu.kernels.skinny_gemm import splitk_workspace

    with pytest.raises(ValueError, match=r"splitk_workspace\(4, 3, 2, 16"):  # partials for 2 rows, not 4
        skinny_linear(torch.zeros(4, 8), torch.zeros(3, 8), split_k=2, workspace=splitk_workspace(2, 3, 2, 16, "cpu"))
    with pytest.raises(ValueError, match="2 tickets"):  # made for 32-column programs: 2 column blocks of 40, not 3
        skinny_linear(torch.zeros(4, 8), torch.zeros(40, 8), split_k=2, workspace=splitk_workspace(4, 40, 2, 32, "cpu"))
    # more rows than the launch has is fine (the decoder's one workspace for every row count)
    out = skinny_linear(torch.ones(2, 8), torch.ones(3, 8), split_k=2, workspace=splitk_workspace(4, 3, 2, 16, "cpu"))
    assert torch.equal(out, torch.full((2, 3), 8.0))


@needs_gpu
def test_skinny_linear_matches_the_product_at_the_pairs_shapes_gpu():
    from specattn.gpu.kernels.skinny_gemm import CONFIGS

    # bfloat16 output: one rounding of a float32 sum (relative 2^-8 of the largest value)
    _check("cuda", torch.bfloat16, [c for c in CONFIGS if c[1] * c[2] <= 512], SHAPES + [(16, 1152, 896),
                                                                                 (80, 1536, 8960)], 1e-2)


@needs_gpu
def test_split_k_matches_the_product_and_replays_from_a_graph_gpu():
    # the down projections' shapes (draft batch 16 and 1, verifier 80 rows), every config, 2-8 ranges; then one launch
    # captured and replayed on new inputs: the tickets a replay leaves are zero, its output the eager launch's
    from specattn.gpu.kernels.skinny_gemm import CONFIGS, skinny_linear, splitk_workspace

    configs = [c for c in CONFIGS if c[1] * c[2] <= 512]
    _check("cuda", torch.bfloat16, configs, SHAPES + [(16, 896, 4864), (1, 896, 4864), (80, 1536, 8960)], 1e-2,
           splits=(2, 4, 8))
    x = torch.randn(16, 4864, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(896, 4864, device="cuda", dtype=torch.bfloat16) / 70
    r = torch.randn(16, 896, device="cuda", dtype=torch.bfloat16)
    ws = splitk_workspace(16, 896, 4, configs[0][0], "cuda")
    out = torch.empty_like(r)
    skinny_linear(x, w, residual=r, out=out, config=configs[0], split_k=4, workspace=ws)  # compiled before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        skinny_linear(x, w, residual=r, out=out, config=configs[0], split_k=4, workspace=ws)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert not ws.tickets.any().item()
        assert torch.equal(out, skinny_linear(x, w, residual=r, config=configs[0], split_k=4, workspace=ws))
