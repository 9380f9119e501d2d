"""The graph decoder beyond SpecAttn: StreamingLLM and Quest with device-side chunk lists equal the CPU
engine token for token (float32, CPU), the draft read policies in their keep-everything settings decode
exactly like dense speculative decoding, their reads are what the policy says, and a fused Qwen2 pair
(q/k/v biases) decodes like the unfused one. GPU versions: graph replay equal to eager in bfloat16."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from specattn.core.settings import Settings
from specattn.decode.engine import SpeculativeDecoder, prepare_for_decoding
from specattn.decode.graph_engine import GraphDecoder, GraphSettings, chunks_holding, prefix_chunk_keys
from specattn.decode.quest_pages import QuestPages
from specattn.hooks.fused_llama import fuse_llama
from specattn.methods import Budget, Dense, Quest, StreamingLLM

from .availability import needs_gpu
from .test_graph_engine import CHUNK, GAMMA, NEW, load, mapping, prompts


def cpu_traces(pair, batch, method, gamma=GAMMA, new=NEW):
    prepare_for_decoding(pair)
    dec = SpeculativeDecoder(pair, Settings(gamma, CHUNK, 2, "mean", mapping(pair), max_new_tokens=new))
    traces = dec.generate(dec.prefill(batch), [method for _ in range(batch.shape[0])]).traces
    return [t.tokens for t in traces], [t.steps for t in traces], [t.kept for t in traces]


def graph_run(pair, batch, settings, new=NEW, graphs=False):
    dec = GraphDecoder(pair.draft, pair.verifier, settings, batch.shape[0], batch.shape[1] + new + 40)
    if graphs:
        dec.prefill(batch)
        dec.capture()
    out = dec.generate(batch, new, prefilled=graphs)
    return (out.tokens, out.steps, out.kept), dec


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    return load(tiny_model_dir, "cpu")


@pytest.mark.parametrize("frac", [0.3, 0.6])
def test_streaming_and_quest_on_the_device_equal_the_cpu_engine(pair, frac):
    batch = prompts(3, 120, 21)
    base = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), kv_budget_frac=frac)
    for verify, method in (("streaming", StreamingLLM(Budget(kv_budget_frac=frac))),
                           ("quest", Quest(Budget(kv_budget_frac=frac)))):
        got, dec = graph_run(pair, batch, dataclasses.replace(base, verify=verify))
        assert got == cpu_traces(pair, batch, method), verify
        kept, _ = dec.kept_fractions()
        assert 0.2 < kept < 0.9, (verify, kept)  # it really skips reads, near the budget


def test_quest_page_bounds_are_the_float32_extremes_of_the_committed_keys():
    """Bounds kept as keys are committed, in two folds (a partial page, then the rest of it and the next): each
    page's lo/hi are the exact per-dimension min/max of its committed bfloat16 keys, in float32; a page with none
    keeps +inf/-inf, and keys past ``stop`` are not folded."""
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(2, 2, 20, 4, generator=g).to(torch.bfloat16)  # (B, Hkv, cap, D)
    pages = QuestPages(2, 2, 5, 4, "cpu")
    pages.fold(keys, torch.tensor([0, 0]), torch.tensor([6, 3]), 4, 8)
    pages.fold(keys, torch.tensor([6, 3]), torch.tensor([11, 9]), 4, 8)
    assert pages.lo.dtype == torch.float32
    for b, stop in enumerate((11, 9)):
        for page in range(5):
            lo_key, hi_key = page * 4, min(page * 4 + 4, stop)
            if lo_key >= stop:
                assert torch.isinf(pages.lo[b, :, page]).all() and (pages.hi[b, :, page] == float("-inf")).all()
                continue
            block = keys[b, :, lo_key:hi_key].float()
            assert torch.equal(pages.lo[b, :, page], block.amin(dim=1)), (b, page)
            assert torch.equal(pages.hi[b, :, page], block.amax(dim=1)), (b, page)


def test_prefix_and_window_chunk_helpers():
    assert prefix_chunk_keys(torch.tensor([0, 5, 17]), 4, 8).tolist() == [[0, 0, 0, 0], [5, 0, 0, 0], [8, 8, 1, 0]]
    got = chunks_holding(torch.tensor([3, 0, 9]), torch.tensor([17, 0, 10]), 4, 8)
    assert got.tolist() == [[True, True, True, False], [False] * 4, [False, True, False, False]]


@pytest.mark.parametrize("reads", ["first_dense", "reuse", "window", "first_window"])
def test_draft_read_policies_that_keep_everything_decode_like_dense(pair, reads):
    batch = prompts(2, 100, 5)
    dense, _ = graph_run(pair, batch, GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair)))
    full = dict(p=1.0, draft_reads=reads, draft_refresh=3, draft_window=10_000, draft_sinks=0)
    for verify in ("dense", "specattn"):
        got, dec = graph_run(pair, batch, GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), verify=verify, **full))
        assert got == dense, (reads, verify)
        assert dec.kept_fractions()[1] == pytest.approx(1.0), (reads, verify)  # the draft read everything


@pytest.mark.parametrize("reads", ["first_dense", "reuse", "window", "first_window"])
def test_sparse_draft_reads_skip_reads_and_still_decode(pair, reads):
    batch = prompts(2, 160, 6)
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.6, draft_reads=reads, draft_refresh=4,
                             draft_window=48, draft_sinks=8)
    (tokens, steps, kept), dec = graph_run(pair, batch, settings)
    verifier_kept, draft_kept = dec.kept_fractions()
    assert all(len(t) == NEW for t in tokens) and draft_kept < 0.95 and verifier_kept < 0.95, (reads, draft_kept)
    if reads == "window":  # 8 sink keys (1 chunk) + 48 recent keys (6-7 chunks) of ~20 prefix chunks
        assert draft_kept < 0.6


def test_the_draft_kept_fraction_counts_the_sparse_forwards_prefix_reads_only(pair):
    """draft_kept is the roofline's (and the CPU engine's): the prefix share the sparse forwards read, so neither
    first_window's dense forward 0 nor the step's own chunks count (they made first_window's 32K batch-16 draft_kept
    29.7% where its window is 6.4% of the prefix), nor a reuse refresh step (the roofline adds those itself)."""
    window = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.6, draft_reads="first_window", draft_window=48,
                           draft_sinks=8)
    dec = GraphDecoder(pair.draft, pair.verifier, window, 2, 300)
    dec.reset_to(200, seed=1)
    dec.step()
    dec.record(dec.kept.tolist())
    # P = 200: 25 chunks of 8; the sinks [0, 8) are chunk 0, the window [152, 200) chunks 19-24
    assert dec.kept_fractions()[1] == pytest.approx(7 / 25)
    reuse = dataclasses.replace(window, p=0.2, draft_reads="reuse", draft_refresh=2)
    dec = GraphDecoder(pair.draft, pair.verifier, reuse, 2, 300)
    dec.reset_to(200, seed=1)
    dec.step()  # every sequence's step 0 is a refresh: read densely, not a sparse forward
    dec.record(dec.kept.tolist())
    assert math.isnan(dec.kept_fractions()[1])
    dec.step()  # step 1 reads the previous selection: counted
    dec.record(dec.kept.tolist())
    assert 0 < dec.kept_fractions()[1] < 1


@pytest.mark.parametrize("reads", ["first_dense", "reuse"])
def test_forced_draft_reads_are_redrawn_in_place(pair, reads):
    """The forced draft read set (decode_bench's control) is rewritten where the captured graph reads it: a
    second reset_to (as the bench does after capture) changes its contents, never its buffer, and the draft
    forwards read the new set (a stale buffer made the graph read ~all chunks at 25% kept on the H200)."""
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.9, draft_reads=reads,
                             forced_draft_density=0.25)
    dec = GraphDecoder(pair.draft, pair.verifier, settings, 2, 300)
    dec.reset_to(200, seed=1)
    buffer, first = dec.forced_base.data_ptr(), dec.forced_base.clone()
    dec.reset_to(200, seed=2)
    assert dec.forced_base.data_ptr() == buffer and not torch.equal(dec.forced_base, first)
    n_cols = math.ceil(200 / CHUNK)
    assert dec.forced_base[..., :n_cols].sum(-1).eq(round(0.25 * n_cols)).all()
    for _ in range(1 if reads == "first_dense" else 3):  # reuse: step 0 is a dense refresh
        dec.step()
        dec.record(dec.kept.tolist())
    kept = dec.kept_fractions()[1]  # first_dense: forward 0 reads everything, the others ~25% + own chunks
    assert kept < (0.5 if reads == "first_dense" else 0.75), kept


def test_first_dense_draft_rows_are_zero_outside_what_their_forward_read(pair):
    """The verifier's slots' rows 1 .. are zero outside their forwards' reads; a policy layer no verifier layer maps
    to (draft layer 0, with draft_dense_layers=0) has its row at P (the draft's selection) and no other row."""
    batch = prompts(1, 150, 9)
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.5, draft_reads="first_dense",
                             draft_dense_layers=0)
    dec = GraphDecoder(pair.draft, pair.verifier, settings, 1, 220)
    dec.prefill(batch)
    dec.step()
    p = dec.prev_last.item()  # the step's P
    own_only = [layer for layer in dec.policy_layers if layer not in mapping(pair)[2:]]
    assert own_only == [0] and dec.select_slots == len(dec.slots) - 1 and dec.slots[0] == dec.select_slots
    row = dec.rows[dec.slots[0], 0]
    assert row[0, : p + 1].sum() == pytest.approx(1.0, abs=1e-4) and not row[1:].any()
    for layer, slot in dec.slots.items():
        if layer not in dec.policy_layers or layer in own_only:
            continue
        read = dec.base_mask[slot, 0, 0]  # R_i from row P
        for f in range(1, GAMMA):
            row = dec.rows[slot, 0, f, : p + f + 1]
            chunks = read | chunks_holding(torch.tensor([p]), torch.tensor([p + f]), read.numel(), CHUNK)[0]
            allowed = chunks.repeat_interleave(CHUNK)[: p + f + 1].clone()  # R_i and the step's keys' chunks
            allowed[p:] = True
            assert row[~allowed].abs().max() == 0 and row[allowed].sum() == pytest.approx(1.0, abs=1e-4)


def tiny_qwen2(layers: int, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.3)
    model = Qwen2ForCausalLM(config).eval()
    for layer in model.model.layers:  # non-zero biases, so the fused bias matters
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            torch.nn.init.normal_(proj.bias, std=0.5)
    return model


def test_fused_qwen2_pair_with_biases_decodes_like_the_unfused_one():
    batch = prompts(2, 60, 4)
    runs = []
    for fused in (False, True):
        draft, verifier = tiny_qwen2(3, 1), tiny_qwen2(5, 2)
        if fused:
            assert fuse_llama(draft) == 3 and fuse_llama(verifier) == 5
        layer_map = (0, 0, 1, 1, 2)
        dec = GraphDecoder(draft, verifier, GraphSettings(GAMMA, CHUNK, 2, "mean", layer_map, 0.7), 2, 120)
        runs.append(dec.generate(batch, 20))
    assert runs[0].tokens == runs[1].tokens and runs[0].kept == runs[1].kept


@needs_gpu
@pytest.mark.parametrize("verify,reads", [("streaming", "dense"), ("quest", "dense"), ("specattn", "first_dense"),
                                          ("specattn", "reuse"), ("dense", "window"), ("specattn", "first_window")])
def test_cuda_graph_replay_equals_eager_for_every_mode_in_bfloat16(tiny_model_dir, verify, reads):
    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    batch = prompts(3, 150, 13)
    settings = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(cuda_pair), 0.8, verify=verify, kv_budget_frac=0.4,
                             draft_reads=reads, draft_refresh=3, draft_window=64, draft_sinks=8)
    eager, eager_dec = graph_run(cuda_pair, batch, settings, new=30)
    graph, dec = graph_run(cuda_pair, batch, settings, new=30, graphs=True)
    assert graph == eager
    assert dec.kept_fractions()[0 if verify != "dense" else 1] < 0.95
    # the read counts, updated inside the captured phases, replay as they count eagerly
    assert dec.kept_fractions() == pytest.approx(eager_dec.kept_fractions(), nan_ok=True)


