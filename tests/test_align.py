"""Layer alignment: the DP against brute force, metrics on known distributions, maps and caching."""

import itertools
import math
import re

import numpy as np
import pytest
import torch
import yaml

from specattn.align import METRICS, monotonic_alignment, row_similarity
from specattn.align.calibrate import auto_layer_map
from specattn.align.similarity import AlignSettings, accumulate
from specattn.core import layer_maps as layer_map
from specattn.core.errors import SpecAttnError

from .conftest import compose_config, run_cli


def brute_force(similarity: np.ndarray) -> tuple[float, list[int]]:
    """Best total over all non-decreasing maps, and the lexicographically smallest map attaining it."""
    n_draft, n_verifier = similarity.shape
    best, best_map = -math.inf, None
    for combo in itertools.combinations_with_replacement(range(n_draft), n_verifier):  # lexicographic order
        total = sum(similarity[i, j] for j, i in enumerate(combo))
        if total > best:
            best, best_map = total, list(combo)
    return best, best_map


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 1), (2, 4), (4, 3), (5, 2), (3, 6), (4, 5)])
def test_dp_matches_brute_force_with_ties(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(25):
        ties = rng.integers(0, 3, size=shape).astype(float)  # small integers: many exact ties
        assert monotonic_alignment(ties) == brute_force(ties)[1]
        floats = rng.normal(size=shape)
        mapping = monotonic_alignment(floats)
        assert all(a <= b for a, b in zip(mapping, mapping[1:]))
        assert sum(floats[i, j] for j, i in enumerate(mapping)) == pytest.approx(brute_force(floats)[0], abs=1e-12)


def test_dp_follows_a_clear_band_and_refuses_bad_input():
    band = -np.abs(np.arange(4)[:, None] - np.arange(8)[None, :] / 2)
    assert monotonic_alignment(band) == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(SpecAttnError, match="NaN"):
        monotonic_alignment(np.array([[np.nan]]))
    with pytest.raises(SpecAttnError, match="non-empty"):
        monotonic_alignment(np.zeros((0, 3)))


def test_metrics_on_hand_made_distributions():
    v = torch.tensor([[[0.5, 0.5, 0.0]]])  # (H=1, R=1, K=3)
    d = torch.tensor([[[[0.5, 0.25, 0.25]]], [[[0.5, 0.5, 0.0]]]])  # two draft layers; the second equals v
    kl = row_similarity("kl", v, d)
    assert kl[0].item() == pytest.approx(-0.5 * math.log(2), abs=1e-5) and kl[1].item() == pytest.approx(0, abs=1e-5)
    js = 0.5 * (0.5 * math.log(0.5 / 0.375)) + 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.25 * math.log(2))
    assert row_similarity("js", v, d)[0].item() == pytest.approx(-js, abs=1e-6)
    assert row_similarity("js", v, d)[1].item() == pytest.approx(0, abs=1e-7)
    # p=0.5: v's nucleus is both tied keys (mass 1); d's nucleus is key 0 -> covers half of it
    assert row_similarity("topp_recall", v, d, p=0.5).tolist() == pytest.approx([0.5, 1.0])
    assert row_similarity("cosine", v, d)[0].item() == pytest.approx(0.375 / (math.sqrt(0.5) * math.sqrt(0.375)))
    assert row_similarity("cosine", v, d)[1].item() == pytest.approx(1.0)


def test_kl_smoothing_keeps_zero_draft_weights_finite():
    v = torch.tensor([[[0.0, 1.0]]])
    d = torch.tensor([[[[1.0, 0.0]]]])
    value = row_similarity("kl", v, d, eps=1e-6).item()
    assert math.isfinite(value) and value == pytest.approx(math.log(1e-6 / (1 + 2e-6)), rel=1e-4)
    with pytest.raises(SpecAttnError, match="align.metric='l2'"):
        row_similarity("l2", v, d)


def test_metrics_rank_the_identical_layer_first():
    generator = torch.Generator().manual_seed(0)
    rows = torch.softmax(3 * torch.randn(3, 1, 6, 20, generator=generator), -1)  # 3 draft layers
    for metric in METRICS:
        scores = row_similarity(metric, rows[1], rows, p=0.9)
        assert int(scores.argmax()) == 1, metric


