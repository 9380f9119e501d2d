"""specattn.hooks.fused_llama: fused projections, rotary + cache write, SiLU-mul and residual adds inside the
projections give the unfused model's results (CPU: exactly HF's functions; interpreter and GPU: the Triton kernels against torch),
and the graph decoder decodes the same tokens with a fused pair."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from specattn.core import layer_maps as layer_map
from specattn.decode.graph_engine import GraphDecoder, GraphSettings
from specattn.decode.kv_cache import SequenceKVCache
from specattn.hooks.fused_llama import FusedAttention, FusedDecoderLayer, FusedMLP, fuse_llama, project_onto
from specattn.models.pair import load_pair

from .availability import needs_gpu, needs_interpreter
from .conftest import CONF


def tiny(model_dir, device="cpu", dtype=torch.float32):
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path = str(model_dir)
    return load_pair(cfg, torch.device(device), dtype)


def decode(pair, p, batch, new=20, graphs=False):
    mapping = tuple(layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers))
    dec = GraphDecoder(pair.draft, pair.verifier, GraphSettings(4, 8, 2, "mean", mapping, p), batch.shape[0], 100)
    if graphs:
        dec.prefill(batch)
        dec.capture()
    out = dec.generate(batch, new)
    return out.tokens, out.steps, out.kept


@pytest.mark.parametrize("p", [None, 0.7])
@pytest.mark.parametrize("fold_norms", [False, True])
def test_fused_pair_decodes_like_the_unfused_one_on_the_cpu(tiny_model_dir, p, fold_norms):
    plain, fused = tiny(tiny_model_dir), tiny(tiny_model_dir)
    assert fuse_llama(fused.verifier, fold_norms) == 6 and fuse_llama(fused.draft, fold_norms) == 4
    assert isinstance(fused.verifier.model.layers[3].self_attn, FusedAttention)
    assert isinstance(fused.draft.model.layers[0].mlp, FusedMLP)
    assert isinstance(fused.draft.model.layers[1], FusedDecoderLayer)
    assert isinstance(fused.draft.model.layers[1].input_layernorm, torch.nn.Identity) == fold_norms
    batch = torch.randint(3, 259, (2, 45), generator=torch.Generator().manual_seed(5))
    assert decode(fused, p, batch) == decode(plain, p, batch)


def test_folded_norms_give_the_layers_outputs_on_the_cpu(tiny_model_dir):
    """One decoder layer with its norms folded (the norm weights drawn away from 1, so a fold that dropped them
    would fail) against HF's layer on the same input, float32; the projections' weights hold ``W diag(g)``."""
    from specattn.hooks.fused_llama import folded, rms_scaled

    pair = tiny(tiny_model_dir)
    layer = pair.verifier.model.layers[2]
    g = torch.Generator().manual_seed(4)
    for norm in (layer.input_layernorm, layer.post_attention_layernorm):
        norm.weight.data = 0.5 + torch.rand(norm.weight.shape, generator=g)
    x = torch.randn(2, 3, layer.mlp.gate_proj.in_features, generator=g) * 3
    want = layer.mlp(layer.post_attention_layernorm(x))
    mlp = FusedMLP(layer.mlp, layer.post_attention_layernorm)
    assert torch.allclose(mlp(x), want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(FusedMLP(layer.mlp)(x), want, atol=1e-3)  # the norm matters on this input
    w = layer.self_attn.q_proj.weight
    assert torch.allclose(folded(w, layer.input_layernorm), w * layer.input_layernorm.weight)
    y = torch.nn.functional.linear(x, folded(w, layer.input_layernorm))
    want_q = layer.self_attn.q_proj(layer.input_layernorm(x))
    assert torch.allclose(rms_scaled(y, x, layer.input_layernorm.variance_epsilon, layer.self_attn.q_proj.bias),
                          want_q, atol=1e-5, rtol=1e-4)


def rope_case(dtype, device, b=3, t=4, hq=4, hkv=2, d=16, cap=40):
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(b, t, (hq + 2 * hkv) * d, generator=g).to(dtype)
    angles = torch.rand(b, t, d // 2, generator=g) * 6
    emb = torch.cat([angles, angles], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    lengths = torch.tensor([0, 7, cap - t][:b])
    return [x.to(device) for x in (qkv, cos, sin, lengths)]


def check_rope(dtype, device, tol, folded=False):
    """``folded``: ``qkv`` is the projection of rows ``x (B, T, 40)`` (magnitudes far from 1) before a folded RMSNorm,
    with a q/k/v bias: the reference scales it by the rows' float64 ``rsqrt(mean(x^2) + eps)`` and adds the bias."""
    from specattn.gpu.kernels.fused_llama import rope_into_cache

    qkv, cos, sin, lengths = rope_case(dtype, device)
    b, t, _ = qkv.shape
    hq, hkv, d = 4, 2, 16
    full = qkv.double()
    x = bias = None
    if folded:
        gen = torch.Generator().manual_seed(6)
        x = (torch.randn(b, t, 40, generator=gen) * torch.logspace(-1, 2, b * t).view(b, t, 1)).to(dtype).to(device)
        bias = torch.randn(qkv.shape[-1], generator=gen).to(dtype).to(device)
        full = full * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6) + bias.double()
    want_cache = SequenceKVCache(1, b, hkv, d, 40, torch.float64, device)
    want_cache.set_lengths(lengths)
    q, k, v = full.view(b, t, -1, d).transpose(1, 2).split([hq, hkv, hkv], dim=1)
    q_want, k_want = apply_rotary_pos_emb(q, k, cos.double(), sin.double())
    want_cache.update(k_want, v, 0)
    keys = torch.full((b, hkv, 40, d), float("nan"), dtype=dtype, device=device)
    values = keys.clone()
    got = rope_into_cache(qkv, cos, sin, lengths, hq, hkv, keys, values, x, 1e-6, bias)
    scale = max(1.0, q_want.abs().max().item())
    assert (got.double() - q_want).abs().max().item() < tol * scale
    for b_ in range(b):
        n = int(lengths[b_])
        rows = slice(n, n + t)
        assert (keys[b_, :, rows].double() - want_cache.keys[0, b_, :, rows]).abs().max().item() < tol * scale
        assert (values[b_, :, rows].double() - want_cache.values[0, b_, :, rows]).abs().max().item() <= (
            tol * scale if folded else 0.0)  # without the fold v is copied
        assert keys[b_, :, :n].isnan().all() and keys[b_, :, n + t:].isnan().all()  # nothing else written


