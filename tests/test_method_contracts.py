"""Contracts every KV-selection method meets, run for each ``conf/method/*.yaml``: a new method is
checked by these tests the day its config is added.

Which setting makes a method sparse or read everything is read off its config's parameters:
budgeted methods have ``method.kv_budget_frac``, nucleus methods read ``p``, top-k methods have
``method.top_k``. A method with none of them (other than ``dense``) fails here until a rule is added.
"""

import math

import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.eval.perplexity import EvalSettings, evaluate_sample, prepare
from specattn.methods import Dense, instantiate_method

from .conftest import CONF, compose_config

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
#: per parameter: (a setting that reads part of the KV on the tiny pair, one that reads all of it)
RULES = {"kv_budget_frac": ("method.kv_budget_frac=0.4", "method.kv_budget_frac=1.0"),
         "p": ("p=0.8", "p=1.0"),
         "top_k": ("method.top_k=8", f"method.top_k={10**6}")}


def overrides(name: str, which: int) -> list[str]:
    """The overrides of ``RULES`` that apply to method ``name`` (``which`` 0: sparse, 1: full)."""
    cfg = compose_config(f"method={name}")
    present = {"kv_budget_frac": "kv_budget_frac" in cfg.method, "p": "p" in cfg.method.selector,
               "top_k": "top_k" in cfg.method}
    return [RULES[key][which] for key, there in present.items() if there]


def build(name: str, *extra: str):
    cfg = compose_config(f"method={name}", "chunk_size=8", *extra)
    return instantiate_method(cfg.method.selector, key_prefix="method.")


def settings(pair, impl: str) -> EvalSettings:
    mapping = layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return EvalSettings(0.1, 4, 8, 2, "mean", tuple(mapping), impl, query_block=64)


def ppl(score) -> float:
    return math.exp(score.nll_sum / score.tokens)


@pytest.mark.parametrize("name", METHODS)
def test_config_builds_the_named_method(name):
    method = build(name)
    assert method.name == compose_config(f"method={name}").method.name
    assert method.label.startswith(name)
    if name != "dense":
        assert overrides(name, 1), f"method {name}: no rule of RULES says how to make it read everything"


@pytest.mark.parametrize("name", METHODS)
def test_parallel_and_sequential_evaluation_agree(tiny_pair, name):
    prepare(tiny_pair)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(5))
    scores = {impl: evaluate_sample(tiny_pair, ids, [Dense(), build(name, *overrides(name, 0))],
                                    settings(tiny_pair, impl), seed=7)[1]
              for impl in ("parallel", "sequential")}
    assert abs(ppl(scores["parallel"]) / ppl(scores["sequential"]) - 1) < 1e-4
    assert scores["parallel"].reads == scores["sequential"].reads
    if name != "dense":
        assert 0.05 < scores["parallel"].reads.sparse_layer_reduction < 1  # it really skips reads


@pytest.mark.parametrize("name", METHODS)
def test_a_setting_that_keeps_everything_equals_dense(tiny_pair, name):
    prepare(tiny_pair)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(8))
    dense, full = evaluate_sample(tiny_pair, ids, [Dense(), build(name, *overrides(name, 1))], settings(tiny_pair, "parallel"))
    assert abs(ppl(full) / ppl(dense) - 1) < 1e-6
    assert full.reads.reduction == 0.0


@pytest.mark.parametrize("name", METHODS)
def test_decodes_online_and_a_setting_that_keeps_everything_decodes_like_dense(tiny_pair, name):
    from specattn.decode.engine import (
        DecodeSettings,
        SpeculativeDecoder,
        prepare_for_decoding,
    )

    mapping = layer_map.resolve("proportional", tiny_pair.n_draft_layers, tiny_pair.n_verifier_layers,
                                tiny_pair.draft_layers)
    prepare_for_decoding(tiny_pair)
    decoder = SpeculativeDecoder(tiny_pair, DecodeSettings(3, 8, 2, "mean", tuple(mapping), 12))
    prefill = decoder.prefill(torch.randint(3, 259, (1, 90), generator=torch.Generator().manual_seed(2)))
    dense = decoder.generate(prefill, [Dense()]).traces[0]
    sparse = decoder.generate(prefill, [build(name, *overrides(name, 0))]).traces[0]
    full = decoder.generate(prefill, [build(name, *overrides(name, 1))]).traces[0]
    assert len(sparse.tokens) == 12 and full.tokens == dense.tokens and full.reads.reduction == 0.0
    if name != "dense":
        assert sparse.reads.sparse_layer_reduction > 0.05