@needs_gpu
def test_the_one_launch_merge_decodes_in_graphs_as_eagerly_gpu(tiny_model_dir):
    """Every attention launch fused (a list's last split program merges it): captured graphs replay it (its tickets
    back at zero after each launch) with the eager tokens, and the two-launch kernel gives the same tokens (the same
    partials merged in another order: only a bfloat16 near-tie of two logits could part them)."""
    from specattn.gpu.kernels.split_config import SplitConfig

    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    batch = prompts(3, 150, 19)
    fused = SplitConfig(fused_merge=True)
    base = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(cuda_pair), 0.8, draft_reads="first_window", draft_window=64,
                         draft_sinks=8)
    settings = dataclasses.replace(base, split=fused, sparse_split=fused, draft_split=fused)
    eager, _ = graph_run(cuda_pair, batch, settings, new=30)
    graph, dec = graph_run(cuda_pair, batch, settings, new=30, graphs=True)
    assert graph == eager and dec.kept_fractions()[0] < 0.95
    assert graph_run(cuda_pair, batch, base, new=30, graphs=True)[0] == graph


@needs_gpu
@pytest.mark.parametrize("reads", ["first_window", "first_dense"])
@pytest.mark.parametrize("agg", ["mean", "max"])
def test_row0_from_saved_scores_equals_the_row_from_the_keys_gpu(tiny_model_dir, reads, agg):
    """``row0_from_scores`` (the default): after forward 0, row 0 of every slot from the scores its attention saved
    equals the row the draft-row kernel computes from the keys; decoding with either (graphs) gives the same tokens
    on these prompts."""
    from specattn.gpu.draft_rows import draft_rows

    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    batch = prompts(3, 150, 17)
    settings = GraphSettings(GAMMA, CHUNK, 2, agg, mapping(cuda_pair), 0.8, draft_reads=reads, draft_window=64,
                             draft_sinks=8)
    dec = GraphDecoder(cuda_pair.draft, cuda_pair.verifier, settings, 3, 200)
    assert dec.row_scores is not None
    dec.prefill(batch)
    dec._draft_phase()
    got = dec.rows[:, :, 0].clone()
    want = torch.full_like(dec.rows[:, :, :1], float("nan"))
    draft_rows(dec.row_q[:, :, :, :1], dec.row_lse[:, :, :, :1], dec.d_cache.keys, dec.layer_slots, dec.first, want,
               dec.draft_scale, agg)
    assert (got - want[:, :, 0]).abs().max() <= 1e-4 * want.abs().max()
    past = torch.arange(got.shape[2], device=got.device) >= dec.first.long()[:, None]  # (B, W)
    assert got[:, past].eq(0).all() and not got.isnan().any()
    keys_path, _ = graph_run(cuda_pair, batch, dataclasses.replace(settings, row0_from_scores=False), new=30,
                             graphs=True)
    scores_path, _ = graph_run(cuda_pair, batch, settings, new=30, graphs=True)
    assert scores_path == keys_path


