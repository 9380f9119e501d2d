"""The draft's own read policies (decode.draft_reads): keep-everything settings decode exactly like the dense
draft, every draft row reads exactly the chunks its policy says (re-derived here from the rows themselves),
the read accounting and the roofline by hand, the refresh schedule, the window's chunks, the checks and the CLI."""

import math
from dataclasses import dataclass, field, replace

import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.checks import SettingError
from specattn.core.layout import StepLayout
from specattn.core.nucleus_reference import nucleus_mask_reference
from specattn.core.settings import Settings
from specattn.core.visibility import draft_visible_keys
from specattn.decode import roofline
from specattn.decode.draft_reads import (
    DraftKVReads,
    DraftReadPolicy,
    chunks_holding,
    prefix_keys,
    window_chunks,
)
from specattn.decode.engine import SpeculativeDecoder, prepare_for_decoding
from specattn.methods import Dense, SpecAttn
from specattn.models.pair import ModelPair, layer_subset

from .conftest import run_cli

CHUNK, GAMMA = 8, 4
KEEP_EVERYTHING = {"first_dense": {"draft_p": 1.0}, "reuse": {"draft_p": 1.0, "draft_refresh": 3},
                   "window": {"draft_window": 4096, "draft_sinks": 0},
                   "first_window": {"draft_window": 4096, "draft_sinks": 0}}
SPARSE = {"first_dense": {"draft_p": 0.6}, "reuse": {"draft_p": 0.6, "draft_refresh": 3},
          "window": {"draft_window": 24, "draft_sinks": 4}, "first_window": {"draft_window": 24, "draft_sinks": 4}}
POLICIES = ["first_dense", "reuse", "window", "first_window"]


def settings(pair, gamma=GAMMA, new=24, mapping=None, **kwargs) -> Settings:
    if mapping is None:
        mapping = layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return Settings(gamma, CHUNK, 2, "mean", tuple(mapping), max_new_tokens=new, **kwargs)


def decoder(pair, **kwargs) -> SpeculativeDecoder:
    prepare_for_decoding(pair)
    return SpeculativeDecoder(pair, settings(pair, **kwargs))