def test_streamed_similarity_is_blocking_invariant(tiny_pair):
    ids = torch.randint(3, 259, (150,), generator=torch.Generator().manual_seed(4))
    small = accumulate(tiny_pair, ids, AlignSettings(query_block=7, min_position=10))
    large = accumulate(tiny_pair, ids, AlignSettings(query_block=200, min_position=10))
    assert small.rows == large.rows == 140
    for metric in METRICS:
        assert torch.allclose(small.mean(metric), large.mean(metric), atol=1e-5)
    # self-speculative draft: draft layer 0 runs verifier layer 0 on the same input -> KL exactly 0
    assert small.mean("kl")[0, 0].item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("content,fragment", [
    ([0, 0, 1], "has 3 entries but the verifier has 6"),
    ([0, 0, 1, 1, 2, 9], "entry for verifier layer 5 is 9"),
    ([0, 1, 2, 1, 2, 3], "entry for verifier layer 3 (1) is below the previous one (2)"),
])
def test_bad_layer_map_files_name_the_entry(tmp_path, content, fragment):
    path = tmp_path / "layer_map.yaml"
    path.write_text(yaml.safe_dump({"verifier_to_draft": content}))
    with pytest.raises(SpecAttnError) as error:
        layer_map.resolve(str(path), 4, 6, None)
    assert fragment in str(error.value)


def test_identity_map_for_self_speculative_pairs():
    assert layer_map.identity([0, 3, 6, 9], 10) == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]  # nearest draft layer
    assert layer_map.identity([0, 4], 5) == [0, 0, 0, 1, 1]  # verifier layer 2 ties: the shallower one
    with pytest.raises(SpecAttnError, match="self-speculative"):
        layer_map.identity(None, 10)


