"""Nucleus selection kernel: exact agreement with the float64 sort reference of specattn.methods.nucleus.

CPU: imports and dispatch (always). Interpreter: TRITON_INTERPRET=1 with triton installed. GPU: the
compiled kernel on fresh random inputs of many shapes, dtypes and distributions (marked ``gpu``).
"""

from __future__ import annotations

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.methods import nucleus as select

from .availability import HAS_TRITON, needs_gpu, needs_interpreter


# ------------------------------------------------------------------------------------------- inputs
def make_rows(kind: str, rows: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """float32 CPU rows of attention-like weights of a given kind."""
    if kind.startswith("softmax"):
        scale = float(kind[len("softmax"):])
        return torch.softmax(scale * torch.randn(rows, length, generator=gen), -1)
    if kind == "onehot":
        w = torch.zeros(rows, length)
        w[torch.arange(rows), torch.randint(0, length, (rows,), generator=gen)] = 1.0
        return w
    if kind == "uniform":
        return torch.full((rows, length), 1.0 / length)
    if kind == "zeros":
        return torch.zeros(rows, length)
    if kind == "ties":  # few distinct values, many ties at the boundary
        return torch.randint(0, 5, (rows, length), generator=gen).float() / 16
    if kind == "masked":  # mass < 1: half the keys zeroed, not renormalised
        w = torch.softmax(3 * torch.randn(rows, length, generator=gen), -1)
        return w * (torch.rand(rows, length, generator=gen) < 0.5)
    if kind == "range":  # 60 binades of dynamic range
        return torch.exp2(-60 * torch.rand(rows, length, generator=gen))
    if kind == "cliff":  # one heavy key over many tiny ones: p near 1 puts theta among the tiny keys
        w = torch.exp2(-40 + 10 * torch.rand(rows, length, generator=gen))
        w[:, 0] = 1.0
        return w
    raise ValueError(kind)


def assert_exact(w: torch.Tensor, p: float) -> None:
    got = select.nucleus_threshold(w, p)
    ref = select.nucleus_threshold_reference(w.cpu(), p)
    assert got.dtype == torch.float64 and got.shape == w.shape[:-1]
    if not torch.equal(got.cpu(), ref):
        bad = (got.cpu() != ref).nonzero()[:3].tolist()
        raise AssertionError(f"{tuple(w.shape)} {w.dtype} p={p}: rows {bad} kernel {got.cpu().flatten()[:3]} ref {ref.flatten()[:3]}")
    assert torch.equal(select.nucleus_mask(w, p).cpu(), select.nucleus_mask(w.cpu(), p))


# -------------------------------------------------------------------------------------------- CPU
def test_kernels_package_imports_without_triton():
    import specattn.gpu.kernels as k

    assert isinstance(k.triton_available(), bool)
    if not HAS_TRITON:
        assert not k.available()


def test_cpu_tensors_use_the_reference():
    w = torch.softmax(torch.randn(4, 100), -1)
    assert select._kernel_for(w) is None
    assert torch.equal(select.nucleus_threshold(w, 0.9), select.nucleus_threshold_reference(w, 0.9))


def test_radix_backend_finds_nvcc_and_says_when_missing(tmp_path, monkeypatch):
    from specattn.gpu.kernels import radix

    fake = tmp_path / "cuda" / "bin" / "nvcc"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    assert radix.nvcc_path() == str(fake)
    monkeypatch.setattr(radix, "nvcc_path", lambda: None)
    radix._library.cache_clear()
    with pytest.raises(SpecAttnError, match="nvcc"):
        radix._library("sm_90")
    if not torch.cuda.is_available():
        assert not radix.available()


# ------------------------------------------------------------------------------------ interpreter
@needs_interpreter
@pytest.mark.parametrize("long_path", [False, True])
@pytest.mark.parametrize("kind", ["softmax3", "softmax0.001", "onehot", "uniform", "zeros", "ties", "masked"])
def test_kernel_interpreter(monkeypatch, long_path, kind):
    from specattn.gpu.kernels import nucleus as K

    monkeypatch.setattr(K, "ONCHIP_TWO_PHASE", True)
    monkeypatch.setattr(K, "CT_ONCHIP", 16)  # force both phases of the two-phase bisection
    monkeypatch.setattr(K, "CT_FINISH", 16)
    if long_path:  # shrink the tiles so the multi-program path runs on small rows
        monkeypatch.setattr(K, "ONCHIP_MAX", 64)
        monkeypatch.setattr(K, "SEG", 64)
        monkeypatch.setattr(K, "SEG_COMPACT", 32)
        monkeypatch.setattr(K, "CAND_CAP", 64)
        monkeypatch.setattr(K, "FINISH_TILE", 64)  # rows past CAND_CAP candidates stream in several tiles
    gen = torch.Generator().manual_seed(3)
    for length in [1, 5, 130, 300]:
        w = make_rows(kind, 2, length, gen)
        for p in [0.5, 0.95, 1.0]:
            th = K.nucleus_threshold(w, p)
            assert torch.equal(th, select.nucleus_threshold_reference(w, p)), (kind, length, p)
    w = make_rows(kind, 6, 100, gen).reshape(2, 3, 100)
    assert torch.equal(K.nucleus_chunk_mask(w, 0.9, 16, 2), select.pool_chunks(
        select.union_groups(select.nucleus_mask(w, 0.9), 2), 16))


# -------------------------------------------------------------------------------------------- GPU
@pytest.fixture(params=["triton", "cuda"])
def backend(request, monkeypatch):
    """Each GPU test runs on both selection backends (the CUDA one where nvcc exists)."""
    from specattn.gpu.kernels import nucleus as K
    from specattn.gpu.kernels import radix

    if request.param == "cuda" and not radix.available():
        pytest.skip("CUDA radix kernel unavailable (no nvcc)")
    monkeypatch.setattr(K, "BACKEND", request.param)
    return request.param


LENGTHS = [1, 2, 3, 17, 1000, 4095, 8192, 16384, 16385, 50_001, 131_072, 262_144]
KINDS = ["softmax3", "softmax1", "softmax8", "softmax0.001", "onehot", "uniform", "zeros", "ties", "masked", "range",
         "cliff"]


@needs_gpu
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_exact_random(length, dtype, backend):
    gen = torch.Generator().manual_seed(length)
    rows = 3 if length > 100_000 else 7
    for kind in ["softmax3", "softmax8", "masked"]:
        w = make_rows(kind, rows, length, gen).to(dtype).cuda()
        for p in [0.5, 0.9, 0.95, 0.99]:
            assert_exact(w, p)


@needs_gpu
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [1, 257, 8191, 20_000, 131_073])
def test_kernel_exact_special_rows(kind, length, backend):
    gen = torch.Generator().manual_seed(7)
    for dtype in [torch.float32, torch.bfloat16]:
        w = make_rows(kind, 4, length, gen).to(dtype).cuda()
        for p in [0.3, 0.95, 1.0]:
            assert_exact(w, p)


