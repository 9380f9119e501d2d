"""Nucleus selection kernel: exact agreement with the float64 sort reference of specattn.select.

CPU: imports and dispatch (always). Interpreter: TRITON_INTERPRET=1 with triton installed. GPU: the
compiled kernel on fresh random inputs of many shapes, dtypes and distributions (marked ``gpu``).
"""

from __future__ import annotations


import pytest
import torch

from specattn import select
from specattn.errors import SpecAttnError

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
    import specattn.kernels as k

    assert isinstance(k.triton_available(), bool)
    if not HAS_TRITON:
        assert not k.available()


def test_cpu_tensors_use_the_reference():
    w = torch.softmax(torch.randn(4, 100), -1)
    assert select._kernel_for(w) is None
    assert torch.equal(select.nucleus_threshold(w, 0.9), select.nucleus_threshold_reference(w, 0.9))


# ------------------------------------------------------------------------------------ interpreter
@needs_interpreter
@pytest.mark.parametrize("long_path", [False, True])
@pytest.mark.parametrize("kind", ["softmax3", "softmax0.001", "onehot", "uniform", "zeros", "ties", "masked"])
def test_kernel_interpreter(monkeypatch, long_path, kind):
    from specattn.kernels import nucleus as K

    monkeypatch.setattr(K, "ONCHIP_TWO_PHASE", True)
    monkeypatch.setattr(K, "CT_ONCHIP", 16)  # force both phases of the two-phase bisection
    monkeypatch.setattr(K, "CT_FINISH", 16)
    if long_path:  # shrink the tiles so the multi-program path runs on small rows
        monkeypatch.setattr(K, "ONCHIP_MAX", 64)
        monkeypatch.setattr(K, "SEG", 64)
        monkeypatch.setattr(K, "SEG_COMPACT", 32)
        monkeypatch.setattr(K, "CAND_CAP", 64)
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
LENGTHS = [1, 2, 3, 17, 1000, 4095, 8192, 16384, 16385, 50_001, 131_072, 262_144]
KINDS = ["softmax3", "softmax1", "softmax8", "softmax0.001", "onehot", "uniform", "zeros", "ties", "masked", "range"]


@needs_gpu
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_exact_random(length, dtype):
    gen = torch.Generator().manual_seed(length)
    rows = 3 if length > 100_000 else 7
    for kind in ["softmax3", "softmax8", "masked"]:
        w = make_rows(kind, rows, length, gen).to(dtype).cuda()
        for p in [0.5, 0.9, 0.95, 0.99]:
            assert_exact(w, p)


@needs_gpu
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [1, 257, 8191, 20_000, 131_073])
def test_kernel_exact_special_rows(kind, length):
    gen = torch.Generator().manual_seed(7)
    for dtype in [torch.float32, torch.bfloat16]:
        w = make_rows(kind, 4, length, gen).to(dtype).cuda()
        for p in [0.3, 0.95, 1.0]:
            assert_exact(w, p)


@needs_gpu
def test_kernel_many_rows_and_leading_dims():
    gen = torch.Generator().manual_seed(11)
    w = make_rows("softmax3", 1024, 8192, gen).reshape(4, 8, 32, 8192).cuda()
    assert_exact(w, 0.95)
    w = make_rows("softmax3", 64, 40_000, gen).reshape(2, 32, 40_000).bfloat16().cuda()
    assert_exact(w, 0.9)


@needs_gpu
def test_kernel_non_contiguous_rows():
    gen = torch.Generator().manual_seed(5)
    w = make_rows("softmax3", 16, 3000, gen).cuda().t().contiguous().t()  # column-major view
    assert_exact(w, 0.95)


@needs_gpu
@pytest.mark.parametrize("length,chunk,group", [(1000, 16, 4), (8191, 16, 4), (8192, 64, 5), (40_000, 16, 4),
                                                (131_072, 16, 128), (3001, 7, 3), (20_001, 24, 2), (5, 16, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_mask_matches_reference(length, chunk, group, dtype):
    gen = torch.Generator().manual_seed(length + chunk)
    w = make_rows("softmax3", 2 * 8, length, gen).reshape(2, 8, length).to(dtype)
    got = select.nucleus_chunk_mask(w.cuda(), 0.95, chunk, group)
    ref = select.nucleus_chunk_mask(w, 0.95, chunk, group)
    assert got.dtype == torch.bool and got.shape == ref.shape
    assert torch.equal(got.cpu(), ref)


@needs_gpu
@pytest.mark.parametrize("length", [8192, 100_000])
def test_chunk_mask_is_graph_capturable(length):
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