def prompts(batch, length, seed=0):
    return torch.randint(3, 259, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def self_pair(tiny_pair):
    """A draft equal to the verifier (all 6 layers): it accepts a lot, so steps advance by several tokens."""
    verifier = tiny_pair.verifier
    everything = list(range(verifier.config.num_hidden_layers))
    return ModelPair("same", layer_subset(verifier, everything), verifier, tiny_pair.tokenizer, everything)


@dataclass(frozen=True)
class Recorded(SpecAttn):
    """SpecAttn that records every draft row it is handed: ``(P, layer, row) -> probs (Hq, K)``."""

    seen: dict = field(default_factory=dict, compare=False, metadata={"setting": False})

    def start(self, context):
        active = super().start(context)
        observe, begin = active.observe_draft, active.begin_steps

        def recording(layer, probs, rows):
            for i, row in enumerate(rows.tolist()):
                self.seen[(active.layout.prefill_len, layer, row)] = probs[:, i].clone()
            observe(layer, probs, rows)

        active.observe_draft = recording
        return active


def traces_equal(a, b) -> bool:
    return [(t.tokens, t.steps, t.kept, t.reads) for t in a] == [(t.tokens, t.steps, t.kept, t.reads) for t in b]


@pytest.fixture(scope="module")
def dense_draft_runs(tiny_pair, self_pair):
    """Per pair: its prefill of two prompts, and dense speculative decoding with SpecAttn p=1 (recorded rows)."""
    runs = []
    for pair in (tiny_pair, self_pair):
        dense = decoder(pair, new=20)
        prefill = dense.prefill(prompts(2, 60, seed=1))
        method = Recorded(1.0)
        runs.append((pair, prefill, method, dense.generate(prefill, [method, SpecAttn(1.0)]).traces))
    return runs


@pytest.mark.parametrize("policy", POLICIES)
def test_keep_everything_decodes_exactly_like_the_dense_draft(dense_draft_runs, policy):
    for pair, prefill, reference_method, reference in dense_draft_runs:
        method = Recorded(1.0)
        out = decoder(pair, new=20, draft_reads=policy, **KEEP_EVERYTHING[policy]).generate(prefill,
                                                                                            [method, SpecAttn(1.0)])
        assert traces_equal(out.traces, reference), policy
        assert all(t.draft_reads.reduction == 0.0 and t.draft_reads.dense_reads > 0 for t in out.traces)
        assert method.seen.keys() == reference_method.seen.keys()
        assert all(torch.equal(method.seen[k], reference_method.seen[k]) for k in method.seen)  # bit for bit
    assert sum(t.kept for t in reference) > 10  # the self pair accepts: steps of several tokens were compared


@pytest.mark.parametrize("policy", POLICIES)
def test_a_sparse_draft_keeps_dense_verification_lossless_and_reads_less(self_pair, policy):
    batch = prompts(2, 90, seed=2)
    dense = decoder(self_pair, new=30)
    prefill = dense.prefill(batch)
    reference = dense.generate(prefill, [Dense(), Dense()]).traces
    out = decoder(self_pair, new=30, draft_reads=policy, **SPARSE[policy]).generate(prefill, [Dense(), Dense()])
    assert [t.tokens for t in out.traces] == [t.tokens for t in reference]  # greedy: the verifier's output
    for trace in out.traces:
        assert 0.1 < trace.draft_reads.sparse_layer_reduction < 1 and trace.draft_reads.reduction > 0
        assert 0 < trace.draft_reads.kept < 1
        assert trace.reads.reduction == 0.0
    assert all(t.draft_reads.reduction == 0 and math.isnan(t.draft_reads.kept) for t in reference)


@pytest.mark.parametrize("policy", ["first_dense", "reuse"])
def test_a_batch_gives_each_prompt_what_a_run_of_its_own_gives(tiny_pair, policy):
    batch = torch.cat([prompts(2, 50, seed=5), prompts(1, 60, seed=6)[:, :50]])
    dec = decoder(tiny_pair, gamma=3, new=12, temperature=1.0, draft_reads=policy, **SPARSE[policy])
    together = dec.generate(dec.prefill(batch), [SpecAttn(0.7) for _ in range(3)], seed=11).traces
    for b in range(3):
        alone = dec.generate(dec.prefill(batch[b : b + 1]), [SpecAttn(0.7)], seed=11 + b).traces[0]
        assert (alone.tokens, alone.steps, alone.reads) == (together[b].tokens, together[b].steps, together[b].reads)
        assert alone.draft_reads == together[b].draft_reads and alone.draft_reads.sparse_forward_reads > 0, b


def nucleus_chunks(probs: torch.Tensor, p: float, prefix: int) -> torch.Tensor:
    """The spec, independently: the prefix chunks holding a key of the head-mean row's nucleus (a key of the
    step's own in the prefix's partial last chunk selects that chunk, as in the verifier's selection)."""
    keys = nucleus_mask_reference(probs.mean(dim=0), p).nonzero().squeeze(1)
    chunks = torch.zeros(math.ceil((prefix + GAMMA) / CHUNK), dtype=torch.bool)
    chunks[keys // CHUNK] = True
    return chunks[: math.ceil(prefix / CHUNK)]


def expected_reads(policy: str, seen: dict, layer: int, options: dict) -> dict[int, torch.Tensor | None]:
    """Prefix ``P`` of each step -> the chunks the step's sparse forwards read in ``layer`` (None: dense)."""
    prefixes = sorted({key[0] for key in seen})
    reads, selection = {}, None
    for step, p in enumerate(prefixes):
        n = math.ceil(p / CHUNK)
        rows = {row: seen[(p, layer, row)] for row in range(p, p + GAMMA) if (p, layer, row) in seen}
        if policy == "first_dense":  # the row at P's nucleus, and the chunk of the last accepted token P - 1
            reads[p] = nucleus_chunks(rows[p], options["draft_p"], p)
            reads[p][(p - 1) // CHUNK] = True
        elif policy in ("window", "first_window"):
            first = torch.arange(n) * CHUNK
            reads[p] = (first < options["draft_sinks"]) | (first + CHUNK > p - options["draft_window"])
        else:
            refresh = step % options["draft_refresh"] == 0
            reads[p] = None if refresh else torch.cat([selection, torch.zeros(n - len(selection), dtype=torch.bool)]) | (
                torch.arange(n) * CHUNK + CHUNK > prefixes[step - 1])
            selection = torch.zeros(n, dtype=torch.bool)
            for probs in rows.values():
                selection |= nucleus_chunks(probs, options["draft_p"], p)
    return reads


@pytest.mark.parametrize("policy", POLICIES)
def test_each_draft_row_reads_exactly_what_its_policy_says(self_pair, policy):
    options = SPARSE[policy]
    method = Recorded(0.8)
    shifted = (0, 0, 1, 2, 3, 4)  # sparse verifier layers 2..5 read draft layers 1..4 (1 reads densely)
    dec = decoder(self_pair, new=30, mapping=shifted, draft_reads=policy, **options)
    dec.generate(dec.prefill(prompts(1, 90, seed=3)), [method])
    layers = sorted({key[1] for key in method.seen})
    assert any(layer >= 2 for layer in layers) and any(layer < 2 for layer in layers)
    skipped = 0
    for layer in layers:
        reads = expected_reads(policy, method.seen, layer, options) if layer >= 2 else None
        for (p, seen_layer, row), probs in method.seen.items():
            if seen_layer != layer:
                continue
            chunks = None if reads is None or (policy in ("first_dense", "first_window") and row == p) else reads[p]
            width = probs.shape[-1]
            visible = (torch.arange(width) <= row)[None] if chunks is None else draft_visible_keys(
                torch.tensor([row]), p, chunks, CHUNK, width)
            assert (probs[:, ~visible[0]] == 0).all(), (policy, layer, p, row)
            torch.testing.assert_close(probs.sum(dim=-1), torch.ones(probs.shape[0]))
            assert (probs[:, visible[0]] > 0).float().mean() > 0.99
            skipped += int((~visible[0, :row + 1]).sum())
    assert skipped > 100  # the policy really skipped keys


def test_draft_visibility_by_hand():
    chunks = torch.tensor([True, False, False])  # keys 0-3 read; prefix [0, 10), chunk size 4
    visible = draft_visible_keys(torch.tensor([9, 10, 12]), 10, chunks, 4, 13)
    assert visible[0].nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 9]  # the row at P - 1 sees itself
    assert visible[1].nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 10]  # P - 1's chunk is not read
    assert visible[2].nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 10, 11, 12]


