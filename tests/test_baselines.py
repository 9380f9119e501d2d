"""The baselines (quest, streaming, oracle_topp, draft_topk, random) and their budgets, on hand-made
inputs where the right selection is known, and on the tiny pair through the evaluation loop."""

import math

import pandas as pd
import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.errors import SpecAttnError
from specattn.core.layout import StepLayout
from specattn.core.settings import Settings
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.methods import (
    Budget,
    Dense,
    DraftTopK,
    LayerView,
    OracleTopP,
    Quest,
    RandomChunks,
    SampleContext,
    StreamingLLM,
    instantiate_method,
)
from specattn.methods.budget import top_chunks
from specattn.methods.nucleus import nucleus_mask
from specattn.methods.quest import row_page_bounds
from specattn.methods.random_chunks import hashed_uniform
from specattn.runs.matching import matched_budget
from specattn.runs.outputs import write_table

from .conftest import compose_config


def start(method, layout, n_kv_heads=1, seed=0, sparse_layers=(0,)):
    """``method`` on a sample of one forward over all of ``layout``'s steps, as the parallel evaluator runs it."""
    active = method.start(SampleContext([0] * (max(sparse_layers) + 1), list(sparse_layers), n_kv_heads,
                                        torch.Generator().manual_seed(seed), torch.device("cpu")))
    active.begin_steps(layout)
    return active


def all_steps_view(layout, queries, keys, layer=0):
    """A parallel-evaluation view: every position is a row, keys are all positions."""
    rows = torch.arange(layout.n_positions)
    return LayerView(layer, rows, torch.arange(layout.n_steps), queries, keys, 1.0)


def chosen(selection, step, head=0):
    return set(torch.nonzero(selection[step, head]).flatten().tolist())


# ------------------------------------------------------------------------------------------ budgets
def test_top_chunks_takes_best_chunks_while_they_fit_counting_partial_chunks():
    prefix_keys = torch.tensor([[4, 4, 2, 0]])  # a step whose prefix is 10 keys: chunks of 4, 4 and 2
    scores = torch.tensor([[[0.0, 1.0, 3.0, 9.0]]])  # chunk 3 scores best but is outside the prefix
    assert chosen(top_chunks(scores, prefix_keys, torch.tensor([6.0])), 0) == {2, 1}  # 2 + 4 keys
    assert chosen(top_chunks(scores, prefix_keys, torch.tensor([3.0])), 0) == {2}  # chunk 1's middle is past 3
    assert chosen(top_chunks(scores, prefix_keys, torch.tensor([0.0])), 0) == set()
    assert chosen(top_chunks(scores, prefix_keys, torch.tensor([0.0]), min_chunks=2), 0) == {2, 1}
    assert chosen(top_chunks(scores, prefix_keys, torch.tensor([99.0]), min_chunks=9), 0) == {0, 1, 2}


def test_budget_keys_per_step():
    layout = StepLayout(seq_len=25, prefill_len=8, gamma=3, chunk_size=4)  # steps [8,12) [12,16) [16,20) [20,24)
    assert Budget(token_budget=8).prefix_keys(layout).tolist() == [8.0] * 4
    # frac 0.5 of the dense reads end_s, minus the 4 tail keys
    assert Budget(kv_budget_frac=0.5).prefix_keys(layout).tolist() == [2.0, 4.0, 6.0, 8.0]
    assert Budget(token_budget=8, kv_budget_frac=0.5).params() == {"kv_budget_frac": 0.5}  # frac wins


def fake_run(folder, reductions: dict[str, float]):
    """A finished run folder whose results hold these sparse-layer reductions per setting."""
    rows = [{"method": "dense", "setting": "dense", "tokens": 10, "nll": 1.0, "dense_nll": 1.0, "kv_reads": 100,
             "kv_dense_reads": 100, "kv_reads_sparse_layers": 80, "kv_dense_reads_sparse_layers": 80}]
    for setting, reduction in reductions.items():
        rows.append(dict(rows[0], method=setting.split()[0], setting=setting,
                         kv_reads_sparse_layers=round(80 * (1 - reduction)), kv_reads=20 + round(80 * (1 - reduction))))
    write_table(pd.DataFrame(rows), folder / "results.parquet")
    return folder


