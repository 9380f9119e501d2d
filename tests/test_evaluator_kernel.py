"""The evaluator's chunk-list kernel path (``experiment.impl=parallel`` on CUDA in fp16/bf16) against the
float64 definition of the visible keys and against the masked path (``parallel_mask``).

Interpreter (TRITON_INTERPRET=1): small shapes with prefill rows, a short last step, a partial chunk,
one or per-KV-head selections, and the tiny pair end to end, in float16 (Triton's interpreter computes a
bfloat16 ``tl.dot`` wrongly). GPU: the real verifier's attention shape in bfloat16.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from specattn.core.kv_reads import KVReads
from specattn.core.layout import StepLayout
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.hooks.verifier_attention import VerifierPlan, verifier_attention
from specattn.methods import Budget, Dense, Quest, SpecAttn

from .availability import needs_gpu, needs_interpreter
from .test_perplexity import RandomChunks, reference_attention, sample_ids, settings


def _layer(layout, heads, keep, hq, hkv, dim, dtype, device, seed, kernel):
    """One sparse layer's output ``(R, Hq, D)`` under random selections, and the float64 reference."""
    generator = torch.Generator().manual_seed(seed)
    method = RandomChunks(keep, heads, layout, generator)
    plan = VerifierPlan(method, layout, frozenset({0}), KVReads(), query_block=16, kernel=kernel)
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=hq // hkv, is_causal=True)
    n_keys = layout.n_positions
    query = torch.randn(1, hq, n_keys, dim, generator=generator).to(dtype)
    key = torch.randn(1, hkv, n_keys, dim, generator=generator).to(dtype)
    value = torch.randn(1, hkv, n_keys, dim, generator=generator).to(dtype)
    out, _ = verifier_attention(module, query.to(device), key.to(device), value.to(device), None,
                                scaling=dim**-0.5, specattn_verifier=plan)
    expected = reference_attention(query.float(), key.float(), value.float(), layout, method.last,
                                   torch.arange(layout.n_steps), dim**-0.5)
    return out[0].double().cpu(), expected


def _rel(out, ref) -> float:
    return float((out - ref).norm() / ref.norm())


@needs_interpreter
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("seq_len, gamma, chunk", [(42, 3, 4), (45, 4, 16), (30, 1, 8)])
def test_kernel_rows_match_definition(heads, seq_len, gamma, chunk):
    """Prefill rows, full steps, a shorter last step (42: 41 positions, 36 scored rows in steps of 4), a
    partial prefix chunk, gamma = 1; fp16 inputs, so the tolerance is fp16's."""
    layout = StepLayout(seq_len=seq_len, prefill_len=5, gamma=gamma, chunk_size=chunk)
    out, expected = _layer(layout, heads, 0.4, 4, 2, 16, torch.float16, "cpu", seq_len + heads, kernel=True)
    masked, _ = _layer(layout, heads, 0.4, 4, 2, 16, torch.float16, "cpu", seq_len + heads, kernel=False)
    assert _rel(out, expected) < 2e-2
    assert _rel(out, expected) < 2 * _rel(masked, expected) + 1e-3  # no worse than the masked path's rounding


@needs_interpreter
@pytest.mark.parametrize("keep", [0.0, 1.0])
def test_kernel_extreme_selections(keep):
    """Nothing selected (each step reads only its own tokens) and everything selected (dense)."""
    layout = StepLayout(seq_len=40, prefill_len=3, gamma=4, chunk_size=4)
    out, expected = _layer(layout, 2, keep, 4, 2, 16, torch.float16, "cpu", 7, kernel=True)
    assert _rel(out, expected) < 2e-2


@needs_interpreter
def test_tiny_pair_kernel_matches_mask_path(tiny_pair):
    """End to end in fp16: perplexities within fp16 rounding of the masked path's; the same reads where the
    selection comes from the draft (SpecAttn), within 1% where it comes from the verifier's own layers (Quest:
    a rounding difference in an earlier layer may flip a near-tie of two pages)."""
    prepare(tiny_pair)
    pair = tiny_pair
    pair.verifier.to(torch.float16), pair.draft.to(torch.float16)
    try:
        ids = sample_ids(n=43, seed=4)  # 42 positions: 4 prefilled, 7 full steps and a shorter one
        methods = [Dense(), SpecAttn(0.8), Quest(Budget(kv_budget_frac=0.5))]
        fast = evaluate_sample(pair, ids, methods, settings(pair, "parallel", chunk=4))
        masked = evaluate_sample(pair, ids, methods, settings(pair, "parallel_mask", chunk=4))
    finally:
        pair.verifier.to(torch.float32), pair.draft.to(torch.float32)
    for a, b in zip(fast, masked):
        assert abs(math.exp(a.nll_sum / a.tokens) / math.exp(b.nll_sum / b.tokens) - 1) < 2e-2
    assert fast[1].reads == masked[1].reads and fast[0].reads == masked[0].reads
    assert abs(fast[2].reads.reads / masked[2].reads.reads - 1) < 0.01
    assert fast[1].reads.sparse_layer_reduction > 0.05


@needs_gpu
@pytest.mark.parametrize("heads", [1, 2])
def test_kernel_rows_gpu_verifier_shape(heads):
    """Qwen2.5-Coder-1.5B's attention (12 query heads, 2 KV heads, head dim 128) over 2049 keys, chunk 16,
    gamma 4, a shorter last step; against the float32 masked path."""
    layout = StepLayout(seq_len=2050, prefill_len=204, gamma=4, chunk_size=16)
    generator = torch.Generator().manual_seed(heads)
    method = RandomChunks(0.3, heads, layout, generator)
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=6, is_causal=True)
    q, k, v = (torch.randn(1, h, layout.n_positions, 128, generator=generator, device="cpu").cuda()
               for h in (12, 2, 2))
    outs = {}
    for kernel, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        plan = VerifierPlan(method, layout, frozenset({0}), KVReads(), query_block=256, kernel=kernel)
        generator.manual_seed(99)  # the same random selection for both
        outs[kernel] = verifier_attention(module, q.to(dtype), k.to(dtype), v.to(dtype), None, scaling=128**-0.5,
                                          specattn_verifier=plan)[0][0].double()
    assert _rel(outs[True], outs[False]) < 1e-2