def walk(policy: DraftReadPolicy, prefix: int, rows: dict[int, torch.Tensor] | None = None, counts=None):
    """One step of ``policy`` without a model: each forward's reads, feeding ``rows[f]`` (probs ``(Hq, K)``
    of the draft row at ``prefix + f``) to every layer that asks."""
    s = policy.settings
    policy.begin_step(StepLayout(prefix + s.gamma + 2, prefix, s.gamma, s.chunk_size))
    plans = []
    for forward in range(s.gamma):
        plans.append(policy.reads(forward))
        for layer, sinks in policy.row_sinks(forward).items():
            for sink in sinks:
                sink(layer, rows[forward][:, None], torch.tensor([prefix + forward]))
    policy.end_step(counts)
    return plans


def one_hot_row(width: int, keys: list[int], heads: int = 2) -> torch.Tensor:
    row = torch.zeros(heads, width)
    row[:, keys] = 1.0 / len(keys)
    return row


def test_window_reads_and_accounting_by_hand():
    s = Settings(3, 4, 1, "mean", (0,), draft_reads="window", draft_sinks=2, draft_window=5)
    counts = DraftKVReads()
    plans = walk(DraftReadPolicy(s, n_draft_layers=3, draft_kv_heads=2), 14, counts=counts)
    # prefix [0, 14): chunks 0..3 (the last holds keys 12, 13); sinks [0, 2) -> chunk 0; window [9, 14) -> 2, 3
    assert all(plan.keys() == {1, 2} and plan[1].tolist() == [True, False, True, True] for plan in plans)
    assert prefix_keys(plans[0][1], 14, 4) == 4 + 4 + 2
    dense = (15 + 16 + 17) * 2  # per layer: each forward's last row (14, 15, 16) sees 15, 16, 17 keys; 2 KV heads
    sparse = (11 + 12 + 13) * 2  # 10 prefix keys + the forward's own keys
    assert (counts.reads, counts.dense_reads) == (dense + 2 * sparse, 3 * dense)
    assert (counts.sparse_layer_reads, counts.sparse_layer_dense_reads) == (2 * sparse, 2 * dense)
    assert (counts.sparse_forward_reads, counts.sparse_forward_prefix) == (3 * 2 * 10 * 2, 3 * 2 * 14 * 2)
    assert counts.kept == pytest.approx(10 / 14)