@needs_gpu
def test_cuda_streaming_and_quest_in_float32_equal_the_cpu_engine(pair, tiny_model_dir):
    cuda_pair = load(tiny_model_dir, "cuda")
    batch = prompts(2, 120, 22)
    base = GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), kv_budget_frac=0.4)
    for verify, method in (("streaming", StreamingLLM(Budget(kv_budget_frac=0.4))),
                           ("quest", Quest(Budget(kv_budget_frac=0.4)))):
        got, _ = graph_run(cuda_pair, batch, dataclasses.replace(base, verify=verify), graphs=True)
        assert got == cpu_traces(pair, batch, method), verify


def policy_traces(pair, batch, p, policy: dict):
    """The CPU engine's traces of ``batch`` under the draft read ``policy`` (SpecAttn ``p``, or a dense verifier
    for None), and the graph decoder's (tokens, steps, accepted counts) for the same settings."""
    from specattn.methods import SpecAttn

    settings = Settings(GAMMA, CHUNK, 2, "mean", mapping(pair), max_new_tokens=NEW, draft_p=0.6, **policy)
    prepare_for_decoding(pair)
    dec = SpeculativeDecoder(pair, settings)
    method = Dense() if p is None else SpecAttn(p)
    traces = dec.generate(dec.prefill(batch), [method, method]).traces
    got, _ = graph_run(pair, batch, GraphSettings(GAMMA, CHUNK, 2, "mean", mapping(pair), 0.6,
                                                  verify="dense" if p is None else "specattn", **policy))
    return traces, got


