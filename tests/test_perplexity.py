"""The sparse evaluation: masks, parallel vs sequential, p=1 vs dense, on the tiny pair."""

import math
from types import SimpleNamespace

import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.kv_reads import KVReads
from specattn.core.layout import StepLayout
from specattn.core.settings import Settings
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.hooks.verifier_attention import VerifierPlan, verifier_attention
from specattn.methods import Dense, SpecAttn


class RandomChunks:
    """Test stand-in for an active method: an independent random chunk set per step and KV head."""

    def __init__(self, keep: float, heads: int, layout: StepLayout, generator: torch.Generator):
        self.keep, self.heads, self.layout, self.generator = keep, heads, layout, generator

    def select(self, view):
        shape = (len(view.steps), self.heads, self.layout.n_chunks)
        self.last = torch.rand(shape, generator=self.generator) < self.keep
        return self.last


def reference_attention(query, key, value, layout, selection, steps, scaling):
    """Float64 per-row attention over exactly the keys the definition allows."""
    hq, n_rows, dim = query.shape[1:]
    hkv, n_keys = key.shape[1:3]
    out = torch.zeros(n_rows, hq, dim, dtype=torch.float64)
    for r in range(n_rows):
        row = n_keys - n_rows + r
        step = int(layout.step_of(torch.tensor([row]))[0])
        for h in range(hq):
            kv = h // (hq // hkv)
            allowed = []
            for k in range(row + 1):
                if step < 0 or k >= int(layout.step_starts[step]):
                    allowed.append(k)
                else:
                    head = kv if selection.shape[1] > 1 else 0
                    if selection[step - int(steps[0]), head, k // layout.chunk_size]:
                        allowed.append(k)
            idx = torch.tensor(allowed)
            scores = (query[0, h, r].double() @ key[0, kv, idx].double().T) * scaling
            out[r, h] = torch.softmax(scores, 0) @ value[0, kv, idx].double()
    return out


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("with_cache", [False, True])
def test_masked_attention_matches_reference(heads, with_cache):
    generator = torch.Generator().manual_seed(heads + 2 * with_cache)
    layout = StepLayout(seq_len=42, prefill_len=5, gamma=3, chunk_size=4)  # 41 positions, partial chunk
    hq, hkv, dim = 4, 2, 8
    method = RandomChunks(0.4, heads, layout, generator)
    plan = VerifierPlan(method, layout, frozenset({0}), KVReads(), query_block=7)
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=hq // hkv, is_causal=True)
    n_keys = layout.n_positions
    n_rows = 4 if with_cache else n_keys  # the last step (rows 37..40) over a cache, or the whole sample
    query = torch.randn(1, hq, n_rows, dim, generator=generator)
    key = torch.randn(1, hkv, n_keys, dim, generator=generator)
    value = torch.randn(1, hkv, n_keys, dim, generator=generator)
    out, _ = verifier_attention(module, query, key, value, None, scaling=dim**-0.5, specattn_verifier=plan)
    steps = torch.tensor([layout.n_steps - 1]) if with_cache else torch.arange(layout.n_steps)
    expected = reference_attention(query, key, value, layout, method.last, steps, dim**-0.5)
    assert out.shape == (1, n_rows, hq, dim)
    err = (out[0].double() - expected).norm() / expected.norm()
    assert err < 1e-5


def settings(pair, impl="parallel", p_layers="proportional", head_agg="mean", chunk=8):
    mapping = layer_map.resolve(p_layers, pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return Settings(4, chunk, 2, head_agg, tuple(mapping), query_block=64, prefill_frac=0.1, impl=impl)


def sample_ids(n=301, seed=0):
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed))


def ppl(score):
    return math.exp(score.nll_sum / score.tokens)


@pytest.mark.parametrize("head_agg", ["mean", "kv_group"])
def test_parallel_and_sequential_agree(tiny_pair, head_agg):
    prepare(tiny_pair)
    ids = sample_ids(seed=1)
    methods = [Dense(), SpecAttn(0.6), SpecAttn(0.9)]
    parallel = evaluate_sample(tiny_pair, ids, methods, settings(tiny_pair, "parallel", head_agg=head_agg))
    sequential = evaluate_sample(tiny_pair, ids, methods, settings(tiny_pair, "sequential", head_agg=head_agg))
    for a, b in zip(parallel, sequential):
        assert a.tokens == b.tokens == 300 - 30
        assert abs(ppl(a) / ppl(b) - 1) < 1e-4
        assert a.reads == b.reads
    assert parallel[1].reads.reduction > 0.05  # the test exercises real sparsity


@pytest.mark.parametrize("impl", ["parallel", "sequential"])
def test_a_rows_own_heads_equal_the_runs_head_agg(tiny_pair, impl):
    """``SpecAttn(heads="max")`` in a run aggregating by mean gives what plain SpecAttn gives in a run
    aggregating by max (so one run can hold several aggregations), and differs from the mean row."""
    prepare(tiny_pair)
    ids = sample_ids(seed=4)
    mixed = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(0.8), SpecAttn(0.8, heads="max")],
                            settings(tiny_pair, impl, head_agg="mean", chunk=4))
    alone = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(0.8)], settings(tiny_pair, impl, head_agg="max", chunk=4))
    assert mixed[2].nll_sum == pytest.approx(alone[1].nll_sum, rel=1e-6) and mixed[2].reads == alone[1].reads
    assert mixed[1].reads != mixed[2].reads  # the aggregations select differently on this sample
    assert SpecAttn(0.8, heads="max").label == "specattn p=0.8 heads=max"  # its own row in the table


def test_p_one_equals_dense(tiny_pair):
    prepare(tiny_pair)
    ids = sample_ids(seed=2)
    dense, full = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(1.0)], settings(tiny_pair))
    assert abs(ppl(full) / ppl(dense) - 1) < 1e-6
    assert full.reads.reduction == 0.0 and full.reads.sparse_layer_reduction == 0.0


def test_sparser_p_reads_less(tiny_pair):
    prepare(tiny_pair)
    ids = sample_ids(seed=3)
    scores = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(0.5), SpecAttn(0.8), SpecAttn(0.99)],
                             settings(tiny_pair, chunk=4))
    reductions = [s.reads.sparse_layer_reduction for s in scores[1:]]
    assert reductions[0] > reductions[1] > reductions[2] >= 0.0
    assert all(math.isfinite(ppl(s)) for s in scores)
    # dense layers are never sparse: the all-layer reduction is smaller than the sparse-layer one
    assert scores[1].reads.reduction < scores[1].reads.sparse_layer_reduction