def test_draft_dense_layers_sets_which_layers_follow_the_policy():
    """``draft_dense_layers`` (default: dense_layers) moves the boundary: 0 puts every draft layer under the
    window, 2 leaves only layer 2; the reads and their accounting follow."""
    for n_dense, policy_layers in ((None, {1, 2}), (0, {0, 1, 2}), (2, {2})):
        s = Settings(3, 4, 1, "mean", (0,), draft_reads="window", draft_sinks=2, draft_window=5,
                     draft_dense_layers=n_dense)
        counts = DraftKVReads()
        plans = walk(DraftReadPolicy(s, n_draft_layers=3, draft_kv_heads=2), 14, counts=counts)
        assert all(plan.keys() == policy_layers for plan in plans), n_dense
        dense, sparse = (15 + 16 + 17) * 2, (11 + 12 + 13) * 2  # per layer, as in the test above
        n = len(policy_layers)
        assert (counts.reads, counts.dense_reads) == ((3 - n) * dense + n * sparse, 3 * dense), n_dense
        assert counts.sparse_forward_reads == 3 * n * 10 * 2, n_dense


def test_first_window_reads_densely_first_then_the_window_and_counts_so():
    s = Settings(3, 4, 1, "mean", (0,), draft_reads="first_window", draft_sinks=2, draft_window=5)
    counts = DraftKVReads()
    policy = DraftReadPolicy(s, n_draft_layers=3, draft_kv_heads=2)
    plans = walk(policy, 14, counts=counts)
    assert policy.row_sinks(0) == {} and plans[0] is None  # no selection of its own: forward 0 is dense
    # forwards 1, 2: the window of test_window_reads_and_accounting_by_hand (chunks 0, 2, 3: 10 prefix keys)
    assert all(plan.keys() == {1, 2} and plan[1].tolist() == [True, False, True, True] for plan in plans[1:])
    dense = (15 + 16 + 17) * 2
    sparse = (15 + 12 + 13) * 2  # forward 0 reads its 15 keys, forwards 1, 2: 10 prefix keys + own keys
    assert (counts.reads, counts.dense_reads) == (dense + 2 * sparse, 3 * dense)
    assert (counts.sparse_forward_reads, counts.sparse_forward_prefix) == (2 * 2 * 10 * 2, 2 * 2 * 14 * 2)
    assert counts.kept == pytest.approx(10 / 14)


def test_first_dense_selects_from_the_first_forward_and_counts_it_dense():
    s = Settings(3, 4, 1, "mean", (0,), draft_reads="first_dense", draft_p=0.9)
    counts = DraftKVReads()
    rows = {0: one_hot_row(15, [5, 13])}  # the row at P = 14 over keys [0, 14]: chunks 1 and 3
    plans = walk(DraftReadPolicy(s, n_draft_layers=2, draft_kv_heads=1), 14, rows, counts)
    assert plans[0] is None and [plan[1].tolist() for plan in plans[1:]] == [[False, True, False, True]] * 2
    # layer 0 dense: 15 + 16 + 17; layer 1: 15, then 6 prefix keys (4 + 2) + 2, + 3
    assert (counts.reads, counts.dense_reads) == ((15 + 16 + 17) + (15 + 8 + 9), 2 * (15 + 16 + 17))
    rows = {0: one_hot_row(17, [16])}  # all mass on the row's own key, in a chunk of no prefix key
    plans = walk(DraftReadPolicy(s, n_draft_layers=2, draft_kv_heads=1), 16, rows)
    assert plans[1][1].tolist() == [False, False, False, True]  # only the chunk of key P - 1 = 15


