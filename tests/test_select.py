"""Nucleus semantics against a brute-force reference, and chunk pooling / group union."""

import math

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.methods.nucleus import (
    nucleus_chunk_mask,
    nucleus_mask,
    nucleus_threshold,
    pool_chunks,
    union_groups,
)


def brute_force_nucleus(row: list[float], p: float) -> set[int]:
    """Smallest set, largest weights first, reaching p of the mass; ties with the last one in."""
    if p >= 1.0:
        return set(range(len(row)))
    total = math.fsum(row)
    order = sorted(range(len(row)), key=lambda i: -row[i])
    taken, mass = [], 0.0
    for i in order:
        taken.append(i)
        mass = math.fsum(row[j] for j in taken)
        if mass >= p * total:
            break
    last = row[taken[-1]]
    return {i for i, w in enumerate(row) if w >= last}


def random_rows(generator: torch.Generator) -> list[torch.Tensor]:
    """Fresh adversarial rows: softmax, heavy ties, one-hot, uniform, zeros, L=1, partial mass."""
    rows = []
    for length in (1, 2, 7, 16, 33, 100):
        rows.append(torch.softmax(3 * torch.randn(length, generator=generator), 0))
        rows.append(torch.randint(0, 4, (length,), generator=generator).float())  # many ties, zeros
        one_hot = torch.zeros(length)
        one_hot[torch.randint(0, length, (1,), generator=generator)] = 1.0
        rows.append(one_hot)
        rows.append(torch.full((length,), 1.0 / length))
        rows.append(0.3 * torch.softmax(torch.randn(length, generator=generator), 0))  # mass < 1
    rows.append(torch.zeros(5))
    return rows


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_nucleus_matches_brute_force(p):
    generator = torch.Generator().manual_seed(int(p * 1000))
    for row in random_rows(generator):
        expected = brute_force_nucleus(row.double().tolist(), p)
        got = set(torch.nonzero(nucleus_mask(row, p)).flatten().tolist())
        assert got == expected, (p, row)


def test_nucleus_batched_rows_and_dtypes():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(2 * torch.randn(3, 4, 50, generator=generator), -1)
    mask = nucleus_mask(weights, 0.9)
    assert mask.shape == weights.shape
    for index in range(12):
        row = weights.reshape(12, 50)[index]
        assert set(torch.nonzero(mask.reshape(12, 50)[index]).flatten().tolist()) == brute_force_nucleus(
            row.double().tolist(), 0.9)
    for dtype in (torch.bfloat16, torch.float16):
        low = weights.to(dtype)
        theta = nucleus_threshold(low, 0.9)
        assert theta.dtype == torch.float64
        reference = [brute_force_nucleus(r.double().tolist(), 0.9) for r in low.reshape(12, 50)]
        got = nucleus_mask(low, 0.9).reshape(12, 50)
        assert [set(torch.nonzero(g).flatten().tolist()) for g in got] == reference


def test_nucleus_mass_reaches_p_and_is_minimal():
    generator = torch.Generator().manual_seed(1)
    weights = torch.softmax(3 * torch.randn(200, 300, generator=generator), -1).double()
    mask = nucleus_mask(weights, 0.95)
    kept = (weights * mask).sum(-1)
    assert bool((kept >= 0.95 * weights.sum(-1) - 1e-12).all())
    smallest_kept = torch.where(mask, weights, torch.inf).amin(-1, keepdim=True)
    without_ties = (weights * mask).sum(-1) - (weights * (weights == smallest_kept)).sum(-1)
    assert bool((without_ties < 0.95 * weights.sum(-1)).all())  # dropping the threshold ties falls short


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01, float("nan"), "0.9", True])
def test_bad_p_is_refused(p):
    with pytest.raises(SpecAttnError, match="outside \\(0, 1\\]"):
        nucleus_mask(torch.ones(4), p)


def test_pool_chunks_handles_partial_last_chunk():
    mask = torch.zeros(2, 37, dtype=torch.bool)
    mask[0, 36] = True  # only key of the last (partial) chunk of size 5
    mask[1, 15] = True
    pooled = pool_chunks(mask, 16)
    assert pooled.shape == (2, 3)
    assert pooled.tolist() == [[False, False, True], [True, False, False]]
    with pytest.raises(SpecAttnError, match="chunk_size=0"):
        pool_chunks(mask, 0)


def test_union_groups_short_last_group():
    mask = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0], [1, 0]], dtype=torch.bool)
    assert union_groups(mask, 2).tolist() == [[True, False], [False, True], [True, False]]
    assert union_groups(mask, 5).tolist() == [[True, True]]


def test_nucleus_chunk_mask_composes_the_steps():
    generator = torch.Generator().manual_seed(2)
    weights = torch.softmax(4 * torch.randn(2, 9, 45, generator=generator), -1)
    expected = pool_chunks(union_groups(nucleus_mask(weights, 0.8), 4), 16)
    assert torch.equal(nucleus_chunk_mask(weights, 0.8, 16, group=4), expected)
    assert nucleus_chunk_mask(weights, 0.8, 16, group=4).shape == (2, 3, 3)
