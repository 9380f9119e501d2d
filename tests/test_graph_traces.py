"""The graph decoder behind the reference decoder's interface (specattn.decode.graph_traces): per sequence the
same tokens, steps, accepted counts and KV reads (KVReads, key by key) as the reference engine, for dense,
SpecAttn, the oracle, and StreamingLLM / Quest with a different budget per sequence, stopping at an end-of-sequence
token; its refusals; and on the GPU the same traces from captured graphs in float32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from specattn.core.errors import SpecAttnError
from specattn.core.settings import Settings
from specattn.decode.engine import SpeculativeDecoder, prepare_for_decoding
from specattn.decode.graph_traces import GraphTraceDecoder, graph_settings
from specattn.methods import Budget, Dense, DraftTopK, OracleTopP, Quest, SpecAttn, StreamingLLM

from .availability import needs_gpu
from .test_graph_engine import CHUNK, GAMMA, load, mapping, prompts

NEW = 20


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    return load(tiny_model_dir, "cpu")


def settings(pair, eos: bool = False, **kw) -> Settings:
    return Settings(GAMMA, CHUNK, 2, "mean", mapping(pair), max_new_tokens=NEW, stop_at_eos=eos, **kw)


def traces(decoder, batch, methods):
    out = decoder.generate(decoder.prefill(batch), methods)
    return [(t.tokens, t.steps, t.kept, t.step_accepted, t.reads) for t in out.traces]


def eos_token(pair, batch, method=Dense()) -> int:
    """A token that ``method`` emits mid-way in sequence 0 (so stopping at it ends that sequence early)."""
    prepare_for_decoding(pair)
    out = traces(SpeculativeDecoder(pair, settings(pair)), batch, [method] * batch.shape[0])
    return out[0][0][NEW // 2]


def method_sets(n: int) -> list[list]:
    fracs = [0.25, 0.5, 0.8][:n]
    return [[Dense()] * n, [SpecAttn(0.7)] * n, [SpecAttn(0.95)] * n, [OracleTopP(0.8)] * n,
            [StreamingLLM(Budget.matching(f, "specattn p=0.7")) for f in fracs],
            [Quest(Budget(kv_budget_frac=f)) for f in fracs]]


def check_equal(reference_pair, graph_pair, batch, eos):
    s = settings(reference_pair, eos=eos is not None)
    ids = () if eos is None else (eos,)
    for methods in method_sets(batch.shape[0]):
        prepare_for_decoding(reference_pair)
        want = traces(SpeculativeDecoder(reference_pair, s, ids), batch, methods)
        got = traces(GraphTraceDecoder(graph_pair, s, ids), batch, methods)
        assert got == want, methods[0].label
        for tokens, *_, reads in got:
            assert 0 < len(tokens) <= NEW
            assert (reads.sparse_layer_reduction > 0) == (methods[0].name != "dense"), methods[0].label  # it selects
    return want


def test_graph_traces_equal_the_reference_engine_with_per_sequence_budgets(pair):
    batch = prompts(3, 150, 31)
    eos = eos_token(pair, batch)
    got = check_equal(pair, pair, batch, eos)  # the last set: Quest at three budgets
    assert got[0][0][-1] == eos or len(got[0][0]) == NEW
    reduction = [reads.sparse_layer_reduction for *_, reads in got]
    assert reduction[0] > reduction[1] > reduction[2] > 0  # each sequence read within its own budget


def test_graph_traces_stop_at_the_end_of_sequence_like_the_reference(pair):
    batch = prompts(2, 90, 5)
    eos = eos_token(pair, batch, SpecAttn(0.8))
    prepare_for_decoding(pair)
    s = settings(pair, eos=True)
    want = traces(SpeculativeDecoder(pair, s, (eos,)), batch, [SpecAttn(0.8)] * 2)
    got = traces(GraphTraceDecoder(pair, s, (eos,)), batch, [SpecAttn(0.8)] * 2)
    assert got == want
    assert want[0][0][-1] == eos and len(want[0][0]) <= NEW // 2 + 1


def test_a_specattn_rows_own_heads_decode_like_the_reference(pair):
    """``SpecAttn(heads="max")`` under a mean-aggregating run: the graph decoder aggregates by max for that row,
    as the reference decoder does, and not as the run's mean row does."""
    batch = prompts(2, 90, 7)
    s = settings(pair)
    prepare_for_decoding(pair)
    want = traces(SpeculativeDecoder(pair, s), batch, [SpecAttn(0.7, heads="max")] * 2)
    got = traces(GraphTraceDecoder(pair, s), batch, [SpecAttn(0.7, heads="max")] * 2)
    mean = traces(GraphTraceDecoder(pair, s), batch, [SpecAttn(0.7)] * 2)
    assert got == want and graph_settings(SpecAttn(0.7, heads="max"), s).head_agg == "max"
    assert [t[-1] for t in got] != [t[-1] for t in mean]  # the reads differ from the mean row's


def test_graph_settings_refuse_what_the_graph_decoder_cannot_run(pair):
    s = settings(pair)
    with pytest.raises(SpecAttnError, match="draft_topk"):
        graph_settings(DraftTopK(), s)
    with pytest.raises(SpecAttnError, match="token_budget"):
        graph_settings(Quest(Budget(token_budget=64)), s)
    with pytest.raises(SpecAttnError, match="temperature=0.7"):
        graph_settings(Dense(), dataclasses.replace(s, temperature=0.7))
    with pytest.raises(SpecAttnError, match="draft_reads=window"):
        graph_settings(Dense(), dataclasses.replace(s, draft_reads="window"))
    with pytest.raises(SpecAttnError, match="head_agg='kv_group'"):
        graph_settings(SpecAttn(0.7, heads="kv_group"), s)
    decoder = GraphTraceDecoder(pair, s)
    prefill = decoder.prefill(prompts(2, 40, 1))
    with pytest.raises(SpecAttnError, match="one method setting"):
        decoder.generate(prefill, [SpecAttn(0.7), SpecAttn(0.9)])


@needs_gpu
def test_cuda_graph_traces_in_float32_equal_the_reference_engine(pair, tiny_model_dir):
    batch = prompts(3, 150, 31)  # the CPU test's prompts, on which every sparse setting selects (seed 32: SpecAttn
    check_equal(pair, load(tiny_model_dir, "cuda"), batch, eos_token(pair, batch))  # p=0.95 kept all, H200 12-03)
    torch.cuda.empty_cache()
