"""Projections with the layer's next kernel in their epilogue (specattn/gpu/kernels/projection_epilogues.py). The q/k/v
projection with the rotary and the cache write: q and the written cache slots against a float64 reference of the
projection, the folded norm's row scale, the bias and the rotation, every other cache slot untouched (one and two
tokens a sequence, ragged cache lengths, head sizes 64 and 128). The gate/up projection with the SiLU-mul against a
float64 reference (widths no multiple of the block, 1-32 rows, with and without the folded norm). Both in one K range
and in several (empty ones among them; the tile's tickets back at zero after a launch, a second launch on the same
workspace bit-identical). Both agree with the two launches they replace; the fused attention takes the q/k/v one only
up to its row limit, at the hook's config and split; shapes, splits and workspaces they cannot take refused."""

from __future__ import annotations

import pytest
import torch

from .availability import needs_gpu, needs_interpreter

SENTINEL = 7.0


def _case(b, t, hq, hkv, d, k, fold, bias, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((b, t, k), generator=gen) * 2
    w = torch.randn(((hq + 2 * hkv) * d, k), generator=gen) / k ** 0.5
    bs = torch.randn(((hq + 2 * hkv) * d,), generator=gen) if bias else None
    angle = torch.rand((b, t, d // 2), generator=gen) * 6.3
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    lengths = torch.randint(0, 20, (b,), generator=gen, dtype=torch.int32)
    cap = 24
    qkv = x.double().reshape(b * t, k) @ w.double().T
    if fold:
        qkv = qkv * torch.rsqrt(x.double().reshape(b * t, k).pow(2).mean(-1, keepdim=True) + 1e-6)
    if bias:
        qkv = qkv + bs.double()
    heads = qkv.view(b, t, hq + 2 * hkv, d).transpose(1, 2)  # (B, H, T, D)
    half = d // 2

    def rotate(z):
        c, s = cos.double()[:, None], sin.double()[:, None]
        z1, z2 = z[..., :half], z[..., half:]
        return torch.cat([z1 * c[..., :half] - z2 * s[..., :half], z2 * c[..., half:] + z1 * s[..., half:]], -1)

    q_ref, k_ref, v_ref = rotate(heads[:, :hq]), rotate(heads[:, hq:hq + hkv]), heads[:, hq + hkv:]
    keys = torch.full((b, hkv, cap, d), SENTINEL)
    values = torch.full((b, hkv, cap, d), SENTINEL)
    cast = lambda z: z.to(dtype).to(device)  # noqa: E731
    return (cast(x), cast(w), None if bs is None else cast(bs), cast(cos), cast(sin), lengths.to(device), cast(keys),
            cast(values), (q_ref, k_ref, v_ref), lengths)


CASES = [  # (B, T, Hq, Hkv, D, K, fold, bias): the draft's one and two tokens, a 128-wide head, no norm or bias
    (4, 1, 6, 2, 64, 96, True, True),
    (3, 2, 4, 1, 64, 80, True, False),
    (2, 1, 2, 2, 128, 64, False, True),
    (1, 2, 2, 1, 64, 48, False, False),
]


def _check(device, dtype, tol, configs):
    from specattn.gpu.kernels.fused_llama import rope_into_cache
    from specattn.gpu.kernels.projection_epilogues import qkv_rope_into_cache, qkv_rope_workspace

    for b, t, hq, hkv, d, k, fold, bias in CASES:
        for config, split in configs:
            x, w, bs, cos, sin, lengths, keys, values, (q_ref, k_ref, v_ref), host_len = _case(
                b, t, hq, hkv, d, k, fold, bias, dtype, device)
            work = qkv_rope_workspace(b * t, hq, hkv, d, split, config, device) if split > 1 else None

            def launch():
                return qkv_rope_into_cache(x, w, cos, sin, lengths, hq, hkv, keys, values, 1e-6 if fold else None, bs,
                                           config=config, split_k=split, workspace=work)

            q = launch()
            assert q.shape == (b, hq, t, d)
            if work is not None:  # the tickets left at zero: a second launch on the workspace sums the same parts
                assert (work.tickets == 0).all()
                assert torch.equal(launch(), q)
            assert (q.double().cpu() - q_ref).abs().max().item() <= tol, (b, t, d, config)
            written = torch.zeros(keys.shape[:3], dtype=torch.bool)
            for i in range(b):
                s = int(host_len[i])
                written[i, :, s:s + t] = True
                assert (keys[i, :, s:s + t].double().cpu() - k_ref[i]).abs().max().item() <= tol
                assert (values[i, :, s:s + t].double().cpu() - v_ref[i]).abs().max().item() <= tol
            assert (keys.cpu()[~written] == SENTINEL).all() and (values.cpu()[~written] == SENTINEL).all()
            # the two launches it replaces give the same, rounded at the projection
            keys2, values2 = torch.full_like(keys, SENTINEL), torch.full_like(values, SENTINEL)
            qkv = torch.nn.functional.linear(x, w)
            q2 = rope_into_cache(qkv, cos, sin, lengths, hq, hkv, keys2, values2, x if fold else None, 1e-6, bs)
            assert (q2.double() - q.double()).abs().max().item() <= 2 * tol
            assert (keys2.double() - keys.double()).abs().max().item() <= 2 * tol


@needs_interpreter
def test_qkv_rope_matches_the_projection_rotation_and_cache_write_interpreter():
    _check("cpu", torch.float32, 1e-4, [((16, 32, 2, 4), 1), ((32, 16, 2, 4), 1), ((16, 32, 2, 4), 3),
                                         ((16, 16, 2, 4), 4)])


@needs_interpreter
def test_qkv_rope_refuses_what_it_cannot_take_interpreter():
    from specattn.gpu.kernels.projection_epilogues import qkv_rope_into_cache, qkv_rope_workspace

    x, w, bs, cos, sin, lengths, keys, values, _, _ = _case(33, 1, 2, 1, 64, 32, False, False, torch.float32, "cpu")
    with pytest.raises(ValueError, match="at most 32"):
        qkv_rope_into_cache(x, w, cos, sin, lengths, 2, 1, keys, values)
    with pytest.raises(ValueError, match="weight"):
        qkv_rope_into_cache(x[:4], w[:-1], cos[:4], sin[:4], lengths[:4], 2, 1, keys[:4], values[:4])
    with pytest.raises(ValueError, match="HB"):
        qkv_rope_into_cache(x[:4], w, cos[:4], sin[:4], lengths[:4], 2, 1, keys[:4], values[:4], config=(64, 32, 2, 4))
    with pytest.raises(ValueError, match="split_k=33"):
        qkv_rope_into_cache(x[:4], w, cos[:4], sin[:4], lengths[:4], 2, 1, keys[:4], values[:4], split_k=33)
    other = qkv_rope_workspace(4, 2, 2, 64, 2)  # tickets for 2 + 2 x 2 heads: this launch has 2 + 2 x 1
    with pytest.raises(ValueError, match="tickets does not fit"):
        qkv_rope_into_cache(x[:4], w, cos[:4], sin[:4], lengths[:4], 2, 1, keys[:4], values[:4], split_k=2,
                            workspace=other)


@needs_gpu
def test_qkv_rope_matches_the_projection_rotation_and_cache_write_gpu():
    from specattn.gpu.kernels.projection_epilogues import CONFIGS

    # bfloat16 inputs and outputs: a value of magnitude up to ~8 rounds by 2^-8 of it
    _check("cuda", torch.bfloat16, 0.1, [(config, split) for config in CONFIGS for split in (1, 4)])


def _attention_pair(device, dtype, rows):
    """Two fused attention modules of one random Llama attention layer (head size 64, GQA, q/k/v biases, its norm
    folded): one running the projection, rotary and cache write in one launch for forwards of at most ``rows`` rows,
    one in two; their inputs, rotary tables and a cache of lengths 3 and 9."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm, LlamaRotaryEmbedding

    from specattn.decode.kv_cache import SequenceKVCache
    from specattn.hooks.fused_llama import FusedAttention

    torch.manual_seed(3)
    config = LlamaConfig(hidden_size=96, num_attention_heads=3, num_key_value_heads=1, head_dim=64,
                         attention_bias=True, intermediate_size=64, num_hidden_layers=1)
    attention = LlamaAttention(config, layer_idx=0).to(dtype)
    norm = LlamaRMSNorm(96).to(dtype)
    norm.weight.data = (0.5 + torch.rand(96)).to(dtype)
    one, two = (FusedAttention(attention, norm, r).to(device) for r in (rows, 0))
    x = (torch.randn(2, 2, 96) * 3).to(dtype).to(device)
    positions = torch.tensor([[3, 4], [9, 10]], device=device)
    cos, sin = LlamaRotaryEmbedding(config).to(device)(x, positions)
    caches = []
    for _ in range(2):
        cache = SequenceKVCache(1, 2, 1, 64, 16, dtype, device)
        cache.set_lengths(torch.tensor([3, 9], device=device))
        caches.append(cache)
    return one, two, x, (cos, sin), caches


def _check_project(device, dtype, tol, monkeypatch):
    from specattn.gpu.kernels import projection_epilogues

    calls = []
    launch = projection_epilogues.qkv_rope_into_cache
    monkeypatch.setattr(projection_epilogues, "qkv_rope_into_cache", lambda *a, **k: calls.append(1) or launch(*a, **k))
    one, two, x, rotary, (c1, c2) = _attention_pair(device, dtype, 4)
    q1, k1, v1 = one.project(x, rotary, c1)
    assert calls == [1]  # the one launch ran (2 x 2 rows, at most 4), at the hook's config and split
    assert not one._qkv_workspace.tickets.any()  # every tile's tickets back at zero for the next launch
    q2, k2, v2 = two.project(x, rotary, c2)
    assert calls == [1]
    scale = q2.abs().max().item()
    assert (q1.double() - q2.double()).abs().max().item() <= tol * scale
    assert (k1.double() - k2.double()).abs().max().item() <= tol * scale
    assert (v1.double() - v2.double()).abs().max().item() <= tol * max(1.0, v2.abs().max().item())
    untouched = torch.ones(16, dtype=torch.bool, device=device)
    untouched[3:5] = False
    assert k1[0, :, 3:5].ne(0).any() and k1[0, :, untouched].eq(0).all()  # sequence 0 at its length 3, nothing else
    few, _, x3, rotary3, (c3, c4) = _attention_pair(device, dtype, 3)  # 4 rows > 3: the two launches, exactly
    assert torch.equal(few.project(x3, rotary3, c3)[0], two.project(x3, rotary3, c4)[0]) and calls == [1]
    return one, x, rotary, c1


@needs_interpreter
def test_the_fused_attention_projects_in_one_launch_like_in_two_interpreter(monkeypatch):
    _check_project("cpu", torch.float16, 2e-2, monkeypatch)


@needs_gpu
def test_the_fused_attention_projects_in_one_launch_like_in_two_and_replays_in_a_graph_gpu(monkeypatch):
    one, x, rotary, cache = _check_project("cuda", torch.bfloat16, 3e-2, monkeypatch)
    eager = one.project(x, rotary, cache)[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = one.project(x, rotary, cache)[0]
    graph.replay()
    assert torch.equal(out, eager)


def _check_gate_up(device, dtype, tol, configs):
    from specattn.gpu.kernels.fused_llama import silu_mul
    from specattn.gpu.kernels.projection_epilogues import gate_up_silu, gate_up_workspace

    gen = torch.Generator().manual_seed(4)
    for rows, inter, k, fold in [(16, 100, 96, True), (1, 40, 64, False), (32, 33, 200, True), (5, 16, 48, False)]:
        x = (torch.randn(rows, k, generator=gen) * torch.logspace(-1, 1, rows)[:, None]).to(dtype)
        w = (torch.randn(2 * inter, k, generator=gen) / k ** 0.5).to(dtype)
        ref = x.double() @ w.double().T
        if fold:
            ref = ref * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
        ref = torch.nn.functional.silu(ref[:, :inter]) * ref[:, inter:]
        x, w = x.to(device), w.to(device)
        for config, split in configs:
            work = gate_up_workspace(rows, inter, split, config, device) if split > 1 else None
            out = gate_up_silu(x, w, 1e-6 if fold else None, config=config, split_k=split, workspace=work)
            assert out.shape == (rows, inter) and out.dtype == dtype
            if work is not None:
                assert (work.tickets == 0).all()
                assert torch.equal(gate_up_silu(x, w, 1e-6 if fold else None, config=config, split_k=split,
                                                workspace=work), out)
            scale = max(1.0, ref.abs().max().item())
            assert (out.double().cpu() - ref).abs().max().item() <= tol * scale, (rows, inter, k, config)
            two = silu_mul(torch.nn.functional.linear(x, w), x if fold else None, 1e-6)
            assert (two.double() - out.double()).abs().max().item() <= 2 * tol * scale
        assert gate_up_silu(x.view(1, rows, k), w, 1e-6).shape == (1, rows, inter)  # leading dims kept


@needs_interpreter
def test_gate_up_silu_matches_the_projection_and_silu_mul_interpreter():
    _check_gate_up("cpu", torch.float32, 1e-4, [((16, 32, 2, 4), 1), ((32, 64, 2, 4), 1), ((16, 32, 2, 4), 4)])


@needs_interpreter
def test_gate_up_silu_refuses_what_it_cannot_take_interpreter():
    from specattn.gpu.kernels.projection_epilogues import gate_up_silu, gate_up_workspace

    with pytest.raises(ValueError, match="at most 32"):
        gate_up_silu(torch.zeros(33, 8), torch.zeros(6, 8))
    with pytest.raises(ValueError, match="2 I"):
        gate_up_silu(torch.zeros(4, 8), torch.zeros(6, 9))
    with pytest.raises(ValueError, match="split_k=0"):
        gate_up_silu(torch.zeros(4, 8), torch.zeros(6, 8), split_k=0)
    small = gate_up_workspace(4, 3, 2, (16, 32, 2, 4))  # sized for 2 ranges: 4 do not fit
    with pytest.raises(ValueError, match="does not fit split_k=4"):
        gate_up_silu(torch.zeros(4, 8), torch.zeros(6, 8), config=(16, 32, 2, 4), split_k=4, workspace=small)


@needs_gpu
def test_gate_up_silu_matches_the_projection_and_silu_mul_gpu():
    from specattn.gpu.kernels.projection_epilogues import CONFIGS

    _check_gate_up("cuda", torch.bfloat16, 3e-2, [(config, split) for config in CONFIGS for split in (1, 2, 4)])


def _mlp_pair(device, dtype, down_split):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    from specattn.hooks.fused_llama import FusedMLP

    torch.manual_seed(5)
    config = LlamaConfig(hidden_size=96, intermediate_size=80, num_attention_heads=3, num_hidden_layers=1)
    mlp, norm = LlamaMLP(config).to(dtype), LlamaRMSNorm(96).to(dtype)
    norm.weight.data = (0.5 + torch.rand(96)).to(dtype)
    return (*(FusedMLP(mlp, norm, split).to(device) for split in (down_split, 0)),
            (torch.randn(2, 2, 96) * 3).to(dtype).to(device))


@needs_interpreter
def test_the_fused_mlp_runs_its_down_projection_and_residual_add_in_one_launch_interpreter(monkeypatch):
    # down_split = 3 over the intermediate 80 (ranges of one 128-wide step: two empty): the skinny kernel, once, onto
    # the residual in place, as cuBLAS's would; no residual or more rows than it takes: project_onto, exactly
    from specattn.gpu.kernels import skinny_gemm
    from specattn.hooks import fused_llama

    # the hook's limits, kept without importing Triton, are the kernel's
    assert (fused_llama.MAX_DOWN_SPLIT, fused_llama.MAX_DOWN_ROWS) == (skinny_gemm.MAX_SPLIT, skinny_gemm.MAX_ROWS)
    calls = []
    launch = skinny_gemm.skinny_linear
    monkeypatch.setattr(skinny_gemm, "skinny_linear", lambda *a, **k: calls.append(k["split_k"]) or launch(*a, **k))
    split, two, x = _mlp_pair("cpu", torch.float16, 3)
    residual = torch.randn_like(x)
    got = split(x, residual.clone())
    want = two(x, residual.clone())
    assert calls == [3] and split._down_workspace.tickets.numel() == 6 and not split._down_workspace.tickets.any()
    assert (got.double() - want.double()).abs().max().item() <= 2e-2 * want.abs().max().item()
    assert torch.equal(split(x), two(x)) and calls == [3]
    monkeypatch.setattr(fused_llama, "MAX_DOWN_ROWS", 3)  # 4 rows
    assert torch.equal(split(x, residual.clone()), two(x, residual.clone())) and calls == [3]
    for bad in (-1, fused_llama.MAX_DOWN_SPLIT + 1, True, 2.0):
        with pytest.raises(ValueError, match="down_split"):
            fused_llama.down_split_checked(bad)


def test_the_fused_layers_row_limit_is_the_kernels():
    pytest.importorskip("triton")
    from specattn.gpu.kernels.projection_epilogues import CONFIGS, MAX_ROWS
    from specattn.gpu.kernels.skinny_gemm import MAX_SPLIT
    from specattn.hooks.fused_llama import MAX_EPILOGUE_ROWS, QKV_EPILOGUE, epilogue_rows_checked

    assert MAX_EPILOGUE_ROWS == MAX_ROWS
    assert QKV_EPILOGUE[0] in CONFIGS and 1 <= QKV_EPILOGUE[1] <= MAX_SPLIT  # a config the kernel is compiled for
    assert epilogue_rows_checked(0) == 0 and epilogue_rows_checked(MAX_ROWS) == MAX_ROWS
    for bad in (-1, MAX_ROWS + 1, True, 2.0):
        with pytest.raises(ValueError, match="epilogue_rows"):
            epilogue_rows_checked(bad)