def test_reuse_refreshes_every_k_steps_and_reads_the_last_selection_plus_the_new_tokens():
    s = Settings(2, 4, 0, "max", (0,), draft_reads="reuse", draft_p=0.5, draft_refresh=3)
    policy = DraftReadPolicy(s, n_draft_layers=1, draft_kv_heads=1)
    counts = DraftKVReads()
    history = []
    prefixes = [10, 13, 14, 18, 21]
    for step, p in enumerate(prefixes):
        rows = {0: one_hot_row(p + 1, [1, p]), 1: one_hot_row(p + 2, [5 + step])}  # a key of chunk 0; 1 or 2
        history.append(walk(policy, p, rows, counts if step == 1 else None))
    assert history[0] == [None, None] and history[3] == [None, None]  # steps 0 and 3 refresh
    # step 1 (P = 13): step 0 (P = 10) chose chunks 0 (key 1), 2 (key 10, the row's own key, in chunk [8, 12)
    # which holds prefix keys 8, 9), 1 (key 5); the new tokens [10, 13) lie in chunks 2, 3
    assert [plan[0].tolist() for plan in history[1]] == [[True, True, True, True]] * 2
    # step 2 (P = 14): step 1 chose chunks 0 (key 1), 3 (key 13), 1 (key 6); new tokens [13, 14) -> chunk 3
    assert [plan[0].tolist() for plan in history[2]] == [[True, True, False, True]] * 2
    # step 4 (P = 21): step 3 (a refresh, P = 18) chose chunks 0 (key 1), 4 (key 18, in [16, 20)), 2 (key 8);
    # new tokens [18, 21) -> chunks 4, 5
    assert history[4][0][0].tolist() == [True, False, True, False, True, True]
    assert counts.sparse_forward_prefix == 2 * 13 and counts.sparse_forward_reads == 2 * 13


def test_reuse_refreshes_after_a_step_that_accepted_too_little():
    """draft_refresh_below=2: the step after one that accepted 0 or 1 drafted tokens reads densely, besides the
    every-k-steps schedule; one that accepted 2 or more does not trigger it."""
    s = Settings(2, 4, 0, "max", (0,), draft_reads="reuse", draft_p=0.5, draft_refresh=10, draft_refresh_below=2)
    policy = DraftReadPolicy(s, n_draft_layers=1, draft_kv_heads=1)
    dense = []
    for step, (p, kept) in enumerate([(10, 2), (13, 1), (15, 2), (18, 0), (19, 2)]):
        rows = {0: one_hot_row(p + 1, [1, p]), 1: one_hot_row(p + 2, [5])}
        dense.append(walk(policy, p, rows, None) == [None, None])
        policy.accepted(kept)
    assert dense == [True, False, True, False, True]  # step 0 (schedule), 2 after kept 1, 4 after kept 0


@pytest.mark.parametrize("below", [0, 3])
def test_acceptance_triggered_refresh_at_every_step_is_the_dense_draft(dense_draft_runs, below):
    """draft_refresh_below above gamma refreshes after every step: reuse then reads everything (tokens, steps,
    reads equal the dense draft's, draft reduction 0); at 0 the schedule alone (every 2nd step) reads less."""
    pair, prefill, _, reference = dense_draft_runs[1]
    out = decoder(pair, new=20, draft_reads="reuse", draft_refresh=2, draft_p=0.5,
                  draft_refresh_below=GAMMA + 1 if below else 0).generate(prefill, [SpecAttn(1.0), SpecAttn(1.0)])
    if below:
        assert traces_equal(out.traces, reference)
        assert all(t.draft_reads.reduction == 0.0 for t in out.traces)
    else:
        assert all(t.draft_reads.reduction > 0.0 for t in out.traces)


def test_window_chunks_agree_with_the_rooflines_window_keys():
    for prefix in range(1, 80, 3):
        for sinks in (0, 1, 4, 9):
            for window in (1, 5, 16, 40, 200):
                for size in (1, 4, 16):
                    chunks = window_chunks(prefix, sinks, window, size)
                    assert prefix_keys(chunks, prefix, size) == roofline.window_keys(prefix, sinks, window, size)
    assert chunks_holding(3, 9, 4, 4).tolist() == [True, True, True, False]