def check_silu_mul(dtype, device):
    """Plain: exactly ``silu(gate) * up`` in the input dtype. Folded: gate and up first scaled by the rows of
    ``x (3, 2, 70)``'s float64 ``rsqrt(mean(x^2) + eps)``, within the dtype's rounding of the float64 result."""
    from specattn.gpu.kernels.fused_llama import silu_mul

    gen = torch.Generator().manual_seed(1)
    gate_up = torch.randn(3, 2, 2 * 1500, generator=gen).to(dtype).to(device)
    gate, up = gate_up.chunk(2, dim=-1)
    assert torch.equal(silu_mul(gate_up), torch.nn.functional.silu(gate) * up)
    x = (torch.randn(3, 2, 70, generator=gen) * torch.logspace(-2, 2, 6).view(3, 2, 1)).to(dtype).to(device)
    scaled = gate_up.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    want = torch.nn.functional.silu(scaled[..., :1500]) * scaled[..., 1500:]
    got = silu_mul(gate_up, x, 1e-5).double()
    assert (got - want).abs().max().item() <= 2e-2 * want.abs().max().item()


def check_project_onto(dtype, device):
    """The residual add inside the projection: ``residual + x @ w.T`` against float64, written into ``residual``
    where the kernels run; without a residual, exactly ``linear``."""
    g = torch.Generator().manual_seed(3)
    x, w, res = (torch.randn(*shape, generator=g).to(dtype).to(device) for shape in ((3, 5, 64), (48, 64), (3, 5, 48)))
    want = res.double() + x.double() @ w.double().T
    into = res.clone()
    got = project_onto(x, w, into)
    assert got.shape == res.shape and got.data_ptr() == into.data_ptr()  # one launch, in place
    assert (got.double() - want).abs().max().item() <= 1e-2 * want.abs().max().item()
    assert torch.equal(project_onto(x, w, None), torch.nn.functional.linear(x, w))


def test_project_onto_is_hf_residual_add_on_the_cpu():
    x, w, res = torch.randn(2, 3, 16), torch.randn(8, 16), torch.randn(2, 3, 8)
    assert torch.equal(project_onto(x, w, res), res + torch.nn.functional.linear(x, w))


@needs_interpreter
def test_fused_kernels_interpreter():
    check_rope(torch.float16, "cpu", 1e-2)
    check_rope(torch.float16, "cpu", 1e-2, folded=True)
    check_silu_mul(torch.float16, "cpu")
    check_project_onto(torch.float16, "cpu")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_kernels_gpu(dtype):
    check_rope(dtype, "cuda", 3e-2)
    check_rope(dtype, "cuda", 3e-2, folded=True)
    check_silu_mul(dtype, "cuda")
    check_project_onto(dtype, "cuda")


@needs_gpu
@pytest.mark.parametrize("p", [None, 0.7])
@pytest.mark.parametrize("fold_norms,down_split", [(False, 0), (True, 0), (True, 4)])
def test_fused_pair_graph_replay_equals_eager_gpu(tiny_model_dir, p, fold_norms, down_split):
    """``down_split``: the draft's down projection and residual add in one launch (the split's tickets shared by
    every replay; the one-launch q/k/v projection needs D / 2 a multiple of 32, more than the tiny heads of 16: its
    graph replay is tests/test_projection_epilogues.py's)."""
    pair = tiny(tiny_model_dir, "cuda", torch.bfloat16)
    fuse_llama(pair.verifier, fold_norms), fuse_llama(pair.draft, fold_norms, 0, down_split)
    batch = torch.randint(3, 259, (3, 50), generator=torch.Generator().manual_seed(8))
    assert decode(pair, p, batch, graphs=True) == decode(pair, p, batch)
