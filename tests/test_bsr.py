"""Chunk mask -> BSR arrays: torch path on the CPU (always), Triton path on a GPU or the interpreter."""

from __future__ import annotations

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.gpu.attention.bsr import BSR, bsr_reference, chunk_mask_to_bsr

from .availability import needs_gpu, needs_interpreter


def _check(mask: torch.Tensor, impl: str) -> None:
    out = chunk_mask_to_bsr(mask, impl=impl)
    ptrs, idxs = bsr_reference(mask.cpu())
    lead, mb, nb = mask.shape[:-2], mask.shape[-2], mask.shape[-1]
    assert out.indptr.shape == (*lead, mb + 1) and out.indices.shape == (*lead, mb * nb)
    assert out.indptr.dtype == torch.int32 and out.indices.dtype == torch.int32 and out.n_cols == nb
    nmat = len(ptrs)
    got_ptr = out.indptr.reshape(nmat, mb + 1).cpu().tolist()
    got_idx = out.indices.reshape(nmat, mb * nb).cpu().tolist()
    for gp, gi, rp, ri in zip(got_ptr, got_idx, ptrs, idxs):
        assert gp == rp
        assert gi[: rp[-1]] == ri


CASES = [
    (1, 1, 1), (1, 1, 7), (1, 1, 128), (3, 1, 1000), (2, 3, 33), (4, 5, 17), (1, 2, 0), (2, 1, 5000),
]


@pytest.mark.parametrize("b,mb,nb", CASES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_bsr_torch_matches_reference(b, mb, nb, density):
    g = torch.Generator().manual_seed(b * 1000 + mb * 10 + nb)
    mask = torch.rand(b, mb, nb, generator=g) < density
    _check(mask, "torch")


def test_bsr_1d_mask_is_one_block_row():
    mask = torch.tensor([True, False, True, True, False])
    out = chunk_mask_to_bsr(mask, impl="torch")
    assert out.indptr.tolist() == [0, 3] and out.indices[:3].tolist() == [0, 2, 3]


def test_bsr_preallocated_out_is_filled_in_place():
    mask = torch.rand(2, 1, 40) < 0.3
    buf = BSR(torch.full((2, 2), -7, dtype=torch.int32), torch.full((2, 40), -7, dtype=torch.int32), 40)
    out = chunk_mask_to_bsr(mask, out=buf, impl="torch")
    assert out is buf
    ptrs, idxs = bsr_reference(mask)
    assert buf.indptr.tolist() == ptrs
    for row, ri in zip(buf.indices.tolist(), idxs):
        assert row[: len(ri)] == ri


def test_bsr_rejects_bad_input():
    with pytest.raises(SpecAttnError, match="bool"):
        chunk_mask_to_bsr(torch.ones(1, 4))
    with pytest.raises(SpecAttnError, match="impl"):
        chunk_mask_to_bsr(torch.ones(1, 4, dtype=torch.bool), impl="cuda")
    with pytest.raises(SpecAttnError, match="preallocated"):
        chunk_mask_to_bsr(torch.ones(1, 4, dtype=torch.bool),
                          out=BSR(torch.zeros(3, dtype=torch.int32), torch.zeros(4, dtype=torch.int32), 4))


@needs_interpreter
@pytest.mark.parametrize("b,mb,nb", [(1, 1, 7), (2, 3, 33), (1, 1, 0)])
def test_bsr_triton_interpreter(b, mb, nb):
    mask = torch.rand(b, mb, nb, generator=torch.Generator().manual_seed(nb)) < 0.4
    _check(mask, "triton")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("b,mb,nb", CASES + [(8, 1, 16384), (1, 4, 9000)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.7, 1.0])
def test_bsr_triton_gpu_matches_reference(b, mb, nb, density):
    g = torch.Generator().manual_seed(b * 7 + mb * 3 + nb)
    mask = (torch.rand(b, mb, nb, generator=g) < density).cuda()
    _check(mask, "triton")
    _check(mask, "torch")


@pytest.mark.gpu
@needs_gpu
def test_bsr_triton_is_graph_capturable():
    mask = (torch.rand(4, 1, 512) < 0.3).cuda()
    out = chunk_mask_to_bsr(mask, impl="triton")  # warm-up compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chunk_mask_to_bsr(mask, out=out, impl="triton")
    mask.copy_((torch.rand(4, 1, 512) < 0.6).cuda())
    graph.replay()
    torch.cuda.synchronize()
    ptrs, idxs = bsr_reference(mask.cpu())
    assert out.indptr.cpu().tolist() == ptrs