def test_budget_matches_a_finished_run(tmp_path):
    single = fake_run(tmp_path / "a", {"specattn p=0.95": 0.75})
    assert matched_budget(str(single), None) == [pytest.approx(0.25), "specattn p=0.95"]
    assert matched_budget(str(single / "results.parquet"), None)[0] == pytest.approx(0.25)
    assert matched_budget(None, None) is None
    several = fake_run(tmp_path / "b", {"specattn p=0.95": 0.75, "specattn p=0.99": 0.5})
    assert matched_budget(str(several), "specattn p=0.99")[0] == pytest.approx(0.5)
    with pytest.raises(SpecAttnError, match="has 2 sparse settings .*pick one with method.budget.match_setting"):
        matched_budget(str(several), None)
    with pytest.raises(SpecAttnError, match="match_setting='quest' is not a setting"):
        matched_budget(str(several), "quest")
    with pytest.raises(SpecAttnError, match="no results.parquet there"):
        matched_budget(str(tmp_path / "nothing"), None)
    budget = Budget(token_budget=256, kv_budget_frac=0.9, match=str(single), matched=matched_budget(str(single), None))
    assert budget.params() == {"match": "specattn p=0.95"} and budget.kv_budget_frac == pytest.approx(0.25)
    assert budget.identity() == {"kv_budget_frac": 0.25}  # the fraction, not the run's path


def test_matched_budget_resolves_in_the_config_before_any_method(tmp_path):
    run = fake_run(tmp_path / "a", {"specattn p=0.95": 0.75})
    cfg = compose_config("method=quest", f"method.budget.match={run}")
    assert cfg.method.budget.matched[0] == pytest.approx(0.25)
    assert instantiate_method(cfg.method).label == "quest match=specattn p=0.95"


@pytest.mark.parametrize("kwargs,fragment", [
    ({}, "needs one of budget.token_budget, budget.kv_budget_frac or budget.match"),
    ({"token_budget": 0}, "token_budget=0 must be a positive integer"),
    ({"token_budget": 2.5}, "token_budget=2.5 must be a positive integer"),
    ({"kv_budget_frac": 1.5}, "kv_budget_frac=1.5 must lie in (0, 1]"),
    ({"kv_budget_frac": 0}, "kv_budget_frac=0 must lie in (0, 1]"),
])
def test_bad_budgets_are_refused(kwargs, fragment):
    with pytest.raises(SpecAttnError) as error:
        Budget(**kwargs)
    assert fragment in str(error.value)


# -------------------------------------------------------------------------------------------- quest
def test_quest_bound_hand_computed_and_partial_page_uses_prefix_keys_only():
    layout = StepLayout(seq_len=11, prefill_len=6, gamma=1, chunk_size=4)  # steps start at 6 and 8
    keys = torch.zeros(1, 10, 2)
    keys[0, 4:6] = torch.tensor([[1.0, -2.0], [3.0, 0.0]])  # page 1 as step 0 sees it: keys 4, 5
    keys[0, 6] = torch.tensor([100.0, 100.0])  # page 1 too, but in step 0's tail: not in its bound
    query = torch.tensor([2.0, -1.0])
    rows = torch.tensor([6, 7, 8])
    bounds = row_page_bounds(query.expand(1, 3, 2), keys, layout, rows)  # (1, 3, n_chunks)
    # min = (1, -2), max = (3, 0): max(2*1, 2*3) + max(-1*-2, -1*0) = 6 + 2
    assert bounds[0, 0, 1] == 8.0 and bounds[0, 1, 1] == 8.0
    assert bounds[0, 0, 0] == 0.0 and bounds[0, 0, 2] == -math.inf  # page 2 lies past step 0's prefix
    assert bounds[0, 2, 1] == 2 * 100 + 2  # step 1's prefix holds key 6: max = (100, 100), min = (1, -2)