def test_step_bytes_of_each_draft_policy_by_hand():
    v = roofline.ModelShape(layers=4, hidden=8, intermediate=8, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=False,
                            dtype_bytes=2)
    d = replace(v, layers=3)
    k, layer_kv = 4 * 2, 2 * 4 * 2  # K of one token in one layer; K + V
    common = dict(batch=1, prefix=100, gamma=3, dense_layers=1, chunk_size=16)
    dense_keys = 101 + 102 + 103  # per draft layer; kept_keys(100, 0.25) = 2 chunks of 7 = 32 keys
    dense = roofline.step_bytes(v, d, **common)
    assert dense == roofline.step_bytes(v, d, **common, draft_reads="dense")
    assert dense["draft_kv"] == (3 * dense_keys + 3 * 3) * layer_kv
    first = roofline.step_bytes(v, d, **common, draft_reads="first_dense", draft_kept=0.25)
    assert first["draft_kv"] == (dense_keys + 2 * (101 + (32 + 2) + (32 + 3)) + 9) * layer_kv
    assert first["draft_select_k"] == 2 * 101 * k and first["draft_select"] == 2 * 101 * 3 * 4 + 2 * 7 * 2 * 4
    reuse = roofline.step_bytes(v, d, **common, draft_reads="reuse", draft_kept=0.25, draft_refresh=4)
    sparse_keys = (32 + 1) + (32 + 2) + (32 + 3)
    assert reuse["draft_kv"] == (dense_keys + 2 * (dense_keys + 3 * sparse_keys) / 4 + 9) * layer_kv
    assert reuse["draft_select_k"] == 2 * ((100 + 3) + 3 * (32 + 3)) / 4 * k
    assert reuse["draft_select"] == 2 * 3 * 103 * 3 * 4 + 2 * 3 * 7 * 2 * 4
    window = roofline.step_bytes(v, d, **common, draft_reads="window", draft_sinks=4, draft_window=20, kept=0.25,
                                 needed_layers=2)
    assert roofline.window_keys(100, 4, 20, 16) == 16 + (100 - 80)  # chunk 0; chunks 5, 6 hold [80, 100)
    assert window["draft_kv"] == (dense_keys + 2 * (37 + 38 + 39) + 9) * layer_kv
    assert window["draft_rows_k"] == 2 * (36 + 3) * k and "draft_select" not in window
    assert window["total"] == sum(x for key, x in window.items() if key != "total")
    first_window = roofline.step_bytes(v, d, **common, draft_reads="first_window", draft_sinks=4, draft_window=20,
                                       kept=0.25, needed_layers=2)
    assert first_window["draft_kv"] == (dense_keys + 2 * (101 + 38 + 39) + 9) * layer_kv
    assert first_window["draft_rows_k"] == 2 * 103 * k and "draft_select" not in first_window  # row at P: dense
    # row 0 from forward 0's saved scores (2 heads x float32, written and read): the other rows read their forwards' keys
    scored = roofline.step_bytes(v, d, **common, draft_reads="first_window", draft_sinks=4, draft_window=20,
                                 kept=0.25, needed_layers=2, row0_from_scores=True)
    assert scored["draft_rows_k"] == 2 * (36 + 3) * k and scored["row0_scores"] == 2 * 101 * 2 * 2 * 4
    scored = roofline.step_bytes(v, d, **common, draft_reads="first_dense", draft_kept=0.25, row0_from_scores=True)
    assert "draft_select_k" not in scored and scored["row0_scores"] == 2 * 101 * 2 * 2 * 4
    assert scored["draft_select"] == first["draft_select"]
    assert roofline.step_bytes(v, d, **common, draft_reads="window", row0_from_scores=True) == roofline.step_bytes(
        v, d, **common, draft_reads="window")  # no row 0 of its own
    all_window = roofline.step_bytes(v, d, **common, draft_reads="window", draft_sinks=4, draft_window=20, kept=0.25,
                                     needed_layers=2, draft_dense_layers=0)  # layer 0 windowed too
    assert all_window["draft_kv"] == (3 * (37 + 38 + 39) + 9) * layer_kv
    assert roofline.window_keys(100, 4, 200, 16) == 100 and roofline.window_keys(100, 0, 20, 16) == 20
    with pytest.raises(ValueError, match="draft_kept"):
        roofline.step_bytes(v, d, **common, draft_reads="reuse")
    # reuse with the verifier selecting from 2 draft layers, 1 of them a policy layer (its rows computed once)
    both = dict(common, draft_reads="reuse", draft_kept=0.25, draft_refresh=4, kept=0.25, needed_layers=2)
    apart, shared = roofline.step_bytes(v, d, **both), roofline.step_bytes(v, d, **both, shared_layers=1)
    row_k = ((100 + 3) + 3 * (32 + 3)) / 4 * k  # one layer's amortised row keys, as reuse's draft_select_k
    assert apart["draft_rows_k"] == round(2 * row_k) and shared["draft_rows_k"] == round(row_k)
    assert apart["selection"] == 2 * shared["selection"] == 2 * (3 * 103 * 3 * 4 + 3 * 7 * 2 * 4)
    assert apart["draft_select"] == shared["draft_select"] and apart["draft_kv"] == shared["draft_kv"]
    assert shared["total"] == sum(x for key, x in shared.items() if key != "total")
    # first_dense: the draft's row at P is the verifier's row 0 as well; the counts do not depend on sharing
    first_both = dict(both, draft_reads="first_dense")
    assert roofline.step_bytes(v, d, **first_both, shared_layers=1) == roofline.step_bytes(v, d, **first_both)
    for bad in (3, -1):
        with pytest.raises(ValueError, match=f"shared_layers={bad}"):
            roofline.step_bytes(v, d, **both, shared_layers=bad)


