"""The per-layer SpecAttn step (specattn.gpu.step): draft rows -> nucleus -> chunk list -> sparse attention.

Checked against the float64 references (specattn.methods.nucleus's nucleus, the torch attention path over
specattn.core.visibility) on the CPU, on the Triton interpreter, and on the GPU, where the step is also
captured in a CUDA graph, replayed on new inputs and compared with eager execution, and run with
torch's sync debug mode set to "error" (a host synchronisation fails the test).
"""

from __future__ import annotations

import math

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.gpu.attention import AttentionShape
from specattn.gpu.attention.sparse import (
    ChunkLists,
    chunk_lists,
    dense_verify,
    sparse_verify_torch,
)
from specattn.gpu.step import CapturedStep, SpecAttnStep, select_chunks
from specattn.methods import nucleus as select

from .availability import needs_gpu, needs_interpreter


def draft_rows(lengths, t, h_sel, rows, width, gen, dtype=torch.float32):
    """Softmax rows over each sequence's prefix [0, lengths[b] - T), zeros past it: (B, H_sel, R, width)."""
    w = torch.softmax(3 * torch.randn(len(lengths), h_sel, rows, width, generator=gen), -1)
    keys = torch.arange(width)
    for b, n in enumerate(lengths):
        w[b, :, :, keys >= n - t] = 0
    return w.to(dtype)


def inputs(b, hq, hkv, t, d, kcap, lengths, h_sel, rows, width, dtype, device, seed, draft_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, t, d, generator=g).to(dtype)
    k, v = (torch.randn(b, hkv, kcap, d, generator=g).to(dtype) for _ in range(2))
    draft = draft_rows(lengths, t, h_sel, rows, width, g, draft_dtype)
    return [x.to(device) for x in (q, k, v, torch.tensor(lengths, dtype=torch.int32), draft)]


def reference(q, k, v, lengths, draft, p, c):
    """float64 nucleus chunk mask (union over each list's rows) -> lists -> exact attention, on the CPU."""
    q, k, v, lengths, draft = (x.cpu() for x in (q, k, v, lengths, draft))
    mask = select.nucleus_chunk_mask(draft.double(), p, c, group=draft.shape[2])[:, :, 0]
    lists = chunk_lists(mask, impl="torch")
    out = sparse_verify_torch(q.double(), k.double(), v.double(), lengths, lists.ids, lists.n, c, 1 / math.sqrt(q.shape[3]))
    return mask, lists, out


def check_step(step, args, p, c, tol):
    q, k, v, lengths, draft = args
    out = step(q, k, v, lengths, draft)
    mask, lists, ref = reference(q, k, v, lengths, draft, p, c)
    nc = mask.shape[-1]
    assert torch.equal(step.chunk_mask[..., :nc].cpu(), mask), "chunk mask differs from the float64 nucleus"
    assert torch.equal(step.lists.n.cpu(), lists.n)
    for b in range(lists.n.shape[0]):
        for h in range(lists.n.shape[1]):
            n = int(lists.n[b, h])
            assert torch.equal(step.lists.ids[b, h, :n].cpu(), lists.ids[b, h, :n])
    assert ((out.cpu().double() - ref).norm() / ref.norm()).item() < tol
    return out


def test_step_on_cpu_uses_the_references():
    shape = AttentionShape(4, 2, 16, 4, torch.float32)
    args = inputs(2, 4, 2, 3, 16, 50, [50, 20], 1, 3, 47, torch.float32, "cpu", 0)
    step = SpecAttnStep(shape, batch=2, max_keys=50, n_queries=3, p=0.9, device="cpu")
    check_step(step, args, 0.9, 4, 1e-6)


def test_selecting_all_layers_at_once_matches_per_layer_steps():
    """select_chunks over (layers, B, H_sel) rows, then attend with one layer's lists == that layer's step."""
    shape = AttentionShape(4, 2, 16, 4, torch.float32)
    q, k, v, lengths, draft = inputs(2, 4, 2, 3, 16, 50, [50, 20], 1, 3, 47, torch.float32, "cpu", 0)
    layers = torch.stack([draft, draft.flip(-2).roll(5, -1)])  # two layers' rows
    step = SpecAttnStep(shape, batch=2, max_keys=50, n_queries=3, p=0.9, device="cpu")
    every = ChunkLists.empty(2 * 2, 1, step.capacity, "cpu")
    every = ChunkLists(every.ids.view(2, 2, 1, -1), every.n.view(2, 2, 1))
    select_chunks(layers, 0.9, 4, every)
    for layer in range(2):
        own = step(q, k, v, lengths, layers[layer])
        shared = step.attend(q, k, v, lengths, lists=ChunkLists(every.ids[layer], every.n[layer]))
        assert torch.equal(own, shared) and torch.equal(step.lists.n, every.n[layer])


def test_step_device_names_the_current_cuda_device():
    if torch.cuda.is_available():
        assert SpecAttnStep(AttentionShape(4, 2, 16, 4, torch.bfloat16), 1, 50, 3, 0.9).device.index is not None


