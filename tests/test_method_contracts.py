"""Contracts every KV-selection method meets, run for each ``conf/method/*.yaml``: a new method is
checked by these tests the day its config is added.

Each method says itself which of its settings reads everything (:meth:`Method.keep_everything`) and
which skips part of a short sample's reads (:meth:`Method.sparse_example`); the tests name no parameter.
"""

import dataclasses
import math

import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.settings import Settings
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.methods import Dense, Method, instantiate_method

from .conftest import CONF, compose_config

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def build(name: str, *extra: str) -> Method:
    cfg = compose_config(f"method={name}", "chunk_size=8", *extra)
    return instantiate_method(cfg.method, key_prefix="method.")


def settings(pair, impl: str = "parallel") -> Settings:
    mapping = layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return Settings(4, 8, 2, "mean", tuple(mapping), query_block=64, prefill_frac=0.1, impl=impl, max_new_tokens=12)


def ppl(score) -> float:
    return math.exp(score.nll_sum / score.tokens)


@pytest.mark.parametrize("name", METHODS)
def test_config_builds_a_method_whose_label_and_identity_come_from_its_fields(name):
    method = build(name)
    assert method.name == name
    assert method.label.startswith(name) and method.slug.startswith(name)
    assert dataclasses.is_dataclass(method) and method.identity()["method"] == name
    assert method == build(name)  # settings objects: equal configs give equal methods
    full = method.keep_everything()
    assert type(full) is type(method)
    if name != "dense":
        sparse = method.sparse_example()
        assert full.identity() != sparse.identity() and full.label != sparse.label


@pytest.mark.parametrize("name", METHODS)
def test_parallel_and_sequential_evaluation_agree(tiny_pair, name):
    prepare(tiny_pair)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(5))
    method = build(name)
    method = method if name == "dense" else method.sparse_example()
    scores = {impl: evaluate_sample(tiny_pair, ids, [Dense(), method], settings(tiny_pair, impl), seed=7)[1]
              for impl in ("parallel", "sequential")}
    assert abs(ppl(scores["parallel"]) / ppl(scores["sequential"]) - 1) < 1e-4
    assert scores["parallel"].reads == scores["sequential"].reads
    if name != "dense":
        assert 0.05 < scores["parallel"].reads.sparse_layer_reduction < 1  # it really skips reads


@pytest.mark.parametrize("name", METHODS)
def test_a_setting_that_keeps_everything_equals_dense(tiny_pair, name):
    prepare(tiny_pair)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(8))
    dense, full = evaluate_sample(tiny_pair, ids, [Dense(), build(name).keep_everything()], settings(tiny_pair))
    assert abs(ppl(full) / ppl(dense) - 1) < 1e-6
    assert full.reads.reduction == 0.0


@pytest.mark.parametrize("name", METHODS)
def test_decodes_online_and_a_setting_that_keeps_everything_decodes_like_dense(tiny_pair, name):
    from specattn.decode.engine import SpeculativeDecoder, prepare_for_decoding

    prepare_for_decoding(tiny_pair)
    decoder = SpeculativeDecoder(tiny_pair, dataclasses.replace(settings(tiny_pair), gamma=3))
    prefill = decoder.prefill(torch.randint(3, 259, (1, 90), generator=torch.Generator().manual_seed(2)))
    method = build(name)
    dense = decoder.generate(prefill, [Dense()]).traces[0]
    full = decoder.generate(prefill, [method.keep_everything()]).traces[0]
    assert full.tokens == dense.tokens and full.reads.reduction == 0.0
    if name != "dense":
        sparse = decoder.generate(prefill, [method.sparse_example()]).traces[0]
        assert len(sparse.tokens) == 12 and sparse.reads.sparse_layer_reduction > 0.05
