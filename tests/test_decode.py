"""Speculative decoding with sparse verification: lossless where it must be, any method online,
batches equal to single runs, caches after rejections, online selections equal the evaluator's."""

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from specattn.core import layer_maps as layer_map
from specattn.core.layout import StepLayout
from specattn.core.settings import Settings
from specattn.decode.acceptance import speculative_accept, warp
from specattn.decode.engine import SpeculativeDecoder, prepare_for_decoding
from specattn.decode.kv_cache import SequenceKVCache
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.methods import Budget, Dense, Quest, SpecAttn, StreamingLLM
from specattn.models.pair import ModelPair, layer_subset, load_pair

from .conftest import CONF, run_cli

FALSE_ALARM = 1e-3  # each chi-square test flags a correct sampler with this probability (fixed seeds)


def decoder(pair, gamma=4, new=24, chunk=8, **kwargs):
    mapping = layer_map.resolve("proportional", pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    prepare_for_decoding(pair)
    return SpeculativeDecoder(pair, Settings(gamma, chunk, 2, "mean", tuple(mapping), max_new_tokens=new, **kwargs))


def prompts(batch, length, seed=0):
    return torch.randint(3, 259, (batch, length), generator=torch.Generator().manual_seed(seed))


def greedy_reference(pair, prompt: torch.Tensor, new: int) -> list[int]:
    """The verifier's own greedy decoding, one token per full forward (no cache, plain SDPA)."""
    prepare(pair)
    ids = prompt[None]
    with torch.inference_mode():
        for _ in range(new):
            ids = torch.cat([ids, pair.verifier(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, prompt.numel():].tolist()


@pytest.mark.parametrize("gamma", [1, 2, 4, 8])
def test_greedy_dense_speculative_decoding_is_the_verifiers_greedy_output(tiny_pair, gamma):
    batch = prompts(2, 40, seed=gamma)
    expected = [greedy_reference(tiny_pair, row, 30) for row in batch]
    dec = decoder(tiny_pair, gamma=gamma, new=30)
    out = dec.generate(dec.prefill(batch), [Dense(), Dense()])
    assert [trace.tokens for trace in out.traces] == expected
    assert all(trace.steps * (gamma + 1) >= 30 for trace in out.traces)


@pytest.mark.slow
def test_greedy_dense_speculative_decoding_on_the_real_smollm2_pair():
    from specattn.data.gutenberg import read_book

    pair = load_pair(OmegaConf.load(CONF / "model" / "smollm2.yaml"), torch.device("cpu"), torch.float32)
    prompt = torch.tensor(pair.tokenizer(read_book("carroll-alice")[:2000])["input_ids"][:200])
    expected = greedy_reference(pair, prompt, 16)
    dec = decoder(pair, gamma=4, new=16, chunk=16)
    assert dec.generate(dec.prefill(prompt[None]), [Dense()]).traces[0].tokens == expected


def test_methods_that_keep_everything_decode_exactly_like_dense(tiny_pair):
    batch = prompts(2, 60, seed=3)
    dec = decoder(tiny_pair)
    prefill = dec.prefill(batch)
    dense = dec.generate(prefill, [Dense(), Dense()])
    for make in (lambda: SpecAttn(1.0), lambda: Quest(Budget(kv_budget_frac=1.0))):
        out = dec.generate(prefill, [make(), make()])
        assert [t.tokens for t in out.traces] == [t.tokens for t in dense.traces]
        assert all(t.reads.reduction == 0.0 for t in out.traces)


def test_sparse_methods_decode_online_and_skip_reads(tiny_pair):
    batch = prompts(1, 120, seed=4)
    dec = decoder(tiny_pair)
    prefill = dec.prefill(batch)
    for method in (SpecAttn(0.6), Quest(Budget(kv_budget_frac=0.3)), StreamingLLM(Budget(kv_budget_frac=0.3))):
        trace = dec.generate(prefill, [method]).traces[0]
        assert len(trace.tokens) == 24 and 0.1 < trace.reads.sparse_layer_reduction < 1, method.label


def test_a_batch_gives_each_prompt_what_a_run_of_its_own_gives(tiny_pair):
    batch = torch.cat([prompts(3, 50, seed=5), prompts(3, 50, seed=6)[:, :50]])
    dec = decoder(tiny_pair, gamma=3, new=20, temperature=1.0)
    together = dec.generate(dec.prefill(batch), [SpecAttn(0.7) for _ in range(6)], seed=11).traces
    for b in range(6):
        alone = dec.generate(dec.prefill(batch[b : b + 1]), [SpecAttn(0.7)], seed=11 + b).traces[0]
        assert alone.tokens == together[b].tokens and alone.steps == together[b].steps, b
        assert alone.reads == together[b].reads, b


def test_after_rejections_each_cache_equals_a_fresh_prefill_of_the_accepted_tokens(tiny_pair):
    batch = prompts(2, 40, seed=7)
    dec = decoder(tiny_pair, gamma=4, new=17)
    out = dec.generate(dec.prefill(batch), [Dense(), Dense()])
    assert any(t.kept < t.drafted for t in out.traces)  # there were rejections
    for b, trace in enumerate(out.traces):
        accepted = torch.cat([batch[b], torch.tensor(trace.tokens)])[None]
        for model, cache in ((tiny_pair.verifier, out.verifier_cache), (tiny_pair.draft, out.draft_cache)):
            n = int(cache.lengths[b])
            assert n >= 40 - 2 + len(trace.tokens) - 1  # all accepted tokens but the last one or two
            fresh = SequenceKVCache.for_model(model, 1, n)
            with torch.inference_mode():
                dec._forward(model, accepted[:, :n], torch.arange(n)[None], fresh)
            torch.testing.assert_close(cache.keys[:, b, :, :n], fresh.keys[:, 0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(cache.values[:, b, :, :n], fresh.values[:, 0], atol=2e-5, rtol=1e-4)


@dataclass(frozen=True)
class Recorded(SpecAttn):
    """SpecAttn that records its selection of each (layer, step start)."""

    seen: dict = field(default_factory=dict, compare=False, metadata={"setting": False})

    def start(self, context):
        active = super().start(context)
        select = active.select

        def recording(view):
            selection = select(view)
            for i, step in enumerate(view.steps.tolist()):
                self.seen[(view.layer, int(active.layout.step_starts[step]))] = selection[i].clone()
            return selection

        active.select = recording
        return active


def test_online_selection_of_a_fully_accepted_step_equals_the_parallel_evaluators(tiny_pair):
    verifier = tiny_pair.verifier
    everything = list(range(verifier.config.num_hidden_layers))  # a draft equal to the verifier accepts a lot
    pair = ModelPair("same", layer_subset(verifier, everything), verifier, tiny_pair.tokenizer, everything)
    gamma, prompt_len = 3, 48
    dec = decoder(pair, gamma=gamma, new=40)
    batch = prompts(1, prompt_len, seed=8)
    online = Recorded(0.8)
    trace = dec.generate(dec.prefill(batch), [online]).traces[0]
    tokens = torch.cat([batch[0], torch.tensor(trace.tokens)])
    starts = sorted({s for (_, s) in online.seen})  # each step's first row
    full_steps = [s for s, nxt in zip(starts, starts[1:]) if nxt - s == gamma + 1]  # every drafted token kept
    assert full_steps, "no fully accepted step: the test needs one"
    prepare(pair)
    settings = Settings(gamma, 8, 2, "mean", tuple(layer_map.proportional(len(everything), len(everything))),
                        prefill_frac=0.1)
    for s in full_steps:
        offline = Recorded(0.8)
        evaluate_sample(pair, tokens[: s + gamma + 2], [Dense(), offline], settings,
                        layout=StepLayout(s + gamma + 2, s, gamma, 8))
        for layer in range(2, len(everything)):
            assert torch.equal(online.seen[(layer, s)], offline.seen[(layer, s)]), (s, layer)


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's test of ``counts`` against ``probs``, pooling categories expected below 5 times."""
    expected = probs * counts.sum()
    order = np.argsort(expected)
    pooled_obs, pooled_exp, acc_o, acc_e = [], [], 0.0, 0.0
    for i in order:
        acc_o += counts[i]
        acc_e += expected[i]
        if acc_e >= 5:
            pooled_obs.append(acc_o), pooled_exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e and pooled_exp:
        pooled_obs[-1] += acc_o
        pooled_exp[-1] += acc_e
    return float(stats.chisquare(pooled_obs, pooled_exp).pvalue)


def test_speculative_sampling_keeps_the_verifiers_distribution():
    """Rows where the draft differs from the verifier: the first emitted token ~ p, not q."""
    vocab, n = 6, 20000
    p = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.1] * 5 + [0.5]], dtype=torch.float64)
    q = torch.tensor([[0.05, 0.05, 0.3, 0.3, 0.2, 0.1], [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    generators = [torch.Generator().manual_seed(i) for i in range(n)]
    drafted = torch.stack([torch.multinomial(q[0], 1, generator=g) for g in generators])  # (n, 1)
    kept, added = speculative_accept(drafted, q[None, :1].expand(n, 1, vocab), p[None].expand(n, 2, vocab), generators)
    first = torch.where(kept > 0, drafted[:, 0], added)
    counts = np.bincount(first.numpy(), minlength=vocab)
    assert chi_square_pvalue(counts, p[0].numpy()) > FALSE_ALARM
    assert chi_square_pvalue(counts, q[0].numpy()) < 1e-12  # the test can tell p from q


def test_decoding_with_sampling_draws_the_first_token_from_the_verifier(tiny_pair):
    prompt = prompts(1, 16, seed=9)
    temperature, n = 1.5, 1500
    prepare(tiny_pair)
    with torch.inference_mode():
        target = warp(tiny_pair.verifier(prompt).logits[0, -1], temperature).numpy()
    dec = decoder(tiny_pair, gamma=2, new=1, temperature=temperature)
    out = dec.generate(dec.prefill(prompt.expand(n, -1)), [Dense() for _ in range(n)], seed=0)
    counts = np.bincount([t.tokens[0] for t in out.traces], minlength=target.size)
    assert chi_square_pvalue(counts, target) > FALSE_ALARM


def test_warp_top_k_and_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert warp(logits, 1.0, top_k=2)[0, 2:].sum() == 0 and math.isclose(float(warp(logits, 1.0, top_k=2).sum()), 1)
    nucleus = warp(logits, 1.0, top_p=0.7)
    assert nucleus[0, 0] > 0 and nucleus[0, 1] > 0 and nucleus[0, 2:].sum() == 0


def test_run_decode_end_to_end(tiny_model_dir, tmp_path):
    import pandas as pd

    result = run_cli("experiment=decode", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "dataset.num_samples=2", "decode.prompt_len=80", "decode.max_new_tokens=12", "decode.batch_size=2",
                     "p=0.7", "logger=none", "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "decode").iterdir())
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results.setting) == {"dense", "specattn p=0.7"} and (results.new_tokens == 12).all()
    dense = results[results.method == "dense"]
    assert (dense.match_rate == 1.0).all() and (dense.kv_reduction == 0).all()
    assert (run_dir / "generations.jsonl").read_text().count("\n") == 4
    again = run_cli("experiment=decode", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                    "dataset.num_samples=2", "decode.prompt_len=80", "decode.max_new_tokens=12", "decode.batch_size=2",
                    "p=0.7", "logger=none", "progress=false", "decode.temperature=-1",
                    env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert again.returncode == 2 and "decode.temperature=-1 must be a number >= 0" in again.stderr


def test_run_decode_table_matches_the_baselines_budget_per_prompt(tiny_model_dir, tmp_path):
    import pandas as pd

    result = run_cli("experiment=decode_table", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "dataset.num_samples=2", "decode.prompt_len=120", "decode.max_new_tokens=10", "chunk_size=4",
                     "experiment.p_values=[0.5,0.8]", "experiment.match_p=0.5", "logger=none", "progress=false",
                     env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    results = pd.read_parquet(next((tmp_path / "decode_table").iterdir()) / "results.parquet")
    assert list(results.setting.unique()) == ["dense", "specattn p=0.5", "specattn p=0.8",
                                              "streaming match=specattn p=0.5 n_sinks=4", "quest match=specattn p=0.5"]
    for _, prompt in results.groupby("sample"):
        target = prompt[prompt.setting == "specattn p=0.5"].kv_reduction_sparse_layers.iloc[0]
        for setting in ("streaming match=specattn p=0.5 n_sinks=4", "quest match=specattn p=0.5"):
            matched = prompt[prompt.setting == setting].kv_reduction_sparse_layers.iloc[0]
            assert target > 0.1 and abs(matched - target) < 0.1, (setting, matched, target)  # within chunk rounding


@pytest.mark.parametrize("per_forward", [40, 80, 100])  # 1, 2 and 2 (+ a last group of 1) sequences per forward
def test_a_prefill_in_groups_of_sequences_equals_one_forward_over_the_batch(tiny_pair, monkeypatch, per_forward):
    import specattn.decode.engine as engine

    batch = prompts(5, 40, seed=3)
    dec = decoder(tiny_pair, gamma=4, new=12)
    whole = dec.prefill(batch)
    monkeypatch.setattr(engine, "PREFILL_TOKENS", per_forward)
    grouped = dec.prefill(batch)
    for a, b in ((whole.verifier, grouped.verifier), (whole.draft, grouped.draft)):
        assert a.lengths.tolist() == b.lengths.tolist()
        assert b.keys.abs().sum() > 0
        torch.testing.assert_close(b.keys, a.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.values, a.values, atol=1e-5, rtol=1e-5)
    methods = lambda: [SpecAttn(0.9) for _ in range(5)]  # noqa: E731
    assert [t.tokens for t in dec.generate(grouped, methods()).traces] == \
           [t.tokens for t in dec.generate(whole, methods()).traces]


def test_a_rows_view_of_the_cache_writes_into_the_batch(tiny_pair):
    cache = SequenceKVCache.for_model(tiny_pair.verifier, 3, 16)
    view = cache.rows(1, 3)
    k = torch.ones(2, cache.keys.shape[2], 4, cache.keys.shape[4])
    view.update(k, 2 * k, 0)
    assert cache.keys[0, 1:, :, :4].eq(1).all() and cache.values[0, 1:, :, :4].eq(2).all()
    assert cache.keys[0, 0].eq(0).all() and cache.keys[1:].eq(0).all()
