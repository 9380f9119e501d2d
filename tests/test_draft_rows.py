"""The decoder's draft rows (specattn.gpu.draft_rows) and the attention kernel's log-sum-exp output.

Both are checked against float64 references built from scratch (softmax over the keys a row attends,
then the head mean / max of specattn.core.heads.aggregate_heads), on the CPU, on the Triton interpreter and
on the GPU, on adversarial shapes: rows that attend one key, partial key blocks, ragged batches,
one draft row per step, MHA and GQA drafts.
"""

from __future__ import annotations

import math

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.core.heads import aggregate_heads
from specattn.gpu.attention.sparse import (
    chunk_lists,
    dense_verify,
    sparse_verify,
    sparse_verify_torch,
)
from specattn.gpu.draft_rows import draft_rows, draft_rows_torch, rows_from_scores
from specattn.gpu.kernels.rows_config import RowsConfig

from .availability import HAS_CUDA, HAS_TRITON, needs_gpu, needs_interpreter

CASES = [  # (S, NL, B, Hq, Hkv, R, D, cap, W, first)
    (1, 1, 1, 4, 2, 1, 16, 8, 8, [1]),                  # one row attending one key
    (2, 3, 3, 4, 1, 3, 16, 150, 147, [100, 1, 70]),     # ragged, GQA 4:1, W not a multiple of the block
    (3, 4, 2, 2, 2, 4, 32, 90, 90, [86, 5]),            # MHA draft, rows up to the cache's end
    (1, 2, 2, 8, 2, 2, 64, 300, 296, [200, 295]),       # TinyLlama-like group of 4 x 2 rows, D = 64
]


