"""Sparse verification attention over device-side chunk lists (specattn.gpu.attention.sparse, the Triton
split-KV kernel, the ``triton`` backend) against float64 references built on specattn.core.visibility.

CPU: the torch path and the list builder (always). Interpreter: the Triton kernels on small shapes
(TRITON_INTERPRET=1). GPU: the compiled kernels on adversarial and model-sized shapes (marked ``gpu``).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.gpu.attention import AttentionShape, make_backend, n_prefix_chunks
from specattn.gpu.attention.sparse import (
    ChunkLists,
    chunk_lists,
    dense_verify,
    n_chunks_capacity,
    sparse_verify,
    sparse_verify_torch,
)
from specattn.gpu.attention.torch_backend import gathered_attention

from .availability import HAS_CUDA, needs_gpu, needs_interpreter


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def lists_reference(mask: torch.Tensor) -> tuple[list, list]:
    """Plain-Python lists of ``mask (B, H, NC)``: per (b, h) the kept ids and their count."""
    ids = [[[c for c, keep in enumerate(row) if keep] for row in per_b] for per_b in mask.tolist()]
    return ids, [[len(x) for x in per_b] for per_b in ids]


def make_case(b, hq, hkv, t, d, kcap, c, lengths, density, h_sel, dtype, device, seed, junk_ids=False):
    """Random q (a strided view of (B, T, Hq, D)), a strided KV cache view, lengths, lists of a random mask
    (optionally with out-of-prefix and negative ids appended to every list)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, hq, d, generator=g).to(dtype).transpose(1, 2)
    k = torch.randn(b, hkv, kcap + 7, d, generator=g).to(dtype)[:, :, :kcap]  # capacity view of a larger cache
    v = torch.randn(b, hkv, kcap + 7, d, generator=g).to(dtype)[:, :, :kcap]
    cap = n_chunks_capacity(kcap, t, c)
    mask = torch.rand(b, h_sel, cap, generator=g) < density
    lists = chunk_lists(mask, capacity=cap + (2 if junk_ids else 0), impl="torch")
    if junk_ids:
        for i, n_keys in enumerate(lengths):
            for h in range(h_sel):
                n = int(lists.n[i, h])
                lists.ids[i, h, n: n + 2] = torch.tensor([-3, math.ceil((n_keys - t) / c) + 1])
                lists.n[i, h] = n + 2
    to = dict(device=device)
    return (q.to(**to), k.to(**to), v.to(**to), torch.tensor(lengths, dtype=torch.int32, device=device),
            ChunkLists(lists.ids.to(**to), lists.n.to(**to)))


def check_kernel_case(case, c, tol, dense=False, config=None):
    q, k, v, lengths, lists = case
    b, hq, t, d = q.shape
    out = torch.full((b, t, hq, d), float("nan"), dtype=q.dtype, device=q.device)  # poisoned
    lse = torch.full((b, hq), float("nan"), dtype=torch.float32, device=q.device)
    last_q = torch.full((b, hq, d), float("nan"), dtype=q.dtype, device=q.device)  # poisoned
    if dense:
        got = dense_verify(q, k, v, lengths, c, out=out, config=config, impl="triton", lse_out=lse, q_out=last_q)
        nc = n_chunks_capacity(k.shape[2], t, c)
        lists = ChunkLists(torch.arange(nc, dtype=torch.int32, device=q.device).expand(b, 1, nc),
                           torch.full((b, 1), nc, dtype=torch.int32, device=q.device))
    else:
        got = sparse_verify(q, k, v, lengths, lists.ids, lists.n, c, out=out, config=config, impl="triton",
                            lse_out=lse, q_out=last_q)
    assert torch.equal(last_q, q[:, :, -1]), "the merge's copy of the last row's query"  # every (b, head), exact
    ref_lse = torch.empty_like(lse)
    ref = sparse_verify_torch(q.double(), k.double(), v.double(), lengths, lists.ids, lists.n, c, 1 / math.sqrt(d),
                              lse_out=ref_lse)
    assert got is out and got.shape == (b, t, hq, d) and got.dtype == q.dtype
    assert torch.isfinite(got).all(), "unwritten or non-finite outputs"
    assert rel_err(got, ref) < tol
    assert torch.allclose(lse, ref_lse, atol=tol, rtol=tol), "the last row's log-sum-exp"  # every (b, head) written


# -------------------------------------------------------------------------------------------- CPU
def test_lists_torch_match_reference():
    g = torch.Generator().manual_seed(0)
    for b, h, nc, density in [(1, 1, 1, 1.0), (2, 3, 17, 0.3), (3, 1, 40, 0.0), (1, 2, 100, 1.0), (2, 2, 0, 0.5)]:
        mask = torch.rand(b, h, nc, generator=g) < density
        lists = chunk_lists(mask, capacity=nc + 3, impl="torch")
        ids, counts = lists_reference(mask)
        assert lists.n.tolist() == counts and lists.ids.shape == (b, h, nc + 3)
        for i in range(b):
            for j in range(h):
                assert lists.ids[i, j, : counts[i][j]].tolist() == ids[i][j]


def test_lists_refuse_bad_input():
    with pytest.raises(SpecAttnError, match="bool"):
        chunk_lists(torch.ones(1, 1, 4))
    with pytest.raises(SpecAttnError, match="capacity=3"):
        chunk_lists(torch.ones(1, 1, 4, dtype=torch.bool), capacity=3)
    with pytest.raises(SpecAttnError, match="preallocated"):
        chunk_lists(torch.ones(1, 1, 4, dtype=torch.bool), out=ChunkLists.empty(1, 2, 4, "cpu"))