def test_bad_draft_settings_are_refused_in_one_line(tiny_pair):
    for kwargs, text in [({"draft_reads": "sparse"}, "decode.draft_reads='sparse' is unknown"),
                         ({"draft_reads": "reuse", "draft_refresh": 0}, "decode.draft_refresh=0 must be a positive"),
                         ({"draft_reads": "window", "draft_window": 0}, "decode.draft_window=0"),
                         ({"draft_reads": "first_dense", "draft_p": 1.5}, "decode.draft_p=1.5"),
                         ({"draft_reads": "first_dense", "head_agg": "kv_group"}, "head_agg='kv_group' cannot"),
                         ({"draft_reads": "reuse", "draft_refresh_below": -1}, "decode.draft_refresh_below=-1"),
                         ({"draft_reads": "window", "draft_dense_layers": -1}, "decode.draft_dense_layers=-1")]:
        s = replace(settings(tiny_pair), **kwargs)
        with pytest.raises(SettingError, match=text) as error:
            DraftReadPolicy.for_pair(tiny_pair, s)
        assert "\n" not in str(error.value)
    DraftReadPolicy.for_pair(tiny_pair, replace(settings(tiny_pair), head_agg="kv_group"))  # dense: any head_agg


def test_run_decode_with_a_draft_policy_end_to_end(tiny_model_dir, tmp_path):
    import pandas as pd

    args = ["experiment=decode", "model=tiny_random", f"model.verifier.path={tiny_model_dir}", "dataset.num_samples=2",
            "decode.prompt_len=80", "decode.max_new_tokens=12", "p=0.7", "logger=none", "progress=false"]
    env = {"SPECATTN_OUTPUTS": str(tmp_path)}
    result = run_cli(*args, "decode.draft_reads=first_dense", env=env)
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "decode").iterdir())
    results = pd.read_parquet(run_dir / "results.parquet")
    assert (results.draft_reads == "first_dense").all() and (results.new_tokens == 12).all()
    assert (results.draft_kv_reduction_sparse_layers > 0.05).all() and (results.draft_kept < 1).all()
    assert (results[results.method == "dense"].match_rate == 1.0).all()
    refused = run_cli(*args, "decode.draft_reads=first_dense", "head_agg=kv_group", env=env)
    assert refused.returncode == 2 and "head_agg='kv_group' cannot aggregate" in refused.stderr