def test_quest_bound_matches_brute_force_min_max():
    generator = torch.Generator().manual_seed(0)
    layout = StepLayout(seq_len=40, prefill_len=7, gamma=2, chunk_size=5)
    queries, keys = torch.randn(4, 39, 3, generator=generator), torch.randn(2, 39, 3, generator=generator)
    rows = torch.arange(7, 39)
    bounds = row_page_bounds(queries[:, 7:].double(), keys.double(), layout, rows)
    for r, row in enumerate(rows.tolist()):
        start = int(layout.step_starts[layout.step_of(torch.tensor([row]))])
        for h in range(4):
            for page in range(layout.n_chunks):
                members = keys[h // 2, page * 5: min(page * 5 + 5, start)].double()
                if len(members) == 0:
                    assert bounds[h, r, page] == -math.inf
                    continue
                q = queries[h, row].double()
                expected = torch.maximum(q * members.amin(0), q * members.amax(0)).sum()
                assert bounds[h, r, page].item() == pytest.approx(expected.item())


def page_keys(values_per_page, chunk=4):
    """(1, n_pages * chunk, 1) keys: every key of page i equals values_per_page[i]."""
    return torch.tensor(values_per_page, dtype=torch.float32).repeat_interleave(chunk)[None, :, None]


def test_quest_keeps_the_top_pages_with_at_least_three():
    layout = StepLayout(seq_len=25, prefill_len=20, gamma=3, chunk_size=4)  # one step, prefix = pages 0..4
    keys = page_keys([-5.0, 1.0, 3.0, 2.0, -1.0, 0.0])
    method = Quest(Budget(token_budget=8))  # 2 pages, but Quest keeps at least 3
    active = start(method, layout)
    selection = active.select(all_steps_view(layout, torch.ones(1, 24, 1), keys))
    assert selection.shape == (1, 1, 6) and chosen(selection, 0) == {1, 2, 3}
    method = Quest(Budget(token_budget=16))
    active = start(method, layout)
    assert chosen(active.select(all_steps_view(layout, torch.ones(1, 24, 1), keys)), 0) == {1, 2, 3, 4}
    # a negative query reverses the ranking: q * min is the bound
    assert chosen(active.select(all_steps_view(layout, -torch.ones(1, 24, 1), keys)), 0) == {0, 1, 3, 4}


def test_quest_gqa_keeps_each_query_heads_page_and_scores_kv_heads_apart():
    layout = StepLayout(seq_len=25, prefill_len=20, gamma=3, chunk_size=4)
    keys = page_keys([-5.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    queries = torch.cat([torch.ones(1, 24, 1), -torch.ones(1, 24, 1)])  # head 0 wants page 1, head 1 page 0
    method = Quest(Budget(token_budget=12))
    active = start(method, layout, n_kv_heads=1)
    assert {0, 1} <= chosen(active.select(all_steps_view(layout, queries, keys)), 0)
    two_kv = torch.cat([keys, -keys])  # KV head 1 holds the negated keys: both query heads want page 1 of theirs
    active = start(method, layout, n_kv_heads=2)
    selection = active.select(all_steps_view(layout, queries, two_kv))
    assert selection.shape == (1, 2, 6) and 1 in chosen(selection, 0, 0) and 1 in chosen(selection, 0, 1)
    assert 0 not in chosen(selection, 0, 0) and 0 not in chosen(selection, 0, 1)


# ---------------------------------------------------------------------------------------- streaming
def test_streaming_reads_sink_chunk_and_most_recent_chunks():
    layout = StepLayout(seq_len=41, prefill_len=8, gamma=3, chunk_size=4)  # steps start at 8, 12, ..., 36
    method = StreamingLLM(Budget(token_budget=12))
    active = start(method, layout)
    selection = active.select(all_steps_view(layout, torch.zeros(1, 40, 2), torch.zeros(1, 40, 2)))
    assert chosen(selection, 0) == {0, 1}  # the whole 2-chunk prefix
    for step in range(1, layout.n_steps):
        last = int(layout.step_starts[step]) // 4 - 1
        assert chosen(selection, step) == {0, last - 1, last}


def test_streaming_sinks_span_chunks_and_the_partial_chunk_is_most_recent():
    layout = StepLayout(seq_len=30, prefill_len=19, gamma=1, chunk_size=2)  # step 0 prefix: 19 keys, chunk 9 partial
    method = StreamingLLM(Budget(token_budget=6), n_sinks=3)  # sinks: chunks 0 and 1
    active = start(method, layout)
    selection = active.select(all_steps_view(layout, torch.zeros(1, 29, 2), torch.zeros(1, 29, 2)))
    assert chosen(selection, 0) == {0, 1, 9, 8}  # 4 sink keys, then 1 + 2 recent keys (the middle rule)
    with pytest.raises(SpecAttnError, match="n_sinks=-1 must be an integer >= 0"):
        StreamingLLM(Budget(token_budget=6), n_sinks=-1)


# ------------------------------------------------------------------------------------------- random
def test_random_chunks_are_seeded_per_sample_and_fill_the_budget():
    layout = StepLayout(seq_len=81, prefill_len=16, gamma=3, chunk_size=4)
    view = all_steps_view(layout, torch.zeros(1, 80, 2), torch.zeros(1, 80, 2), layer=2)
    picks = []
    for seed in (0, 0, 1):
        method = RandomChunks(Budget(token_budget=12))
        active = start(method, layout, seed=seed, sparse_layers=(2, 3))
        picks.append(active.select(view))
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])
    counts = picks[0].sum(dim=(1, 2))
    assert (counts == 3).all()  # 12 keys = 3 whole chunks at every step
    assert not (picks[0] & ~layout.prefix_chunks[:, None, :]).any()
    assert len({tuple(chosen(picks[0], s)) for s in range(layout.n_steps)}) > 1  # not the same set everywhere
    scores = hashed_uniform(7, 2, torch.arange(400), 250)  # the random scores are uniform on [0, 1)
    assert 0 <= scores.min() and scores.max() < 1
    assert scores.mean() == pytest.approx(0.5, abs=0.01) and scores.std() == pytest.approx(12 ** -0.5, abs=0.01)
    assert not torch.equal(scores, hashed_uniform(7, 3, torch.arange(400), 250))  # layers draw apart


# -------------------------------------------------------------------------------------- oracle_topp
def test_oracle_takes_the_verifiers_own_nucleus():
    layout = StepLayout(seq_len=25, prefill_len=8, gamma=3, chunk_size=4)
    keys = torch.zeros(2, 24, 1)
    keys[0, 5] = 10.0  # KV head 0: every row attends almost only to key 5 (chunk 1)
    keys[1, 2] = 10.0  # KV head 1: key 2 (chunk 0)
    queries = torch.full((2, 24, 1), 10.0)
    method = OracleTopP(0.9)
    active = start(method, layout, n_kv_heads=2)
    selection = active.select(all_steps_view(layout, queries, keys))
    for step in range(layout.n_steps):
        assert chosen(selection, step, 0) == {1} and chosen(selection, step, 1) == {0}


def test_oracle_matches_per_row_reference_and_ors_query_heads_of_a_group():
    generator = torch.Generator().manual_seed(3)
    layout = StepLayout(seq_len=50, prefill_len=9, gamma=2, chunk_size=4)
    queries, keys = 2 * torch.randn(4, 49, 8, generator=generator), torch.randn(2, 49, 8, generator=generator)
    method = OracleTopP(0.8, query_block=7)
    active = start(method, layout, n_kv_heads=2)
    selection = active.select(LayerView(0, torch.arange(49), torch.arange(layout.n_steps), queries, keys, 0.5))
    expected = torch.zeros_like(selection)
    for row in range(9, 49):
        step = int(layout.step_of(torch.tensor([row])))
        for h in range(4):
            weights = torch.softmax(0.5 * queries[h, row] @ keys[h // 2, : row + 1].T, 0)
            for key in torch.nonzero(nucleus_mask(weights, 0.8)).flatten().tolist():
                expected[step, h // 2, key // 4] = True
    assert torch.equal(selection, expected)


# --------------------------------------------------------------------------------------- draft_topk
def test_draft_topk_keeps_k_keys_per_draft_row_and_ors_the_step():
    layout = StepLayout(seq_len=21, prefill_len=12, gamma=2, chunk_size=4)  # steps [12,15) [15,18) [18,20)
    method = DraftTopK(top_k=2)
    active = start(method, layout)
    attention = torch.full((1, 2, 20), 0.01)
    attention[0, 0, [1, 9]] = 0.5  # row 12: keys 1 and 9 -> chunks 0, 2
    attention[0, 1, [5, 6]] = 0.5  # row 13: keys 5 and 6 -> chunk 1
    active.observe_draft(0, attention, torch.tensor([12, 13]))
    selection = active.select(LayerView(0, torch.arange(20), torch.arange(3), torch.zeros(1, 20, 2),
                                        torch.zeros(1, 20, 2), 1.0))
    assert chosen(selection, 0) == {0, 1, 2} and chosen(selection, 1) == set()
    assert method.label == "draft_topk top_k=2"
    with pytest.raises(SpecAttnError, match="top_k=0 must be a positive integer"):
        DraftTopK(top_k=0)


# ------------------------------------------------------------------------- through the evaluation loop
def settings(pair, impl="parallel", chunk=8, gamma=4):
    mapping = layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return Settings(gamma, chunk, 2, "mean", tuple(mapping), query_block=64, prefill_frac=0.1, impl=impl)


def ppl(score):
    return math.exp(score.nll_sum / score.tokens)


def test_budgets_read_exactly_their_keys(tiny_pair):
    """Chunk-aligned steps: each budgeted method reads min(3 chunks, prefix) + the tail per step."""
    prepare(tiny_pair)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(6))
    eval_settings = settings(tiny_pair, chunk=8, gamma=7)  # prefill 16, steps of 8 rows start at 16, 24, ...
    layout = StepLayout.for_sample(161, 0.1, 7, 8)
    assert (layout.step_starts % 8 == 0).all()
    methods = [Dense(), Quest(Budget(token_budget=24)), StreamingLLM(Budget(token_budget=24)),
               RandomChunks(Budget(token_budget=24))]
    scores = evaluate_sample(tiny_pair, ids, methods, eval_settings)
    kv_heads, sparse_layers = tiny_pair.verifier.config.num_key_value_heads, tiny_pair.n_verifier_layers - 2
    per_layer = sum(min(24, int(s)) + 8 for s in layout.step_starts)
    for method, score in zip(methods[1:], scores[1:]):
        assert score.reads.sparse_layer_reads == per_layer * kv_heads * sparse_layers, method.label


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("overrides,fragment", [
    (["method=quest", "method.budget.token_budget=8"], "method.budget.token_budget=8 is below chunk_size=16"),
    (["method=streaming", "method.budget.kv_budget_frac=2"], "method.budget.kv_budget_frac=2 must lie in (0, 1]"),
    (["method=quest", "method.budget.token_budget=0"], "method.budget.token_budget=0 must be a positive integer"),
    (["method=streaming", "method.n_sinks=-1"], "method.n_sinks=-1 must be an integer >= 0"),
    (["method=random", "method.budget.match=/no/such/run"], "match=/no/such/run: no results.parquet there"),
    (["method=draft_topk", "method.top_k=0"], "method.top_k=0 must be a positive integer"),
])
def test_bad_method_settings_are_refused_in_validation(overrides, fragment):
    from specattn.runs.validate import validate

    from .conftest import compose_config

    with pytest.raises(SpecAttnError) as error:
        validate(compose_config(*overrides))
    assert fragment in str(error.value)


def test_budget_precedence_in_configs(tmp_path):
    from specattn.methods import instantiate_method

    from .conftest import compose_config

    run = fake_run(tmp_path / "run", {"specattn p=0.95": 0.7})
    quest = instantiate_method(compose_config("method=quest", f"method.budget.match={run}",
                                              "method.budget.token_budget=8").method)
    assert quest.budget.kv_budget_frac == pytest.approx(0.3) and quest.label == "quest match=specattn p=0.95"
    assert instantiate_method(compose_config("method=streaming").method).label == "streaming token_budget=256 n_sinks=4"