@pytest.mark.parametrize("t,hq,hkv,d,n,c", [(5, 4, 1, 16, 70, 16), (3, 6, 2, 8, 10, 4), (4, 2, 1, 8, 4, 16),
                                            (1, 2, 2, 8, 33, 16), (5, 8, 8, 16, 300, 16)])
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_torch_path_matches_gathered_reference(t, hq, hkv, d, n, c, density):
    """The batched torch path (visible_keys) against the one-sequence gathered reference."""
    g = torch.Generator().manual_seed(n + t)
    q = torch.randn(t, hq, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(n, hkv, d, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.rand(n_prefix_chunks(n, t, c), generator=g) < density
    lists = chunk_lists(mask.view(1, 1, -1), impl="torch")
    out = sparse_verify(q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None],
                        torch.tensor([n], dtype=torch.int32), lists.ids, lists.n, c)
    ref = gathered_attention(q, k, v, mask, c, 1 / math.sqrt(d), torch.float64)
    assert rel_err(out[0], ref) < 1e-12


def test_per_head_lists_select_per_kv_head():
    """H_sel = Hkv: query head h reads list h // g; a head whose list is empty sees only the tail."""
    b, hq, hkv, t, d, kcap, c = 1, 4, 2, 2, 8, 34, 4
    q, k, v, lengths, _ = make_case(b, hq, hkv, t, d, kcap, c, [34], 0.0, hkv, torch.float64, "cpu", 1)
    mask = torch.zeros(1, 2, 8, dtype=torch.bool)
    mask[0, 0] = True  # KV head 0: every chunk; KV head 1: none
    lists = chunk_lists(mask)
    out = sparse_verify(q, k, v, lengths, lists.ids, lists.n, c)
    full = dense_verify(q, k, v, lengths, c)
    tail_only = sparse_verify(q, k, v, lengths, lists.ids, torch.zeros_like(lists.n), c)
    assert torch.allclose(out[:, :, :2], full[:, :, :2]) and torch.allclose(out[:, :, 2:], tail_only[:, :, 2:])
    assert not torch.allclose(out[:, :, 2:], full[:, :, 2:])


def test_sparse_verify_refuses_bad_input():
    q, k, v, lengths, lists = make_case(2, 4, 2, 3, 8, 20, 4, [20, 9], 0.5, 1, torch.float32, "cpu", 2)
    with pytest.raises(SpecAttnError, match="multiple"):
        sparse_verify(q[:, :3], k, v, lengths, lists.ids, lists.n)
    with pytest.raises(SpecAttnError, match="lengths"):
        sparse_verify(q, k, v, lengths.long(), lists.ids, lists.n)
    with pytest.raises(SpecAttnError, match="H_sel"):
        sparse_verify(q, k, v, lengths, lists.ids.expand(2, 3, -1), lists.n.expand(2, 3))
    with pytest.raises(SpecAttnError, match="impl"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, impl="cuda")
    with pytest.raises(SpecAttnError, match=r"q_out must be \(B, Hq, D\) = \(2, 4, 8\)"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, q_out=torch.empty(2, 4, 3))
    with pytest.raises(SpecAttnError, match="unit stride along D"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, q_out=torch.empty(2, 8, 4).transpose(1, 2))
    last_q = torch.full((2, 4, 8), float("nan"))  # the torch path copies the last row's query too
    sparse_verify(q, k, v, lengths, lists.ids, lists.n, q_out=last_q, impl="torch")
    assert torch.equal(last_q, q[:, :, -1])
    if not HAS_CUDA:
        with pytest.raises(SpecAttnError, match="backend='torch'"):
            make_backend("triton", AttentionShape(4, 2, 8, 4, torch.bfloat16), device="cpu")


# ------------------------------------------------------------------------------------ interpreter
INTERP_CASES = [  # (B, Hq, Hkv, T, D, K_cap, C, lengths, H_sel)
    (1, 4, 2, 3, 16, 40, 4, [40], 1),                 # partial last chunk (P = 37)
    (3, 4, 1, 5, 16, 45, 8, [45, 13, 5], 1),          # ragged B = 3; P = 40, 8 (one chunk), 0 (tail only)
    (2, 2, 2, 2, 32, 33, 4, [6, 33], 2),              # MHA, per-KV-head lists, P = 4 (L = 1 chunk), 31
    (1, 2, 1, 1, 16, 18, 16, [18], 1),                # T = 1, P = 17: one full chunk + 1 key
    (2, 4, 2, 5, 16, 30, 1, [30, 7], 1),              # 1-key chunks, T = 5: P = 25 and 2 chunks
]


@needs_interpreter
@pytest.mark.parametrize("b,hq,hkv,t,d,kcap,c,lengths,h_sel", INTERP_CASES)
@pytest.mark.parametrize("density", [0.0, 0.5, 1.0])
def test_kernel_interpreter(b, hq, hkv, t, d, kcap, c, lengths, h_sel, density):
    """float16 only: Triton 3.6's interpreter computes bfloat16 tl.dot wrongly (bfloat16 runs on the GPU)."""
    from specattn.gpu.kernels.split_config import SplitConfig

    case = make_case(b, hq, hkv, t, d, kcap, c, lengths, density, h_sel, torch.float16, "cpu", kcap + t,
                     junk_ids=True)
    tiny = SplitConfig(block_n=16, min_chunks=1)  # programs whose units span several lists
    check_kernel_case(case, c, 1e-2, config=tiny)
    check_kernel_case(case, c, 1e-2, config=SplitConfig())
    check_kernel_case(case, c, 1e-2, config=SplitConfig(block_n=16, ctas_per_sm=16, min_chunks=1))  # idle programs
    fused = dataclasses.replace(tiny, fused_merge=True)  # one launch: density 0 leaves every list to program j % P
    check_kernel_case(case, c, 1e-2, config=fused)
    steal = dataclasses.replace(tiny, steal=50)  # half the units in dynamic ranges (the interpreter's program 0 takes
    check_kernel_case(case, c, 1e-2, config=steal)  # them all: its ranges then span lists it did not start in)
    if density == 1.0:
        check_kernel_case(case, c, 1e-2, dense=True, config=tiny)
        check_kernel_case(case, c, 1e-2, dense=True, config=fused)
        check_kernel_case(case, c, 1e-2, dense=True, config=steal)


@needs_interpreter
def test_kernel_interpreter_merges_many_partials_per_list():
    """Lists split over more programs than a merge program takes partials at once (several merge rounds; one
    query row per merge program), alone (one list over 8 programs at tiles 1 and 2, 64 at 16 and 32: 2-8 rounds at
    every tile) and in a ragged batch (about 21 a list over 64 programs: several rounds of 16). (INTERP_CASES' B = 3
    case merges 4 rows per program.) A merge that stops after its first round fails every tile alone and every
    dynamic-range setting. Programs are few where a setting allows it: the interpreter runs them one by one."""
    from specattn.gpu.kernels.split_config import SplitConfig

    def programs(n, **kw):  # n programs of a chunk each (the interpreter's 4 "SMs")
        return SplitConfig(block_n=4, ctas_per_sm=n // 4, min_chunks=1, **kw)

    alone = make_case(1, 4, 1, 5, 16, 600, 4, [600], 0.8, 1, torch.float16, "cpu", 8)
    for n, tile in ((8, 1), (8, 2), (64, 16), (64, 32)):  # one partial a round (8 rows: SB = 1) .. 32 (one row)
        check_kernel_case(alone, 4, 1e-2, config=programs(n, merge_tile=tile))
    ragged = make_case(3, 4, 1, 5, 16, 600, 4, [600, 431, 77], 0.8, 1, torch.float16, "cpu", 10)
    check_kernel_case(ragged, 4, 1e-2, config=programs(64, merge_tile=16))
    for case in (alone, ragged):
        # fused: the last of a list's many programs merges all its 20 rows, a partial slot an iteration
        check_kernel_case(case, 4, 1e-2, config=programs(64, fused_merge=True))
    for case, share, spread in ((alone, 10, 2), (alone, 90, 2), (ragged, 90, 8)):  # dynamic ranges: partials in
        #                       static and dynamic slots, several rounds of 8; at 8 a program, ranges of one unit
        check_kernel_case(case, 4, 1e-2, config=programs(16, steal=share, steal_ranges=spread, merge_tile=8))


@needs_interpreter
def test_fused_merge_leaves_its_tickets_at_zero_and_a_reused_workspace_gives_the_same_output():
    """The fused launch's per-list tickets are zero after every launch (the merging program resets its list's, so a
    captured graph can replay it), a workspace reused across launches of other shapes gives what a fresh one gives and
    what the two-launch kernel gives (to float32 rounding: the same partials, merged in the same order), and a
    fused_merge or pdl that is no boolean is refused."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    fused = SplitConfig(block_n=8, min_chunks=1, fused_merge=True)
    workspace = K.make_workspace(3, 2, 2, 3, 16, fused, "cpu")
    assert workspace.tickets.tolist() == [0] * 6
    for seed, lengths, density in ((41, [60, 31, 9], 0.7), (42, [44, 60, 3], 0.0), (43, [60, 60, 60], 1.0)):
        q, k, v, lengths, lists = make_case(3, 4, 2, 3, 16, 60, 4, lengths, density, 2, torch.float16, "cpu", seed,
                                            junk_ids=True)
        call = dict(config=fused, impl="triton")
        reused = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, workspace=workspace, **call)
        assert workspace.tickets.tolist() == [0] * 6, seed
        assert torch.equal(reused, sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, **call))
        two = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, impl="triton",
                            config=dataclasses.replace(fused, fused_merge=False))
        assert torch.allclose(reused.float(), two.float(), atol=2e-3, rtol=2e-3), seed
    with pytest.raises(ValueError, match="fused_merge is true or false"):
        SplitConfig(fused_merge=2)
    with pytest.raises(ValueError, match="pdl is true or false"):
        SplitConfig(pdl=2)
    assert SplitConfig(pdl=0).pdl is False
    assert SplitConfig(fused_merge=1).fused_merge is True  # configs give 0/1


@needs_interpreter
def test_dynamic_ranges_leave_the_cursor_at_zero_and_equal_the_static_split():
    """With ``steal`` the split programs take dynamic ranges through a count in the workspace that the merge resets:
    it is zero after every launch (a captured graph replays it), a workspace reused across shapes gives what a fresh
    one gives and the static split's output to float32 rounding (other partial boundaries); a workspace made without
    room for the dynamic ranges (or for fewer than its ``steal_ranges``), a share past 90%, a ``steal_ranges`` outside
    1..64 and steal with the one-launch merge are refused."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    for spread, seeds in ((2, (51, 52, 53)), (1, (54,)), (8, (55, 56))):
        _check_dynamic_ranges(K, SplitConfig(block_n=8, min_chunks=1, steal=40, steal_ranges=spread), seeds)
    config = SplitConfig(block_n=8, min_chunks=1, steal=40)
    q, k, v, lengths, lists = make_case(3, 4, 2, 3, 16, 60, 4, [60, 31, 9], 0.7, 2, torch.float16, "cpu", 51)
    with pytest.raises(ValueError, match="steal=40 needs a workspace made for it"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=config, impl="triton",
                      workspace=K.make_workspace(3, 2, 2, 3, 16, dataclasses.replace(config, steal=0), "cpu"))
    with pytest.raises(ValueError, match="steal=40 needs a workspace made for it"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=dataclasses.replace(config, steal_ranges=8),
                      impl="triton", workspace=K.make_workspace(3, 2, 2, 3, 16, config, "cpu"))
    with pytest.raises(ValueError, match="steal is a percent of the work in 0..90"):
        SplitConfig(steal=95)
    for spread in (0, 65):
        with pytest.raises(ValueError, match="steal_ranges is the dynamic ranges a program takes on average, 1..64"):
            SplitConfig(steal=25, steal_ranges=spread)
    with pytest.raises(ValueError, match="steal needs the merge launch"):
        SplitConfig(steal=25, fused_merge=True)


def _check_dynamic_ranges(K, config, seeds):
    """``config``'s workspace holds a slot for each of a program's ranges, its count is zero after every launch, and
    a reused workspace gives a fresh one's output and the static split's to float32 rounding."""
    workspace = K.make_workspace(3, 2, 2, 3, 16, config, "cpu")
    slots = (1 + config.steal_ranges) * workspace.programs + 6
    assert workspace.cursor.tolist() == [0] and workspace.o.shape[0] == slots, config
    for seed, lengths, density in zip(seeds, ([60, 31, 9], [44, 60, 3], [60, 60, 60]), (0.7, 0.0, 1.0)):
        q, k, v, lengths, lists = make_case(3, 4, 2, 3, 16, 60, 4, lengths, density, 2, torch.float16, "cpu", seed,
                                            junk_ids=True)
        reused = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, workspace=workspace, config=config,
                               impl="triton")
        assert workspace.cursor.tolist() == [0], seed
        assert torch.equal(reused, sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=config,
                                                 impl="triton"))
        static = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, impl="triton",
                               config=dataclasses.replace(config, steal=0))
        assert torch.allclose(reused.float(), static.float(), atol=2e-3, rtol=2e-3), (config, seed)


