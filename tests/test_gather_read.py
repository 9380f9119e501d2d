"""The gathering read behind the gather floor (scripts/gpu/read_floor.py): its partial sums total the float64 sum of
exactly the listed chunks' keys and values (unlisted chunks hold NaN: a read of one shows), for one list a sequence
and one a head, empty and full lists, lengths no multiple of a program's span, and a bound on the list lengths."""

from __future__ import annotations

import pytest
import torch

from .availability import needs_gpu, needs_interpreter


def _case(b, h, h_sel, length, d, chunk, counts, device, dtype=torch.bfloat16, seed=0):
    """Random keys and values with NaN outside the chunks listed (``counts[b][s]`` random chunks of list (b, s)),
    the lists, and the float64 sum of the listed elements."""
    gen = torch.Generator().manual_seed(seed)
    nc = length // chunk
    assert max(max(c) for c in counts) <= nc, "a list holds at most every chunk"
    k = torch.rand((b, h, length, d), generator=gen).to(dtype)
    v = torch.rand((b, h, length, d), generator=gen).to(dtype)
    ids = torch.zeros((b, h_sel, nc), dtype=torch.int32)
    n = torch.tensor(counts, dtype=torch.int32)
    listed = torch.zeros((b, h, nc), dtype=torch.bool)
    for i in range(b):
        for s in range(h_sel):
            chosen = torch.randperm(nc, generator=gen)[: counts[i][s]].sort().values
            ids[i, s, : len(chosen)] = chosen.int()
            for head in range(s * h // h_sel, (s + 1) * h // h_sel):
                listed[i, head, chosen] = True
    rows = listed.repeat_interleave(chunk, dim=2)  # (b, h, length)
    reference = (k.double()[rows].sum() + v.double()[rows].sum()).item()
    k[~rows], v[~rows] = float("nan"), float("nan")
    return k.to(device), v.to(device), ids.to(device), n.to(device), reference


CASES = [  # (B, H, H_sel, chunks a head, counts): one list a sequence, one a head, empty, full, odd lengths
    (2, 2, 1, 64, [[5], [64]]),
    (1, 4, 4, 64, [[0, 1, 33, 64]]),
    (3, 2, 2, 48, [[48, 17], [1, 0], [7, 48]]),
]


def _check(device, d, chunk, configs):
    from specattn.gpu.kernels.gather_read import gather_sums

    for b, h, h_sel, nc, counts in CASES:
        k, v, ids, n, reference = _case(b, h, h_sel, nc * chunk, d, chunk, counts, device)
        most = max(max(c) for c in counts)
        for chunks, iters, warps in configs:
            for bound in (None, most):
                sums = gather_sums(k, v, ids, n, chunk, bound, chunks, iters, warps)
                span = chunks * iters
                assert sums.shape == (b * h, -(-max(bound or ids.shape[2], 1) // span))
                assert sums.double().sum().item() == pytest.approx(reference, rel=1e-5, abs=1e-6), (counts, bound)


@needs_interpreter
def test_gather_sums_total_the_listed_chunks_interpreter():
    _check("cpu", 16, 4, [(2, 2, 4), (4, 1, 4)])


@needs_gpu
def test_gather_sums_total_the_listed_chunks_gpu():
    from specattn.gpu.kernels.gather_read import CONFIGS

    _check("cuda", 128, 16, CONFIGS)


@needs_interpreter
def test_gather_sums_refuse_what_they_cannot_read_interpreter():
    from specattn.gpu.kernels.gather_read import gather_sums

    k = torch.zeros((2, 4, 64, 16), dtype=torch.bfloat16)
    ids, n = torch.zeros((2, 3, 16), dtype=torch.int32), torch.zeros((2, 3), dtype=torch.int32)
    with pytest.raises(ValueError, match="H_sel dividing H"):
        gather_sums(k, k, ids, n, 4)
    with pytest.raises(ValueError, match="must match"):
        gather_sums(k, k.transpose(2, 3), ids[:, :1], n[:, :1], 4)
    with pytest.raises(ValueError, match="out must be"):
        gather_sums(k, k, ids[:, :1], n[:, :1], 4, out=torch.empty(3))


@needs_interpreter
def test_the_read_floor_takes_each_reads_fastest_setting_hot_and_cold_apart(monkeypatch):
    """``read_floor.fastest`` times every setting's calls hot (the first input set alone) and cold (rotating over all
    the sets) and keeps the fastest of each measure, which may come from different settings."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts" / "gpu"))
    import read_floor

    timed = {}  # call -> (hot us, cold us) it stands for
    monkeypatch.setattr(read_floor, "graph_us", lambda call: timed[call][0])
    monkeypatch.setattr(read_floor, "rotating_graph_us", lambda calls: max(timed[c][1] for c in calls))
    made = []

    def calls_of(setting):
        calls = [lambda: None for _ in range(3)]
        hot, cold = setting
        for i, call in enumerate(calls):
            timed[call] = (hot if i == 0 else 99.0, cold)
        made.append(setting)
        return calls

    assert read_floor.fastest([(5.0, 9.0), (4.0, 12.0), (6.0, 8.0)], calls_of) == (4.0, 8.0)
    assert made == [(5.0, 9.0), (4.0, 12.0), (6.0, 8.0)]