def test_step_refuses_bad_input():
    shape = AttentionShape(4, 2, 16, 4, torch.float32)
    with pytest.raises(SpecAttnError, match="sel_heads=3"):
        SpecAttnStep(shape, 1, 50, 3, 0.9, sel_heads=3, device="cpu")
    with pytest.raises(SpecAttnError, match="p=1.5"):
        SpecAttnStep(shape, 1, 50, 3, 1.5, device="cpu")
    step = SpecAttnStep(shape, 2, 50, 3, 0.9, device="cpu")
    q, k, v, lengths, draft = inputs(2, 4, 2, 3, 16, 50, [50, 20], 1, 3, 47, torch.float32, "cpu", 0)
    with pytest.raises(SpecAttnError, match="draft rows"):
        step(q, k, v, lengths, draft[:, :, :, :0])
    with pytest.raises(SpecAttnError, match="draft rows over 60 keys"):
        step(q, k, v, lengths, torch.zeros(2, 1, 3, 60))
    with pytest.raises(SpecAttnError, match="do not fit the step"):
        step(q[:, :, :2], k, v, lengths, draft)


@needs_interpreter
@pytest.mark.parametrize("h_sel", [1, 2])
def test_step_interpreter(h_sel):
    """Kernels on the interpreter: float32 draft rows (Triton nucleus), float16 attention."""
    shape = AttentionShape(4, 2, 16, 4, torch.float16)
    args = inputs(3, 4, 2, 3, 16, 60, [60, 21, 3], h_sel, 2, 60, torch.float16, "cpu", h_sel)
    step = SpecAttnStep(shape, batch=3, max_keys=60, n_queries=3, p=0.9, sel_heads=h_sel, device="cpu")
    check_step(step, args, 0.9, 4, 1e-2)


# -------------------------------------------------------------------------------------------- GPU
STEP_CASES = [  # (B, Hq, Hkv, T, D, K_cap, lengths, H_sel, rows, draft dtype)
    (1, 32, 8, 5, 128, 8197, [8197], 1, 4, torch.float32),
    (4, 32, 8, 5, 128, 20005, [20005, 9000, 5, 12345], 8, 4, torch.bfloat16),
    (2, 32, 32, 5, 128, 5000, [5000, 4093], 1, 128, torch.float32),
    (3, 16, 4, 3, 64, 3000, [3000, 1000, 2999], 4, 2, torch.float16),
]


@needs_gpu
@pytest.mark.parametrize("b,hq,hkv,t,d,kcap,lengths,h_sel,rows,ddt", STEP_CASES)
@pytest.mark.parametrize("p", [0.5, 0.95, 1.0])
def test_step_matches_reference_gpu(b, hq, hkv, t, d, kcap, lengths, h_sel, rows, ddt, p):
    shape = AttentionShape(hq, hkv, d, 16, torch.bfloat16)
    width = 16 * math.ceil((kcap - t) / 16)
    args = inputs(b, hq, hkv, t, d, kcap, lengths, h_sel, rows, width, torch.bfloat16, "cuda", kcap, ddt)
    step = SpecAttnStep(shape, batch=b, max_keys=kcap, n_queries=t, p=p, sel_heads=h_sel)
    check_step(step, args, p, 16, 1e-2)


@needs_gpu
@pytest.mark.parametrize("h_sel", [1, 8])
def test_step_graph_replay_matches_eager_gpu(h_sel):
    """Capture once, then replay on new q, draft rows and lengths: same result as eager, bit for bit."""
    b, hq, hkv, t, d, kcap = 3, 32, 8, 5, 128, 16389
    shape = AttentionShape(hq, hkv, d, 16, torch.bfloat16)
    width = 16 * math.ceil((kcap - t) / 16)
    step = SpecAttnStep(shape, batch=b, max_keys=kcap, n_queries=t, p=0.95, sel_heads=h_sel)
    first = inputs(b, hq, hkv, t, d, kcap, [kcap, 4000, 77], h_sel, 4, width, torch.bfloat16, "cuda", 1)
    captured = CapturedStep(step, *first)
    for seed, lengths in [(2, [9000, kcap, 6]), (3, [5, 5, kcap])]:
        new = inputs(b, hq, hkv, t, d, kcap, lengths, h_sel, 4, width, torch.bfloat16, "cuda", seed)
        for static, value in zip((captured.q, captured.k, captured.v, captured.lengths, captured.draft), new):
            static.copy_(value)
        replayed = captured.replay().clone()
        replay_lists = step.lists.n.clone()
        eager = SpecAttnStep(shape, batch=b, max_keys=kcap, n_queries=t, p=0.95, sel_heads=h_sel)(*new)
        assert torch.equal(replayed, eager)
        assert torch.equal(replay_lists, step.lists.n)
        _, lists, ref = reference(*new, 0.95, 16)
        assert torch.equal(replay_lists.cpu(), lists.n)
        assert ((replayed.cpu().double() - ref).norm() / ref.norm()).item() < 1e-2


@needs_gpu
def test_step_does_not_synchronise_gpu():
    b, hq, hkv, t, d, kcap = 2, 32, 8, 5, 128, 8197
    shape = AttentionShape(hq, hkv, d, 16, torch.bfloat16)
    args = inputs(b, hq, hkv, t, d, kcap, [kcap, 3000], 1, 4, 16 * math.ceil((kcap - t) / 16), torch.bfloat16,
                  "cuda", 4)
    step = SpecAttnStep(shape, batch=b, max_keys=kcap, n_queries=t, p=0.95)
    step(*args)  # warm-up: compiles and loads the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = step(*args)
        dense = dense_verify(*args[:4], workspace=step.workspace)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).all() and torch.isfinite(dense).all()