def test_align_experiment_end_to_end(tiny_model_dir, tmp_path):
    result = run_cli("experiment=align", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "align.num_tokens=600", "align.context_len=300", "align.metric=js", "logger=none",
                     "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "layer map (js)" in result.stdout and "heatmap: " in result.stdout
    run_dir = next((tmp_path / "align").iterdir())
    mapping = yaml.safe_load((run_dir / "layer_map.yaml").read_text())["verifier_to_draft"]
    similarity = np.load(run_dir / "similarity.npy")
    assert similarity.shape == (4, 6) and mapping == monotonic_alignment(similarity)
    assert (run_dir / "heatmap.png").stat().st_size > 5000
    # the written map plugs into the ppl experiment
    ppl = run_cli("model=tiny_random", f"model.verifier.path={tiny_model_dir}", f"layer_map={run_dir / 'layer_map.yaml'}",
                  "dataset.context_len=120", "dataset.num_samples=1", "logger=none", "progress=false",
                  env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert ppl.returncode == 0, ppl.stderr


def test_auto_layer_map_is_cached(tiny_pair, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECATTN_CACHE", str(tmp_path))
    cfg = compose_config("model=tiny_random", f"model.verifier.path={tiny_model_dir}", "align.num_tokens=300",
                         "align.context_len=300")
    mapping, path = auto_layer_map(cfg, tiny_pair)
    stamp = path.stat().st_mtime_ns
    again, same_path = auto_layer_map(cfg, tiny_pair)
    assert again == mapping and same_path == path and path.stat().st_mtime_ns == stamp
    other, other_path = auto_layer_map(compose_config("model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                                                      "align.num_tokens=300", "align.context_len=300",
                                                      "align.metric=cosine"), tiny_pair)
    assert other_path != path
    # a bound on the draft layers: its map from the cached similarity (no second calibration), the same folder
    import specattn.align.calibrate as calibrate

    monkeypatch.setattr(calibrate, "similarity_matrices", lambda *a, **k: pytest.fail("calibrated again"))
    bounded, bounded_path = auto_layer_map(compose_config("model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                                                          "align.num_tokens=300", "align.context_len=300",
                                                          "align.max_draft_layers=1", "dense_layers=2"), tiny_pair)
    similarity = np.load(path.parent / "similarity.npy")
    assert bounded_path.parent == path.parent and bounded_path.name == "layer_map_max1_dense2.yaml"
    assert bounded == monotonic_alignment(similarity, 1, 2) and len(set(bounded[2:])) == 1
    assert yaml.safe_load(bounded_path.read_text())["max_draft_layers"] == 1


def test_a_bad_draft_layer_bound_is_refused_before_weights_load():
    from specattn.runs.validate import validate

    for bad in ("0", "-2", "1.5", "many"):
        with pytest.raises(SpecAttnError, match=f"align.max_draft_layers='?{bad}'? must be a positive integer"):
            validate(compose_config("experiment=align", f"align.max_draft_layers={bad}"))


def test_too_little_calibration_text_says_so(tiny_pair, tiny_model_dir):
    from specattn.align.calibrate import calibration_samples

    cfg = compose_config("model=tiny_random", f"model.verifier.path={tiny_model_dir}", "dataset=text_files",
                         "dataset.source.paths=[README.md]", "align.num_tokens=10000000", "align.context_len=1000")
    with pytest.raises(SpecAttnError) as error:
        calibration_samples(cfg, tiny_pair)
    # the keys that asked and the one fix, not dataset.num_samples / dataset.context_len (which calibration ignores)
    assert re.fullmatch(r"dataset text_files calibration holds only \d+ windows of align.context_len=1000 tokens, "
                        r"fewer than the 10000 that align.num_tokens=10000000 takes: lower align.num_tokens",
                        str(error.value)), str(error.value)


def test_a_draft_equal_to_the_verifier_aligns_on_the_diagonal(tiny_pair):
    """Sanity of the whole pipeline: with every verifier layer in the draft, each layer's best
    match is itself (KL and JS are 0 there, cosine 1), so the mapping is the identity."""
    from specattn.models.pair import ModelPair, layer_subset

    verifier = tiny_pair.verifier
    everything = list(range(verifier.config.num_hidden_layers))
    pair = ModelPair("same", layer_subset(verifier, everything), verifier, tiny_pair.tokenizer, everything)
    ids = torch.randint(3, 259, (160,), generator=torch.Generator().manual_seed(5))
    totals = accumulate(pair, ids, AlignSettings(metrics=("kl", "js", "cosine"), min_position=16))
    for metric in ("kl", "js", "cosine"):
        similarity = totals.mean(metric).numpy()
        assert monotonic_alignment(similarity) == everything, metric
        assert np.diag(similarity) == pytest.approx(1.0 if metric == "cosine" else 0.0, abs=1e-4)


def test_align_study_end_to_end(tiny_model_dir, tmp_path):
    import pandas as pd

    result = run_cli("experiment=align_study", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "align.num_tokens=400", "align.context_len=200", "dataset.num_samples=1",
                     "dataset.context_len=150", "experiment.p_values=[0.8,0.95]", "experiment.max_draft_layers=[1]",
                     "logger=none", "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "align_study").iterdir())
    summary = pd.read_parquet(run_dir / "summary.parquet")
    metrics = ["kl", "js", "topp_recall", "cosine"]
    bounded = {f"{m} max1": monotonic_alignment(np.load(run_dir / f"similarity_{m}.npy"), 1, 2) for m in metrics
               if monotonic_alignment(np.load(run_dir / f"similarity_{m}.npy"), 1, 2)
               != monotonic_alignment(np.load(run_dir / f"similarity_{m}.npy"))}
    assert bounded  # the tiny pair's maps use more than one draft layer past the two dense layers
    expected = {(m, p) for m in [*metrics, *bounded, "proportional", "identity"] for p in (0.8, 0.95)}
    assert set(zip(summary.layer_map, summary.p)) == expected
    results = pd.read_parquet(run_dir / "results.parquet")
    for name, mapping in bounded.items():  # each bounded map evaluated as computed: one draft layer past the dense two
        assert set(results[results.layer_map == name].mapping) == {str(mapping)} and len(set(mapping[2:])) == 1
    assert (summary.dense_ppl == summary.dense_ppl.iloc[0]).all()
    stability = pd.read_parquet(run_dir / "stability.parquet")
    assert sorted(stability.calibration_tokens.unique()) == [200, 400]
    assert (stability[stability.calibration_tokens == 400].layers_changed_vs_final == 0).all()
    assert (run_dir / "tradeoff.png").is_file() and (run_dir / "heatmap_cosine.png").is_file()


def test_a_metric_added_to_the_registry_is_computed_by_the_streamed_similarity(tiny_pair, monkeypatch):
    """The registry is the one place a metric lives: a new class there is built, prepared and scored with
    the same signature as the shipped ones (here: dot product of the rows)."""
    from dataclasses import dataclass

    from specattn.align import similarity_metrics

    @dataclass(frozen=True)
    class Dot(similarity_metrics.SimilarityMetric):
        name = "dot"

        def prepare(self, d, valid):
            return {"d": d}

        def score(self, v, draft):
            return torch.einsum("hrk,ihrk->i", v, draft["d"]).double()

    monkeypatch.setitem(similarity_metrics.METRICS, "dot", Dot)
    ids = torch.randint(3, 259, (80,), generator=torch.Generator().manual_seed(5))
    totals = accumulate(tiny_pair, ids, AlignSettings(metrics=("dot", "cosine"), min_position=10))
    assert totals.mean("dot").shape == (tiny_pair.n_draft_layers, tiny_pair.n_verifier_layers)
    assert (totals.mean("dot") > 0).all()


def brute_force_bounded(similarity: np.ndarray, budget: int, dense_layers: int) -> tuple[float, list[int]]:
    """Best total over the non-decreasing maps with at most ``budget`` distinct draft layers in columns
    ``dense_layers..``, and the lexicographically smallest map attaining it."""
    n_draft, n_verifier = similarity.shape
    best, best_map = -math.inf, None
    for combo in itertools.combinations_with_replacement(range(n_draft), n_verifier):
        if len(set(combo[dense_layers:])) > budget:
            continue
        total = sum(similarity[i, j] for j, i in enumerate(combo))
        if total > best:
            best, best_map = total, list(combo)
    return best, best_map


@pytest.mark.parametrize("shape", [(1, 4), (3, 1), (3, 5), (4, 6), (5, 4), (6, 7)])
def test_bounded_dp_matches_brute_force_at_every_budget_and_dense_prefix(shape):
    n_draft, n_verifier = shape
    rng = np.random.default_rng(7 * n_draft + n_verifier)
    for _ in range(6):
        ties = rng.integers(0, 3, size=shape).astype(float)
        floats = rng.normal(size=shape)
        for dense in range(n_verifier + 1):
            for budget in range(1, n_draft + 2):
                got = monotonic_alignment(ties, budget, dense)
                assert got == brute_force_bounded(ties, budget, dense)[1], (budget, dense)
                got = monotonic_alignment(floats, budget, dense)
                assert len(set(got[dense:])) <= budget and all(a <= b for a, b in zip(got, got[1:]))
                assert sum(floats[i, j] for j, i in enumerate(got)) == pytest.approx(
                    brute_force_bounded(floats, budget, dense)[0], abs=1e-12)
        assert monotonic_alignment(floats, n_draft) == monotonic_alignment(floats)  # a bound that binds nothing


def test_bounded_dp_on_a_band_shares_layers_and_refuses_bad_bounds():
    band = -np.abs(np.arange(8)[:, None] - np.arange(8)[None, :]).astype(float)  # the diagonal: 8 layers unbounded
    assert monotonic_alignment(band) == list(range(8))
    two = monotonic_alignment(band, 2)
    assert len(set(two)) == 2 and two == [1] * 4 + [5] * 4  # each half at a middle layer: |offsets| 1+0+1+2 a half
    assert monotonic_alignment(band, 1, dense_layers=6) == [0, 1, 2, 3, 4, 5, 6, 6]  # only layers 6, 7 counted
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(SpecAttnError, match=r"align.max_draft_layers=.*must be a whole number >= 1"):
            monotonic_alignment(band, bad)
    with pytest.raises(SpecAttnError, match="dense_layers=9"):
        monotonic_alignment(band, 2, dense_layers=9)


def test_the_bound_cli_writes_a_bounded_map_from_a_saved_similarity(tmp_path):
    import subprocess
    import sys

    band = -np.abs(np.arange(6)[:, None] - np.arange(8)[None, :] * 0.7).astype(float)
    np.save(tmp_path / "similarity.npy", band)
    out = tmp_path / "map.yaml"
    run = subprocess.run([sys.executable, "-m", "specattn.align", str(tmp_path / "similarity.npy"),
                          "--max-draft-layers", "2", "--dense-layers", "2", "--out", str(out)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    written = yaml.safe_load(out.read_text())
    assert written["verifier_to_draft"] == monotonic_alignment(band, 2, 2) and written["max_draft_layers"] == 2
    assert len(set(written["verifier_to_draft"][2:])) == 2 < len(set(monotonic_alignment(band)[2:]))
    assert "at most 2: " in run.stdout and "2 distinct draft layers past the first 2" in run.stdout
    layer_map.resolve(str(out), 6, 8, None)  # a valid layer_map file for this pair
    bad = subprocess.run([sys.executable, "-m", "specattn.align", str(tmp_path / "similarity.npy"),
                          "--max-draft-layers", "0"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--max-draft-layers=0 must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