@needs_gpu
@pytest.mark.parametrize("length", [100, 8192, 8193, 60_000])
def test_kernel_exact_near_a_heavy_key(length, backend):
    """theta among keys 2^-40..2^-30 under a key of 1.0: the radix kernel's float32 scan of approximate
    bin masses is far coarser than the light keys' masses, so its first guess must be corrected exactly."""
    gen = torch.Generator().manual_seed(length)
    w = make_rows("cliff", 6, length, gen)
    light = float(w[:, 1:].double().sum(-1).min())
    for frac in [0.1, 0.5, 0.9]:
        p = (1.0 + frac * light) / (1.0 + light)
        for dtype in [torch.float32, torch.bfloat16]:
            assert_exact(w.to(dtype).cuda(), p)


@needs_gpu
def test_kernel_many_rows_and_leading_dims(backend):
    gen = torch.Generator().manual_seed(11)
    w = make_rows("softmax3", 1024, 8192, gen).reshape(4, 8, 32, 8192).cuda()
    assert_exact(w, 0.95)
    w = make_rows("softmax3", 64, 40_000, gen).reshape(2, 32, 40_000).bfloat16().cuda()
    assert_exact(w, 0.9)


@needs_gpu
def test_kernel_non_contiguous_rows(backend):
    gen = torch.Generator().manual_seed(5)
    w = make_rows("softmax3", 16, 3000, gen).cuda().t().contiguous().t()  # column-major view
    assert_exact(w, 0.95)


@needs_gpu
@pytest.mark.parametrize("length,chunk,group", [(1000, 16, 4), (8191, 16, 4), (8192, 64, 5), (40_000, 16, 4),
                                                (131_072, 16, 128), (3001, 7, 3), (20_001, 24, 2), (5, 16, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_mask_matches_reference(length, chunk, group, dtype, backend):
    gen = torch.Generator().manual_seed(length + chunk)
    w = make_rows("softmax3", 2 * 8, length, gen).reshape(2, 8, length).to(dtype)
    got = select.nucleus_chunk_mask(w.cuda(), 0.95, chunk, group)
    ref = select.nucleus_chunk_mask(w, 0.95, chunk, group)
    assert got.dtype == torch.bool and got.shape == ref.shape
    assert torch.equal(got.cpu(), ref)


@needs_gpu
@pytest.mark.parametrize("length,chunk", [(8195, 16), (8195, 4), (70_001, 32), (70_001, 128), (13, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_mask_on_padded_rows(length, chunk, dtype, backend):
    """Rows of a wider, 16-byte aligned buffer whose length is not a multiple of the load vector:
    the radix kernel fuses the chunk maxima and finishes the last chunks from the scalar tail."""
    gen = torch.Generator().manual_seed(length + chunk)
    width = length + 8 - length % 8  # rows start 16-byte aligned for float32 and bfloat16
    wide = make_rows("softmax3", 8, width, gen).to(dtype)
    w = wide.cuda()[:, :length]
    got = select.nucleus_chunk_mask(w.reshape(2, 4, length), 0.9, chunk, 2)
    ref = select.nucleus_chunk_mask(wide[:, :length].reshape(2, 4, length), 0.9, chunk, 2)
    assert torch.equal(got.cpu(), ref)


@needs_gpu
@pytest.mark.parametrize("length", [8192, 100_000])
def test_chunk_mask_is_graph_capturable(length, backend):
    """No host synchronisation: the whole selection replays in a CUDA graph on new data."""
    gen = torch.Generator().manual_seed(1)
    static = make_rows("softmax3", 32, length, gen).cuda()
    select.nucleus_chunk_mask(static, 0.95, 16, 32)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = select.nucleus_chunk_mask(static, 0.95, 16, 32)
    fresh = make_rows("softmax3", 32, length, gen)
    static.copy_(fresh.cuda())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), select.nucleus_chunk_mask(fresh, 0.95, 16, 32))


@needs_gpu
def test_kernel_bad_p():
    w = torch.rand(2, 10, device="cuda")
    for p in [0.0, 1.5, -1]:
        with pytest.raises(SpecAttnError, match="outside"):
            select.nucleus_threshold(w, p)
