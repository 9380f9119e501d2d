"""Per-layer coverage: the verifier's own attention mass a selection keeps, and the layer's reads."""

import pandas as pd
import pytest
import torch

from specattn.core import layer_maps as layer_map
from specattn.core.coverage import LayerCoverage
from specattn.core.settings import Settings
from specattn.eval.perplexity import evaluate_sample, prepare
from specattn.methods import Dense, SpecAttn

from .conftest import run_cli


def test_coverage_is_the_visible_share_of_each_rows_softmax():
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(4, 3, 8, generator=generator), torch.randn(2, 10, 8, generator=generator)
    rows = torch.tensor([7, 8, 9])
    visible = torch.rand(1, 3, 10, generator=generator) < 0.5
    coverage = LayerCoverage()
    coverage.add_mass(5, queries, keys, 0.3, rows, visible)
    expected = 0.0
    for h in range(4):
        for r, row in enumerate(rows.tolist()):
            weights = torch.softmax(0.3 * queries[h, r] @ keys[h // 2, : row + 1].T, 0)
            expected += float(weights[visible[0, r, : row + 1]].sum())
    assert coverage.pairs[5] == 12 and coverage.mass[5] == pytest.approx(expected, rel=1e-6)


def test_coverage_in_the_evaluator(tiny_pair):
    prepare(tiny_pair)
    mapping = layer_map.resolve("proportional", tiny_pair.n_draft_layers, tiny_pair.n_verifier_layers,
                                tiny_pair.draft_layers)
    ids = torch.randint(3, 259, (161,), generator=torch.Generator().manual_seed(1))
    tables = {}
    for impl in ("parallel", "sequential"):
        settings = Settings(4, 8, 2, "mean", tuple(mapping), query_block=32, prefill_frac=0.1, impl=impl)
        dense, sparse, full = evaluate_sample(tiny_pair, ids, [Dense(), SpecAttn(0.7), SpecAttn(1.0)], settings,
                                              coverage=True)
        assert dense.coverage.table() == []  # a dense method has no selection to cover
        assert all(record["coverage"] == pytest.approx(1.0) and record["layer_kv_reduction"] == 0.0
                   for record in full.coverage.table())
        tables[impl] = pd.DataFrame(sparse.coverage.table())
        assert list(tables[impl].layer) == [2, 3, 4, 5] and (tables[impl].coverage < 1).all()
        assert tables[impl].kv_reads.sum() == sparse.reads.sparse_layer_reads  # per-layer reads add up
    pd.testing.assert_frame_equal(tables["parallel"], tables["sequential"], rtol=1e-4)


def test_run_layer_coverage_end_to_end(tiny_model_dir, tmp_path):
    result = run_cli("experiment=layer_coverage", "model=tiny_random", f"model.verifier.path={tiny_model_dir}",
                     "dataset.num_samples=1", "dataset.context_len=150", "experiment.p_values=[0.8,1.0]",
                     "logger=none", "progress=false", env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "layer_coverage").iterdir())
    summary = pd.read_parquet(run_dir / "summary.parquet")
    assert set(summary.layer) == {2, 3, 4, 5} and set(summary.p) == {0.8, 1.0}
    assert (summary[summary.p == 1.0].coverage.round(6) == 1.0).all()
    assert (run_dir / "coverage.png").is_file()