def as_runs(traces) -> tuple:
    return [t.tokens for t in traces], [t.steps for t in traces], [t.kept for t in traces]


@pytest.mark.parametrize("p", [None, 0.6])
def test_reuse_with_an_acceptance_triggered_refresh_equals_the_cpu_engine(pair, p):
    """draft_refresh_below=3: a step after one that kept fewer than 3 drafted tokens refreshes (the graph decoder
    from its device-side accepted counts, the CPU engine from the host's), besides every 4th step; the trigger
    fires (fewer sparse draft forwards than the schedule alone gives)."""
    batch = prompts(2, 150, 33)
    policy = dict(draft_reads="reuse", draft_refresh=4, draft_window=40, draft_sinks=8)
    traces, got = policy_traces(pair, batch, p, {**policy, "draft_refresh_below": 3})
    assert got == as_runs(traces)
    plain, _ = policy_traces(pair, batch, p, policy)
    assert sum(t.draft_reads.sparse_forward_prefix for t in traces) < sum(t.draft_reads.sparse_forward_prefix for t in plain)


@pytest.mark.parametrize("reads", ["first_dense", "window", "first_window"])
def test_draft_dense_layers_equal_the_cpu_engine(pair, reads):
    """``draft_dense_layers=0``: every draft layer under the policy, in both decoders alike; it reads less than
    the default (the first two layers dense)."""
    policy = dict(draft_reads=reads, draft_refresh=3, draft_window=40, draft_sinks=8)
    traces, got = policy_traces(pair, prompts(2, 150, 41), 0.6, {**policy, "draft_dense_layers": 0})
    assert got == as_runs(traces)
    default, _ = policy_traces(pair, prompts(2, 150, 41), 0.6, policy)
    read = lambda ts: sum(t.draft_reads.reads for t in ts)  # noqa: E731
    assert read(traces) < read(default)


@pytest.mark.parametrize("reads", ["first_dense", "reuse", "window", "first_window"])
@pytest.mark.parametrize("p", [None, 0.6])
def test_draft_read_policies_equal_the_cpu_engine(pair, reads, p):
    """Token for token, steps and accepted counts: the graph decoder's draft policies (device-side lists,
    rows masked by what their forwards read) and the CPU engine's (specattn.decode.draft_reads)."""
    traces, got = policy_traces(pair, prompts(2, 150, 31), p,
                                dict(draft_reads=reads, draft_refresh=3, draft_window=40, draft_sinks=8))
    assert got == as_runs(traces)