def make_case(s, nl, b, hq, hkv, r, d, cap, w, first, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(s, b, hq, r, d, generator=g).to(dtype)
    keys = torch.randn(nl, b, hkv, cap, d, generator=g).to(dtype)
    layers = torch.randperm(nl, generator=g)[:s].to(torch.int32)
    first = torch.tensor(first, dtype=torch.int32)
    return [x.to(device) for x in (q, keys, layers, first)], w


def reference(q, keys, layers, first, w, scale, agg):
    """float64: per row the softmax over keys [0, first + r), aggregated over heads -> (S, B, R, W) and lse."""
    s, b, hq, r, d = q.shape
    out = torch.zeros(s, b, r, w, dtype=torch.float64)
    lse = torch.zeros(s, b, hq, r, dtype=torch.float32)
    q, keys = q.double().cpu(), keys.double().cpu()
    for i in range(s):
        k = keys[int(layers[i])].repeat_interleave(hq // keys.shape[2], dim=1)  # (B, Hq, cap, D)
        for j in range(b):
            for row in range(r):
                n = int(first[j]) + row
                scores = torch.einsum("hd,hnd->hn", q[i, j, :, row], k[j, :, :n]) * scale
                lse[i, j, :, row] = (torch.logsumexp(scores, -1) / math.log(2)).float()
                probs = torch.softmax(scores, -1)[:, None]  # (Hq, 1, n)
                out[i, j, row, :n] = aggregate_heads(probs, agg, 1, 1)[0, 0]
    return out, lse


def check(case, dtype, device, agg, impl, tol, seed=0, config=None):
    (q, keys, layers, first), w = make_case(*case, dtype, device, seed)
    scale = 1 / math.sqrt(q.shape[-1])
    want, lse = reference(q, keys, layers, first, w, scale, agg)
    out = torch.full((q.shape[0], q.shape[1], q.shape[3], w), float("nan"), device=device)  # poisoned
    draft_rows(q, lse.to(device), keys, layers, first, out, scale, agg, impl=impl, config=config)
    assert not out.isnan().any(), "an element of the rows was not written"
    err = (out.double().cpu() - want).abs().max().item()
    assert err < tol * want.abs().max().item(), err
    past = torch.arange(w) >= (first.cpu()[:, None] + torch.arange(q.shape[3]))[..., None]  # (B, R, W)
    assert out.cpu()[:, past].eq(0).all(), "weights past a row's keys must be exactly 0"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("agg", ["mean", "max"])
def test_torch_rows_match_reference(case, agg):
    check(case, torch.float64, "cpu", agg, "torch", 1e-6)  # the lse is float32
    check(case, torch.float32, "cpu", agg, "torch", 1e-5, seed=1)


def test_rows_refuse_bad_input():
    (q, keys, layers, first), w = make_case(*CASES[1], torch.float32, "cpu", 0)
    lse = torch.zeros(q.shape[:4])
    out = torch.zeros(q.shape[0], q.shape[1], q.shape[3], w)
    with pytest.raises(SpecAttnError, match="head_agg='kv_group'"):
        draft_rows(q, lse, keys, layers, first, out, 1.0, "kv_group")
    with pytest.raises(SpecAttnError, match="lse must be"):
        draft_rows(q, lse[..., :1], keys, layers, first, out, 1.0)
    with pytest.raises(SpecAttnError, match="out must be"):
        draft_rows(q, lse, keys, layers, first, torch.zeros(*out.shape[:3], keys.shape[3] + 1), 1.0)
    with pytest.raises(SpecAttnError, match="int32"):
        draft_rows(q, lse, keys, layers.long(), first, out, 1.0)


def lse_case(b, hq, hkv, t, d, kcap, lengths, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, t, d, generator=g).to(dtype)
    k, v = (torch.randn(b, hkv, kcap, d, generator=g).to(dtype) for _ in range(2))
    mask = torch.rand(b, 1, -(-kcap // 16), generator=g) < 0.4
    return [x.to(device) for x in (q, k, v, torch.tensor(lengths, dtype=torch.int32), mask)]


def check_lse(b, hq, hkv, t, d, kcap, lengths, dtype, device, tol):
    q, k, v, lengths_t, mask = lse_case(b, hq, hkv, t, d, kcap, lengths, dtype, device, 3)
    lists = chunk_lists(mask, impl="torch")
    scale = 1 / math.sqrt(d)
    for sparse in (False, True):
        want = torch.zeros(b, hq)
        ids = lists.ids if sparse else torch.arange(mask.shape[-1], dtype=torch.int32).expand(b, 1, -1).contiguous()
        n = lists.n if sparse else torch.full((b, 1), mask.shape[-1], dtype=torch.int32)
        ref = sparse_verify_torch(q.double().cpu(), k.double().cpu(), v.double().cpu(), lengths_t.cpu(), ids.cpu(),
                                  n.cpu(), 16, scale, lse_out=want)
        got = torch.full((b, hq, 2), float("nan"), device=device)[..., 0]  # a strided view, poisoned
        if sparse:
            out = sparse_verify(q, k, v, lengths_t, lists.ids.to(device), lists.n.to(device), 16, scale, lse_out=got)
        else:
            out = dense_verify(q, k, v, lengths_t, 16, scale, lse_out=got)
        assert (got.cpu() - want).abs().max().item() < tol, sparse
        assert ((out.double().cpu() - ref).norm() / ref.norm()).item() < 10 * tol


@pytest.mark.parametrize("t", [1, 2, 5])
def test_lse_output_of_the_torch_path(t):
    check_lse(2, 4, 2, t, 16, 70, [70, t + 1], torch.float32, "cpu", 1e-5)


@needs_interpreter
@pytest.mark.parametrize("case", CASES)
def test_rows_kernel_interpreter(case):
    """float16 only: Triton 3.6's interpreter computes bfloat16 tl.dot wrongly."""
    for agg in ("mean", "max"):
        check(case, torch.float16, "cpu", agg, "triton", 2e-2)


@needs_interpreter
@pytest.mark.parametrize("config", [(16, 3, 4, 2), (32, 2, 4, 1), (64, 4, 4, 3)])
def test_rows_kernel_block_loop_interpreter(config):
    """Programs walking several key blocks (the profiled launches): W = 147 and 296 end inside a program's last
    block, and a program whose blocks all lie past W writes nothing."""
    for case in (CASES[1], CASES[3]):
        check(case, torch.float16, "cpu", "mean", "triton", 2e-2, config=RowsConfig(*config))
    check(CASES[0], torch.float16, "cpu", "max", "triton", 2e-2, config=RowsConfig(*config))


def test_rows_config_refuses_bad_launches_and_defaults_by_kv_heads():
    from specattn.gpu.kernels.rows_config import ONE_BLOCK, PIPELINED, default_rows_config

    assert default_rows_config(2) == PIPELINED != ONE_BLOCK == default_rows_config(8) == RowsConfig()
    assert default_rows_config(2, masked=True) == ONE_BLOCK == default_rows_config(8, masked=True)
    for bad in [(48, 1, 4, 1), (8, 1, 4, 1), (64, 0, 4, 1)]:
        with pytest.raises(ValueError, match="power of two"):
            RowsConfig(*bad)


@needs_interpreter
@pytest.mark.parametrize("t,lengths", [(1, [40, 1]), (2, [40, 19])])
def test_lse_output_of_the_kernel_interpreter(t, lengths):
    check_lse(2, 4, 2, t, 16, 40, lengths, torch.float16, "cpu", 2e-2)


GPU_CASES = CASES + [
    (21, 22, 4, 32, 4, 4, 64, 4200, 4160, [4097, 1, 2000, 4150]),    # TinyLlama: 21 needed layers, batch 4
    (15, 16, 1, 32, 8, 4, 64, 33000, 32800, [32769]),                 # Llama-3.2-1B at 32K
    (2, 2, 3, 32, 8, 1, 64, 1000, 999, [999, 3, 500]),               # gamma = 1
]


@needs_gpu
@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rows_kernel_gpu(case, dtype):
    check(case, dtype, "cuda", "mean", "triton", 2e-2)
    if case[2] * case[0] < 40:
        check(case, dtype, "cuda", "max", "triton", 2e-2, seed=1)


@needs_gpu
@pytest.mark.parametrize("t,lengths", [(1, [4000, 1, 77]), (2, [4000, 2, 2500]), (5, [3000, 5, 4100])])
def test_lse_output_of_the_kernel_gpu(t, lengths):
    check_lse(3, 32, 8, t, 64, 4100, lengths, torch.bfloat16, "cuda", 2e-2)
    check_lse(3, 32, 32, t, 128, 4100, lengths, torch.bfloat16, "cuda", 2e-2)


def test_kernel_is_used_only_where_it_runs():
    if HAS_TRITON and HAS_CUDA:
        pytest.skip("covered by the GPU tests")
    (q, keys, layers, first), w = make_case(*CASES[0], torch.float32, "cpu", 0)
    out = torch.zeros(q.shape[0], q.shape[1], q.shape[3], w)
    lse = torch.zeros(q.shape[:4])
    assert draft_rows(q, lse, keys, layers, first, out, 1.0) is out  # the torch path, no error
    assert torch.equal(out, draft_rows_torch(q, lse, keys, layers, first, out.clone(), 1.0))


# ------------------------------------------------------------------------------- a row from its saved scores
def check_scores_path(b, hq, hkv, t, d, kcap, lengths, dtype, device, tol, seed=5, config=None):
    """The decoder's first_* row 0: ``dense_verify``'s ``scores_out`` (the last row's scaled scores, float64
    reference at every key it attends, untouched past them, the attention output unchanged) and ``lse_out`` give
    through :func:`rows_from_scores` the rows :func:`draft_rows` computes from the keys (R = 1), mean and max
    (``config``: the attention kernel's launch, e.g. the one-launch merge, which writes the own keys' scores)."""
    q, k, v, lengths_t, _ = lse_case(b, hq, hkv, t, d, kcap, lengths, dtype, device, seed)
    scale = 1 / math.sqrt(d)
    scores = torch.full((b, hq, kcap + 3), float("nan"), device=device)  # poisoned, wider than the cache
    lse = torch.zeros(b, hq, device=device)
    out = dense_verify(q, k, v, lengths_t, 16, scale, lse_out=lse, scores_out=scores, config=config)
    assert torch.equal(out, dense_verify(q, k, v, lengths_t, 16, scale, config=config))
    keys = k.double().cpu().repeat_interleave(hq // hkv, dim=1)
    want = torch.einsum("bhd,bhkd->bhk", q[:, :, -1].double().cpu(), keys) * scale / math.log(2)
    seen = (torch.arange(kcap + 3) < torch.tensor(lengths)[:, None])[:, None].expand(b, hq, kcap + 3)
    got = scores.cpu()
    assert got[~seen].isnan().all(), "scores past the keys the row attends must be left alone"
    assert (got[..., :kcap] - want).abs()[seen[..., :kcap]].max() < tol * want.abs().max()
    first, w = lengths_t.to(torch.int32), kcap - 1
    for agg in ("mean", "max"):
        rows = torch.full((1, b, w), float("nan"), device=device)
        rows_from_scores(scores[None], lse[None], first, rows, agg)
        ref = torch.zeros(1, b, 1, w, device=device)
        draft_rows(q[:, :, -1:][None], lse[None, :, :, None], k[None], torch.zeros(1, dtype=torch.int32, device=device),
                   first, ref, scale, agg)
        assert not rows.isnan().any()
        assert (rows - ref[:, :, 0]).abs().max() < tol * ref.abs().max(), agg
        assert rows.cpu()[0][torch.arange(w) >= first.cpu()[:, None]].eq(0).all()


@pytest.mark.parametrize("t,lengths", [(1, [40, 1]), (2, [40, 19]), (5, [33, 5])])
def test_a_row_from_saved_scores_equals_the_recomputed_row(t, lengths):
    check_scores_path(2, 4, 2, t, 16, 40, lengths, torch.float32, "cpu", 1e-5)


@needs_interpreter
@pytest.mark.parametrize("t,lengths", [(1, [40, 1]), (2, [40, 19])])
def test_a_row_from_saved_scores_kernels_interpreter(t, lengths):
    from specattn.gpu.kernels.split_config import SplitConfig

    check_scores_path(2, 4, 2, t, 16, 40, lengths, torch.float16, "cpu", 2e-2)
    check_scores_path(2, 4, 2, t, 16, 40, lengths, torch.float16, "cpu", 2e-2, config=SplitConfig(fused_merge=True))


@needs_gpu
@pytest.mark.parametrize("t,lengths", [(1, [4000, 1, 77]), (2, [4000, 2, 2500])])
def test_a_row_from_saved_scores_kernels_gpu(t, lengths):
    from specattn.gpu.kernels.split_config import SplitConfig

    check_scores_path(3, 14, 2, t, 64, 4100, lengths, torch.bfloat16, "cuda", 2e-2)
    check_scores_path(3, 32, 8, t, 64, 4100, lengths, torch.bfloat16, "cuda", 2e-2, seed=6)
    fused = SplitConfig(fused_merge=True)
    check_scores_path(3, 14, 2, t, 64, 4100, lengths, torch.bfloat16, "cuda", 2e-2, config=fused)


def test_rows_from_scores_refuses_bad_input():
    scores, lse, first = torch.zeros(1, 2, 4, 10), torch.zeros(1, 2, 4), torch.tensor([3, 10], dtype=torch.int32)
    with pytest.raises(SpecAttnError, match="out must be"):
        rows_from_scores(scores, lse, first, torch.zeros(1, 2, 11))
    with pytest.raises(SpecAttnError, match="lse must be"):
        rows_from_scores(scores, lse[..., :1], first, torch.zeros(1, 2, 10))
    with pytest.raises(SpecAttnError, match="scores must be"):
        rows_from_scores(scores.double(), lse, first, torch.zeros(1, 2, 10))
    with pytest.raises(SpecAttnError, match="scores_out must be"):
        q, k = torch.zeros(2, 4, 1, 16), torch.zeros(2, 2, 10, 16)
        dense_verify(q, k, k, torch.tensor([10, 3], dtype=torch.int32), scores_out=torch.zeros(2, 4, 9))


# ------------------------------------------------------------------------------------- fused RMSNorm
def rmsnorm_case(dtype, device, rows=7, h=96):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(4)
    norm = LlamaRMSNorm(h, eps=1e-5)
    norm.weight.data = 1 + torch.randn(h, generator=g)
    norm = norm.to(device=device, dtype=dtype)
    x = (3 * torch.randn(2, rows, h, generator=g)).to(device=device, dtype=dtype)
    return norm, x


def test_fused_rmsnorm_replaces_hf_modules_and_matches_them_on_the_cpu():
    from transformers import LlamaConfig, LlamaForCausalLM

    from specattn.gpu.rmsnorm import FusedRMSNorm, fuse_rmsnorms

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=50)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        want = model(ids).logits
        assert fuse_rmsnorms(model) == 2 * 2 + 1
        assert isinstance(model.model.norm, FusedRMSNorm) and model.model.norm.weight is model.model.norm.weight
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=0)


@needs_interpreter
def test_fused_rmsnorm_kernel_interpreter():
    from specattn.gpu.kernels.rmsnorm import rmsnorm

    norm, x = rmsnorm_case(torch.float16, "cpu")
    got = rmsnorm(x, norm.weight, norm.variance_epsilon)
    assert (got.float() - norm(x).float()).abs().max().item() <= 2e-2 * norm(x).float().abs().max().item()


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("h", [64, 2048, 4096, 4000])
def test_fused_rmsnorm_kernel_gpu(dtype, h):
    from specattn.gpu.rmsnorm import FusedRMSNorm

    norm, x = rmsnorm_case(dtype, "cuda", rows=5, h=h)
    want = norm(x)
    got = FusedRMSNorm(norm.weight, norm.variance_epsilon)(x)
    mismatch = (got != want).float().mean().item()  # same arithmetic; only the sum's order differs
    assert mismatch < 0.01 and (got.float() - want.float()).abs().max().item() <= 0.02 * want.float().abs().max().item()


def masked_reference(want, reads, rows, width):
    """The rows a policy leaves (the decoder's former second pass, written independently of RowReads.kept): per
    slot, sequence and row the read chunks, the chunks of the forward's own keys [P, P + r) (whole chunks), the
    keys from the row's tail on, everything for the dense rows and for slots outside the policy."""
    c, lo = reads.chunk_size, reads.lo.long().cpu()
    kept = torch.zeros(want.shape, dtype=torch.bool)
    for s in range(want.shape[0]):
        for b in range(want.shape[1]):
            for r in range(rows):
                base = reads.chunks[min(s, reads.chunks.shape[0] - 1), b].cpu()
                chunks = base.clone()
                start = torch.arange(len(chunks)) * c
                chunks |= (start < lo[b] + r) & (start + c > lo[b])
                keys = chunks.repeat_interleave(c)[:width]
                keys |= torch.arange(width) >= (lo[b] - 1 if r == 0 else lo[b] + r)
                if r < reads.dense_rows or not reads.policy[s]:
                    keys[:] = True
                kept[s, b, r] = keys
    return want * kept


def reads_case(case, device, dense_rows, per_slot, seed):
    from specattn.gpu.draft_rows import RowReads

    s, _, b, _, _, r, _, cap, w, first = case
    c = 8
    g = torch.Generator().manual_seed(seed)
    chunks = torch.rand((s if per_slot else 1, b, -(-cap // c)), generator=g) < 0.3
    policy = torch.rand(s, generator=g) < 0.7
    lo = torch.tensor(first, dtype=torch.int32) - 1  # the decoder's first = P + 1
    return RowReads(chunks.to(device), lo.to(device), policy.to(device), c, dense_rows)


@pytest.mark.parametrize("case", CASES[1:])
@pytest.mark.parametrize("dense_rows,per_slot", [(0, True), (1, False), (0, False)])
def test_rows_zeroed_where_a_policy_forward_did_not_read(case, dense_rows, per_slot):
    (q, keys, layers, first), w = make_case(*case, torch.float32, "cpu", 2)
    reads = reads_case(case, "cpu", dense_rows, per_slot, 3)
    scale = 1 / math.sqrt(q.shape[-1])
    want, lse = reference(q, keys, layers, first, w, scale, "mean")
    out = torch.full((q.shape[0], q.shape[1], q.shape[3], w), float("nan"))
    draft_rows(q, lse, keys, layers, first, out, scale, "mean", impl="torch", reads=reads)
    want = masked_reference(want, reads, q.shape[3], w)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-7)
    assert out[want == 0].eq(0).all()


def check_masked_kernel(case, dtype, device, agg, config):
    (q, keys, layers, first), w = make_case(*case, dtype, device, 4)
    reads = reads_case(case, device, int(agg == "max"), agg == "mean", 5)
    scale = 1 / math.sqrt(q.shape[-1])
    want, lse = reference(q, keys, layers, first, w, scale, agg)
    out = torch.full((q.shape[0], q.shape[1], q.shape[3], w), float("nan"), device=device)
    draft_rows(q, lse.to(device), keys, layers, first, out, scale, agg, impl="triton", reads=reads, config=config)
    want = masked_reference(want, reads, q.shape[3], w)
    out = out.cpu()
    assert ((out.double() - want).abs().max() < 2e-2 * want.abs().max()).item()
    assert out[want == 0].eq(0).all(), "a key the row's forward did not read must be exactly 0"


@needs_interpreter
@pytest.mark.parametrize("case", CASES[1:])
@pytest.mark.parametrize("agg", ["mean", "max"])
def test_rows_kernel_zeroes_what_a_policy_forward_did_not_read_interpreter(case, agg):
    check_masked_kernel(case, torch.float16, "cpu", agg, RowsConfig(16, 2, 4, 2))


@needs_gpu
@pytest.mark.parametrize("case", GPU_CASES[1:])
@pytest.mark.parametrize("config", [None, RowsConfig(), RowsConfig(128, 2, 4, 2)])
def test_rows_kernel_zeroes_what_a_policy_forward_did_not_read_gpu(case, config):
    for agg in ("mean", "max"):
        check_masked_kernel(case, torch.bfloat16, "cuda", agg, config)


@needs_gpu
def test_torch_rows_under_a_read_policy_replay_from_a_cuda_graph_gpu():
    """The torch path (float32 on the GPU: the graph decoder's rows in float32) under a draft read policy is
    CUDA-graph capturable and its replay equals the eager call. (Found by the tiny end-to-end decode_real run on an
    H100: the read mask was built by boolean-mask indexing, a host synchronisation, and capture failed.)"""
    case = CASES[1]
    (q, keys, layers, first), w = make_case(*case, torch.float32, "cuda", 2)
    reads = reads_case(case, "cuda", 1, False, 3)
    scale = 1 / math.sqrt(q.shape[-1])
    lse = reference(q, keys, layers, first, w, scale, "mean")[1].to("cuda")
    eager = torch.full((q.shape[0], q.shape[1], q.shape[3], w), float("nan"), device="cuda")
    draft_rows(q, lse, keys, layers, first, eager, scale, "mean", impl="torch", reads=reads)
    replayed = torch.full_like(eager, float("nan"))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch.cuda.graph asks
        draft_rows(q, lse, keys, layers, first, replayed, scale, "mean", impl="torch", reads=reads)
    torch.cuda.current_stream().wait_stream(side)
    replayed.fill_(float("nan"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        draft_rows(q, lse, keys, layers, first, replayed, scale, "mean", impl="torch", reads=reads)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(replayed, eager) and (eager == 0).any()


def check_rows_from_row_one(case, dtype, device, agg, impl, config=None):
    """A launch of rows 1.. (``row0=1``, ``first`` advanced by one) equals the whole launch's rows 1.. (zero at the
    same keys, values to float32 rounding): how the ``first_*`` policies split a step's rows between the draft phase (row 0) and the verify phase."""
    import dataclasses

    (q, keys, layers, first), w = make_case(*case, dtype, device, 6)
    for dense_rows, per_slot in ((1, False), (0, True)):
        reads = reads_case(case, device, dense_rows, per_slot, 7)
        scale = 1 / math.sqrt(q.shape[-1])
        lse = reference(q, keys, layers, first, w, scale, agg)[1].to(device)
        whole = torch.full((q.shape[0], q.shape[1], q.shape[3], w), float("nan"), device=device)
        draft_rows(q, lse, keys, layers, first, whole, scale, agg, impl=impl, reads=reads, config=config)
        part = torch.full_like(whole, float("nan"))
        draft_rows(q[:, :, :, 1:], lse[..., 1:], keys, layers, first + 1, part[:, :, 1:], scale, agg, impl=impl,
                   reads=dataclasses.replace(reads, row0=1), config=config)
        assert part[:, :, 0].isnan().all(), "row 0 is not the launch's"
        assert torch.equal(part[:, :, 1:] == 0, whole[:, :, 1:] == 0)
        torch.testing.assert_close(part[:, :, 1:], whole[:, :, 1:], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", [c for c in CASES[1:] if c[5] > 1])
@pytest.mark.parametrize("agg", ["mean", "max"])
def test_rows_from_row_one_equal_the_whole_launch(case, agg):
    check_rows_from_row_one(case, torch.float32, "cpu", agg, "torch")


@needs_interpreter
@pytest.mark.parametrize("case", [c for c in CASES[1:] if c[5] > 1])
def test_rows_kernel_from_row_one_interpreter(case):
    check_rows_from_row_one(case, torch.float16, "cpu", "mean", "triton", RowsConfig(16, 2, 4, 2))


@needs_gpu
@pytest.mark.parametrize("case", [c for c in GPU_CASES[1:] if c[5] > 1])
@pytest.mark.parametrize("agg", ["mean", "max"])
def test_rows_kernel_from_row_one_gpu(case, agg):
    check_rows_from_row_one(case, torch.bfloat16, "cuda", agg, "triton")


def test_row_reads_refuse_bad_shapes():
    from specattn.gpu.draft_rows import RowReads

    (q, keys, layers, first), w = make_case(*CASES[1], torch.float32, "cpu", 0)
    lse = torch.zeros(q.shape[:4])
    out = torch.zeros(q.shape[0], q.shape[1], q.shape[3], w)
    good = reads_case(CASES[1], "cpu", 0, True, 0)
    for bad in (RowReads(good.chunks[:, :1], good.lo, good.policy, 8),
                RowReads(good.chunks, good.lo, good.policy, 8, 2),
                RowReads(good.chunks.int(), good.lo, good.policy, 8), RowReads(good.chunks, good.lo, good.policy, 8,
                                                                                row0=-1)):
        with pytest.raises(SpecAttnError, match="reads must hold"):
            draft_rows(q, lse, keys, layers, first, out, 1.0, reads=bad)