@needs_interpreter
def test_split_kernel_writes_the_unit_ends_the_merge_reads_and_a_reused_workspace_is_rewritten():
    """The merge reads each list's unit range from the split kernel's ``ends`` (program 0 writes them, every
    launch): they equal the prefix sum of ceil(n_j / CPB) over the (clamped) list lengths; a workspace made for a
    larger batch, holding another launch's ends and with every partial slot poisoned with NaN before each launch,
    gives the same output as a fresh one (the merge reads only slots the split wrote); one made for fewer lists is
    refused."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    config = SplitConfig(block_n=8, min_chunks=1)  # CPB = 2 chunks of 4 keys per unit
    big = make_case(3, 4, 2, 3, 16, 60, 4, [60, 31, 9], 0.7, 2, torch.float16, "cpu", 21, junk_ids=True)
    small = make_case(2, 4, 2, 3, 16, 60, 4, [44, 60], 0.5, 2, torch.float16, "cpu", 22)
    workspace = K.make_workspace(3, 2, 2, 3, 16, config, "cpu")
    for q, k, v, lengths, lists in (big, small):
        fresh = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=config, impl="triton")
        workspace.o.fill_(float("nan"))
        workspace.lse.fill_(float("nan"))
        reused = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=config, impl="triton",
                               workspace=workspace)
        assert torch.equal(fresh, reused)
        n = lists.n.clamp(min=0, max=lists.ids.shape[2]).reshape(-1).long()
        units = torch.cumsum((n + 1) // 2, 0)
        assert workspace.ends[: len(units)].tolist() == units.tolist()
    q, k, v, lengths, lists = big
    with pytest.raises(ValueError, match="made for 4 .* launched with 6"):
        sparse_verify(q, k, v, lengths, lists.ids, lists.n, 4, config=config, impl="triton",
                      workspace=K.make_workspace(2, 2, 2, 3, 16, config, "cpu"))


@needs_interpreter
@pytest.mark.parametrize("sparse", [False, True])
def test_graph_attention_fills_a_row_tap_from_the_kernel(sparse):
    """The decoder's attention function on the kernel path: a layer with a row tap gets the last row's query
    (written by the merge, no copy launched) and its base-2 log-sum-exp, into strided views of the decoder's
    buffers, as the torch path computes them; a layer without a tap leaves the buffers alone."""
    from types import SimpleNamespace

    from specattn.hooks.graph_attention import ForwardPlan, RowTap, graph_attention, use_kernels

    q, k, v, lengths, lists = make_case(2, 4, 2, 3, 16, 40, 4, [40, 21], 0.5, 1, torch.float16, "cpu", 31)
    assert use_kernels(q.device, q.dtype, 16)  # the kernel path, not the torch fallback's copy
    rows_q = torch.full((2, 4, 3, 16), float("nan"), dtype=torch.float16)  # (B, Hq, slots, D): the tap a strided view
    rows_lse = torch.full((2, 4, 3), float("nan"))
    plan = ForwardPlan("decode", lengths, 4, {0: lists} if sparse else {}, {0: RowTap(rows_q[:, :, 1], rows_lse[:, :, 1])})
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=2)
    out, _ = graph_attention(module, q, k, v, None, 0.25, specattn_graph=plan)
    assert torch.equal(rows_q[:, :, 1], q[:, :, -1]) and rows_q[:, :, [0, 2]].isnan().all()
    ref_lse = torch.empty(2, 4)
    ids, n = (lists.ids, lists.n) if sparse else (None, None)
    if not sparse:
        nc = n_chunks_capacity(40, 3, 4)
        ids, n = torch.arange(nc, dtype=torch.int32).expand(2, 1, nc), torch.full((2, 1), nc, dtype=torch.int32)
    ref = sparse_verify_torch(q.double(), k.double(), v.double(), lengths, ids, n, 4, 0.25, lse_out=ref_lse)
    assert rel_err(out, ref) < 1e-2 and torch.allclose(rows_lse[:, :, 1], ref_lse, atol=1e-2)
    module.layer_idx = 1  # no tap there
    graph_attention(module, q, k, v, None, 0.25, specattn_graph=plan)
    assert rows_q[:, :, [0, 2]].isnan().all() and rows_lse[:, :, [0, 2]].isnan().all()


@needs_interpreter
def test_graph_attention_runs_list_layers_at_the_sparse_launch():
    """``ForwardPlan.sparse_split``: a layer with chunk lists runs the sparse launch in its own workspace (a grid of
    another size), a layer without lists the plan's launch in the plan's workspace; both outputs equal the
    reference."""
    from types import SimpleNamespace

    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig
    from specattn.hooks.graph_attention import ForwardPlan, graph_attention

    q, k, v, lengths, lists = make_case(2, 4, 2, 3, 16, 70, 4, [70, 33], 0.4, 1, torch.float16, "cpu", 7)
    dense_cfg, sparse_cfg = SplitConfig(), SplitConfig(block_n=16, stages=1, ctas_per_sm=4, min_chunks=1)
    ws, sparse_ws = (K.make_workspace(2, 2, 2, 3, 16, c, "cpu") for c in (dense_cfg, sparse_cfg))
    assert sparse_ws.programs == 2 * ws.programs
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=2)
    nc = n_chunks_capacity(70, 3, 4)
    every = (torch.arange(nc, dtype=torch.int32).expand(2, 1, nc), torch.full((2, 1), nc, dtype=torch.int32))
    for layer, (ids, n), written, untouched in ((0, (lists.ids, lists.n), sparse_ws, ws), (1, every, ws, sparse_ws)):
        for w in (ws, sparse_ws):
            w.lse.fill_(float("nan"))
        plan = ForwardPlan("decode", lengths, 4, {0: lists}, {}, ws, split=dense_cfg, sparse_split=sparse_cfg,
                           sparse_workspace=sparse_ws)
        module.layer_idx = layer
        out, _ = graph_attention(module, q, k, v, None, 0.25, specattn_graph=plan)
        ref = sparse_verify_torch(q.double(), k.double(), v.double(), lengths, ids, n, 4, 0.25)
        assert rel_err(out, ref) < 1e-2, layer
        assert not written.lse.isnan().all() and untouched.lse.isnan().all(), layer


@needs_interpreter
@pytest.mark.parametrize("rows", [2, 8])
def test_merge_programs_of_several_rows_give_the_one_row_output(rows, monkeypatch):
    """The merge takes ``MERGE_ROWS`` (1) rows a program; ``profile_merge.py rows`` times 2-8 (min(rows, 4) warps,
    max(1, tile // rows) slots a round, the last block of a list part padding): the same output, in a ragged batch
    with lists split over several programs."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    assert K.MERGE_ROWS == 1
    case = make_case(3, 4, 2, 3, 16, 60, 4, [60, 31, 9], 0.7, 2, torch.float16, "cpu", 11, junk_ids=True)
    config = SplitConfig(block_n=8, min_chunks=1)
    one = sparse_verify(*case[:4], case[4].ids, case[4].n, 4, config=config, impl="triton")
    monkeypatch.setattr(K, "MERGE_ROWS", rows)
    several = sparse_verify(*case[:4], case[4].ids, case[4].n, 4, config=config, impl="triton")
    assert torch.allclose(several.float(), one.float(), atol=2e-3, rtol=2e-3)
    check_kernel_case(case, 4, 1e-2, config=config)


@needs_interpreter
def test_the_kernel_a_b_launches_the_version_it_swaps_in(tmp_path, monkeypatch):
    """``scripts/gpu/ab_kernel.py`` times another version of the kernel module beside the tree's in one process: the
    version it loads from a file (here the tree's with two rows a merge program) is the one ``sparse_verify`` launches
    after ``use``, the tree's again after ``use`` of it, and both give the same output; an arm's argument names its
    module and its launch settings."""
    import sys
    from pathlib import Path

    from specattn.gpu.kernels import sparse_attn as tree

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts" / "gpu"))
    import ab_kernel

    source = Path(tree.__file__).read_text()
    assert source.count("MERGE_ROWS = 1 ") == 1
    path = tmp_path / "other_sparse_attn.py"
    path.write_text(source.replace("MERGE_ROWS = 1 ", "MERGE_ROWS = 2 "))
    other = ab_kernel.load_base(str(path))
    assert other is not tree and other.MERGE_ROWS == 2
    launched = []
    for module in (other, tree):
        monkeypatch.setattr(module, "launch", lambda *a, _m=module, _f=module.launch, **k: (launched.append(_m),
                                                                                           _f(*a, **k))[1])
    q, k, v, lengths, lists = make_case(2, 4, 2, 5, 16, 60, 16, [60, 31], 0.7, 1, torch.float16, "cpu", 3)
    try:
        outs = []
        for module in (other, tree):
            ab_kernel.use(module)
            outs.append(sparse_verify(q, k, v, lengths, lists.ids, lists.n, 16, impl="triton",
                                      config=ab_kernel.CONFIG))
    finally:
        ab_kernel.use(tree)
        sys.modules.pop("specattn.gpu.kernels._ab_base", None)
    assert launched == [other, tree]
    assert torch.allclose(outs[0].float(), outs[1].float(), atol=2e-3, rtol=2e-3)
    module, config = ab_kernel.arm("@warps=1,ctas_per_sm=8,pdl=0", 1)  # the tree's module, its launch changed
    assert module is tree and config == dataclasses.replace(ab_kernel.CONFIG, warps=1, ctas_per_sm=8, pdl=False)
    try:
        module, config = ab_kernel.arm(f"{path}@block_n=64", 2)
        assert module.MERGE_ROWS == 2 and config.block_n == 64 and config.stages == ab_kernel.CONFIG.stages
    finally:
        sys.modules.pop("specattn.gpu.kernels._ab_base2", None)


@needs_interpreter
def test_the_cold_graph_rotates_over_sets_that_pass_the_l2(monkeypatch):
    """``profile_kernel.rotating_graph_us`` (the A/B's "cold" measure) captures its calls taking the input sets in turn,
    so a set is read again only after the others; ``cold_sets`` gives enough sets that the others read 256 MiB in
    between (five L2s), within 16 and the memory cap (one set where one set alone is over the cap); ``list_bytes``
    counts a selection's keys and values once per KV head that reads each list."""
    from pathlib import Path

    import specattn.bench.timing as timing

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts" / "gpu"))
    import profile_kernel as pk

    order = []

    def fake_graph_ms(fns, reps):  # runs the captured body once instead of capturing it
        assert len(fns) == 1 and reps == 15
        fns[0]()
        return 2.0

    monkeypatch.setattr(timing, "graph_ms", fake_graph_ms)
    assert pk.rotating_graph_us([lambda i=i: order.append(i) for i in range(3)]) == 2.0 * 1e3 / pk.CALLS
    assert order == [i % 3 for i in range(pk.CALLS)]
    order.clear()
    pk.graph_us(lambda: order.append("same"))
    assert order == ["same"] * pk.CALLS
    mb = 1 << 20
    assert pk.cold_sets(34 * mb, 268 * mb) == 1 + -(-256 // 34)  # Llama-3.1-8B batch 1, 25% kept: 9 sets
    assert pk.cold_sets(134 * mb, 1 << 30) == 3  # batch 4, 25%: two others read 268 MB
    assert pk.cold_sets(600 * mb, 4 << 30) == 2 and pk.cold_sets(600 * mb, 17 << 30) == 1  # the memory cap
    assert pk.cold_sets(8 << 10, 268 * mb) == 16 and pk.cold_sets(0, 1) == 16  # next to nothing read: the cap
    one = type("Lists", (), {"n": torch.tensor([[3], [5]]), "ids": torch.zeros(2, 1, 8)})  # a list a sequence
    assert pk.list_bytes(one, 8, 128, 16) == 8 * 8 * 16 * 128 * 2 * 2  # 8 chunks, each read by all 8 KV heads
    per_head = type("Lists", (), {"n": torch.tensor([[3, 1], [5, 0]]), "ids": torch.zeros(2, 2, 8)})
    assert pk.list_bytes(per_head, 8, 128, 16) == 9 * 4 * 16 * 128 * 2 * 2  # a list per 4 KV heads


@needs_interpreter
def test_list_kernels_interpreter():
    from specattn.gpu.kernels.chunk_list import lists_from_thresholds

    g = torch.Generator().manual_seed(5)
    for b, h, nc, density in [(1, 1, 1, 1.0), (2, 3, 300, 0.3), (1, 1, 50, 0.0)]:
        mask = torch.rand(b, h, nc, generator=g) < density
        lists = chunk_lists(mask, capacity=nc + 1, impl="triton")
        ids, counts = lists_reference(mask)
        assert lists.n.tolist() == counts
        assert all(lists.ids[i, j, : counts[i][j]].tolist() == ids[i][j] for i in range(b) for j in range(h))
    # thresholds -> OR over R rows -> mask + list
    r, nc = 3, 200
    cmax = torch.randint(0, 100, (2 * r, nc), generator=g, dtype=torch.int32)
    tkey = torch.randint(80, 101, (2 * r,), generator=g, dtype=torch.int32)
    want = (cmax >= tkey[:, None]).view(2, r, nc).any(1)
    ids, n = torch.zeros(2, nc, dtype=torch.int32), torch.zeros(2, dtype=torch.int32)
    mask = torch.zeros(2, nc + 5, dtype=torch.bool)
    lists_from_thresholds(cmax, tkey, r, ids, n, mask)
    assert torch.equal(mask[:, :nc], want) and not mask[:, nc:].any()
    assert n.tolist() == want.sum(1).tolist()
    assert all(ids[i, : n[i]].tolist() == want[i].nonzero().flatten().tolist() for i in range(2))


# -------------------------------------------------------------------------------------------- GPU
GPU_CASES = [  # (B, Hq, Hkv, T, D, K_cap, C, lengths, H_sel)
    (1, 32, 8, 5, 128, 4101, 16, [4101], 1),                      # Llama-3.1-8B, P divisible by C
    (1, 32, 8, 5, 128, 4104, 16, [4104], 8),                      # partial last chunk, per-KV-head lists
    (3, 32, 32, 5, 128, 3001, 16, [3001, 1234, 6], 1),            # Llama-2-7B (MHA), ragged, P = 1 key
    (4, 32, 8, 5, 128, 9000, 16, [9000, 17, 5, 4444], 8),         # ragged incl. empty prefix
    (2, 8, 1, 5, 64, 2000, 32, [2000, 1999], 1),                  # GQA 8:1, head_dim 64, chunk 32
    (2, 16, 16, 3, 64, 777, 16, [777, 500], 16),                  # MHA, head_dim 64, T = 3
    (1, 32, 8, 1, 128, 2049, 16, [2049], 1),                      # T = 1
    (1, 32, 8, 5, 128, 40005, 64, [40005], 1),                    # long, chunk 64
]


@needs_gpu
@pytest.mark.parametrize("b,hq,hkv,t,d,kcap,c,lengths,h_sel", GPU_CASES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_matches_reference_gpu(b, hq, hkv, t, d, kcap, c, lengths, h_sel, density, dtype):
    case = make_case(b, hq, hkv, t, d, kcap, c, lengths, density, h_sel, dtype, "cuda",
                     kcap + int(density * 100), junk_ids=density == 0.3)
    check_kernel_case(case, c, 1e-2)
    if density == 1.0:
        check_kernel_case(case, c, 1e-2, dense=True)


@needs_gpu
@pytest.mark.parametrize("block_n,warps,stages,ctas,min_chunks,tile,fused", [
    (128, 8, 2, 4, 4, 32, False), (32, 4, 1, 1, 64, 2, False), (16, 4, 2, 4, 1, 32, False), (64, 4, 3, 2, 8, 16, True),
    (128, 4, 2, 2, 16, 32, True), (16, 4, 2, 8, 1, 16, True)])
def test_kernel_configs_gpu(block_n, warps, stages, ctas, min_chunks, tile, fused):
    from specattn.gpu.kernels.split_config import SplitConfig

    cfg = SplitConfig(block_n, warps, stages, ctas, min_chunks, tile, fused)
    case = make_case(2, 32, 8, 5, 128, 20000, 16, [20000, 7777], 0.2, 8, torch.bfloat16, "cuda", 9)
    check_kernel_case(case, 16, 1e-2, config=cfg)
    check_kernel_case(case, 16, 1e-2, dense=True, config=cfg)


def redraw_in_place(lists, gen, i: int) -> None:
    """A fresh random selection written into ``lists`` (one list a sequence) in place, for a captured launch to replay:
    draw ``i`` keeps 5%, 27.5%, 50%, 72.5% or 95% of the chunks (``i % 5``)."""
    nc = lists.ids.shape[2]
    mask = torch.rand(lists.ids.shape[0], 1, nc, generator=gen, device=lists.ids.device) < 0.05 + 0.9 * (i % 5) / 4
    fresh = chunk_lists(mask, capacity=nc)
    lists.ids.copy_(fresh.ids)
    lists.n.copy_(fresh.n)


@needs_gpu
@pytest.mark.parametrize("t,hq,hkv", [(5, 32, 8), (1, 14, 2)])  # the verifier's step, the draft's one row
def test_fused_merge_replayed_in_a_cuda_graph_stays_exact_gpu(t, hq, hkv):
    """Many programs race for each list's last ticket (lists split over ~30 programs): 50 replays of a captured fused
    launch, the selection redrawn in place before each, every output equal to the two-launch kernel's to bfloat16
    rounding and the tickets zero after each."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    fused = SplitConfig(block_n=16, ctas_per_sm=8, min_chunks=1, fused_merge=True)
    q, k, v, lengths, lists = make_case(4, hq, hkv, t, 128, 8192, 16, [8192, 5000, 77, 8192], 0.3, 1, torch.bfloat16,
                                        "cuda", 5)
    ws = K.make_workspace(4, hkv, hq // hkv, t, 128, fused, "cuda")
    out = torch.empty(4, t, hq, 128, dtype=torch.bfloat16, device="cuda")
    launch = lambda: sparse_verify(q, k, v, lengths, lists.ids, lists.n, 16, out=out, workspace=ws,  # noqa: E731
                                   config=fused, impl="triton")
    launch()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launch()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i in range(50):
        redraw_in_place(lists, gen, i)
        graph.replay()
        torch.cuda.synchronize()
        assert ws.tickets.eq(0).all(), i
        two = sparse_verify(q, k, v, lengths, lists.ids, lists.n, 16, impl="triton",
                            config=dataclasses.replace(fused, fused_merge=False))
        assert torch.allclose(out.float(), two.float(), atol=2e-2, rtol=2e-2), i


@needs_gpu
@pytest.mark.parametrize("t,hq,hkv,dense,pdl,spread", [(5, 32, 8, False, True, 2), (5, 12, 2, False, False, 2),
                                                       (1, 14, 2, True, True, 2), (5, 32, 8, False, True, 8)])
def test_dynamic_ranges_replayed_in_a_cuda_graph_stay_exact_gpu(t, hq, hkv, dense, pdl, spread):
    """Hundreds of split programs race for the dynamic ranges (``steal``: half the units taken at run time): the
    launch matches the reference, and in 30 replays of a captured launch with the selection and queries redrawn in
    place every output equals the static split's to bfloat16 rounding (other partial boundaries) and the count of
    ranges taken is back at zero after each (the merge resets it, launched as the split's dependent or after it)."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    cfg = SplitConfig(block_n=16, ctas_per_sm=4, min_chunks=1, steal=50, pdl=pdl, steal_ranges=spread)
    case = make_case(4, hq, hkv, t, 128, 8192, 16, [8192, 5000, 77, 8192], 0.3, 1, torch.bfloat16, "cuda", 11)
    check_kernel_case(case, 16, 1e-2, config=cfg, dense=dense)
    q, k, v, lengths, lists = case
    ws = K.make_workspace(4, hkv, hq // hkv, t, 128, cfg, "cuda")
    out = torch.empty(4, t, hq, 128, dtype=torch.bfloat16, device="cuda")

    def run(config, o, workspace=None):
        if dense:
            return dense_verify(q, k, v, lengths, 16, out=o, workspace=workspace, config=config, impl="triton")
        return sparse_verify(q, k, v, lengths, lists.ids, lists.n, 16, out=o, workspace=workspace, config=config,
                             impl="triton")

    run(cfg, out, ws)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run(cfg, out, ws)
    gen = torch.Generator(device="cuda").manual_seed(1)
    for i in range(30):
        redraw_in_place(lists, gen, i)
        q.copy_(torch.randn(q.shape, generator=gen, device="cuda").bfloat16())
        graph.replay()
        torch.cuda.synchronize()
        assert ws.cursor.tolist() == [0], i
        static = run(dataclasses.replace(cfg, steal=0), torch.empty_like(out))
        assert torch.allclose(out.float(), static.float(), atol=2e-2, rtol=2e-2), i


@needs_gpu
@pytest.mark.parametrize("t,hq,hkv,dense", [(5, 32, 8, False), (5, 12, 2, False), (1, 14, 2, True)])
def test_merge_as_the_splits_dependent_launch_equals_the_serial_launch_gpu(t, hq, hkv, dense):
    """The merge launched as the split kernel's programmatic dependent (``pdl``: its programs attend the own keys while
    the split runs, then wait for its partials) gives the serial launch's outputs and taps bit for bit: eager, and in
    30 replays of a captured launch with the selection redrawn in place (lists over many programs, one of 77 keys)."""
    from specattn.gpu.kernels import sparse_attn as K
    from specattn.gpu.kernels.split_config import SplitConfig

    if not K.pdl_supported("cuda"):
        pytest.skip("programmatic dependent launch needs sm_90 or later")
    cfg = SplitConfig(block_n=16, ctas_per_sm=4, min_chunks=1, pdl=True)
    serial = dataclasses.replace(cfg, pdl=False)
    q, k, v, lengths, lists = make_case(4, hq, hkv, t, 128, 8192, 16, [8192, 5000, 77, 8192], 0.3, 1, torch.bfloat16,
                                        "cuda", 7)
    ws = K.make_workspace(4, hkv, hq // hkv, t, 128, cfg, "cuda")
    out = torch.empty(4, t, hq, 128, dtype=torch.bfloat16, device="cuda")
    lse, q_last = torch.empty(4, hq, device="cuda"), torch.empty(4, hq, 128, dtype=torch.bfloat16, device="cuda")

    def run(config, o, l, ql):
        if dense:
            return dense_verify(q, k, v, lengths, 16, out=o, workspace=ws, config=config, impl="triton", lse_out=l,
                                q_out=ql)
        return sparse_verify(q, k, v, lengths, lists.ids, lists.n, 16, out=o, workspace=ws, config=config,
                             impl="triton", lse_out=l, q_out=ql)

    def check(i):
        o2, l2, q2 = torch.empty_like(out), torch.empty_like(lse), torch.empty_like(q_last)
        run(serial, o2, l2, q2)
        assert torch.equal(out, o2) and torch.equal(lse, l2) and torch.equal(q_last, q2), i

    run(cfg, out, lse, q_last)
    check(-1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run(cfg, out, lse, q_last)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i in range(30):
        redraw_in_place(lists, gen, i)
        q.copy_(torch.randn(q.shape, generator=gen, device="cuda").bfloat16())  # fresh own-key scores each replay
        graph.replay()
        check(i)


@needs_gpu
@pytest.mark.parametrize("t,hq,hkv,d,n,c", [(5, 32, 8, 128, 4099, 16), (3, 32, 32, 128, 777, 16),
                                            (5, 32, 8, 128, 17, 16), (1, 8, 2, 64, 1000, 32)])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_triton_backend_matches_reference_gpu(t, hq, hkv, d, n, c, density):
    g = torch.Generator(device="cuda").manual_seed(n + t)
    q, k, v = (torch.randn(s, generator=g, device="cuda").bfloat16() for s in [(t, hq, d), (n, hkv, d), (n, hkv, d)])
    mask = torch.rand(n_prefix_chunks(n, t, c), generator=g, device="cuda") < density
    attn = make_backend("triton", AttentionShape(hq, hkv, d, c, torch.bfloat16))
    attn.plan(mask, n, t)
    out = attn.run(q, k, v)
    ref = gathered_attention(q.double(), k.double(), v.double(), mask, c, 1 / math.sqrt(d), torch.float64)
    assert out.shape == (t, hq, d) and rel_err(out, ref) < 1e-2


@needs_gpu
def test_lists_gpu_match_reference():
    g = torch.Generator(device="cuda").manual_seed(3)
    for b, h, nc, density in [(1, 1, 1, 1.0), (4, 8, 8192, 0.1), (2, 1, 20000, 0.5), (3, 2, 7, 0.0)]:
        mask = torch.rand(b, h, nc, generator=g, device="cuda") < density
        lists = chunk_lists(mask, capacity=nc + 16)
        ids, counts = lists_reference(mask.cpu())
        assert lists.n.cpu().tolist() == counts
        got = lists.ids.cpu()
        assert all(got[i, j, : counts[i][j]].tolist() == ids[i][j] for i in range(b) for j in range(h))
