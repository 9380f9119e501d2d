"""``experiment=paper_table`` end to end on the tiny pair, and ``match=`` pointing at its run."""

import pandas as pd
import pytest

from specattn.core.errors import SpecAttnError
from specattn.experiments.paper_table import first_pass_methods

from .conftest import compose_config, run_cli
from .conftest import paper_table_args as tiny
from .test_run_end_to_end import REQUIRED_COLUMNS, results_path

SETTINGS = ["dense", "streaming match=specattn p=0.95", "quest match=specattn p=0.95", "specattn p=0.95",
            "specattn p=0.97", "specattn p=0.99", "oracle_topp p=0.95", "oracle_topp p=0.97", "oracle_topp p=0.99"]


def test_paper_table_rows_columns_and_matched_reduction(paper_run):
    outputs, path, stdout = paper_run
    assert path.parent.parent == outputs / "paper_table"
    summary = pd.read_parquet(path.parent / "summary.parquet")
    assert summary.setting.tolist() == SETTINGS
    assert list(summary.columns) == ["method", "setting", "samples", "tokens", "ppl", "ppl_rel_increase",
                                     "kv_reduction", "kv_reduction_sparse_layers"]
    results = pd.read_parquet(path)
    assert REQUIRED_COLUMNS <= set(results.columns) and len(results) == 2 * len(SETTINGS)
    by = summary.set_index("setting").kv_reduction_sparse_layers
    target = by["specattn p=0.95"]
    assert 0.05 < target < 0.95
    assert by["streaming match=specattn p=0.95"] == pytest.approx(target, abs=0.01)
    assert by["quest match=specattn p=0.95"] == pytest.approx(target, abs=0.02)
    for sample, rows in results.groupby("sample"):  # matched per sample
        per = rows.set_index("setting").kv_reduction_sparse_layers
        assert per["streaming match=specattn p=0.95"] == pytest.approx(per["specattn p=0.95"], abs=0.015)
    assert by["specattn p=0.95"] > by["specattn p=0.97"] > by["specattn p=0.99"]
    assert by["oracle_topp p=0.95"] > by["oracle_topp p=0.99"]
    assert "quest match=specattn p=0.95" in stdout


def test_match_points_a_method_at_a_finished_run(paper_run, tiny_model_dir, tmp_path):
    path = paper_run[1]
    result = run_cli(*tiny(tiny_model_dir, "dataset.num_samples=2", "method=streaming", f"method.match={path.parent}",
                           "method.match_setting='specattn p=0.97'"), env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(results_path(result.stdout))
    streaming = frame[frame.method == "streaming"]
    assert set(streaming.setting) == {"streaming match=specattn p=0.97"}
    reads = streaming.kv_reads_sparse_layers.sum() / streaming.kv_dense_reads_sparse_layers.sum()
    target = pd.read_parquet(path.parent / "summary.parquet").set_index("setting").kv_reduction_sparse_layers
    assert 1 - reads == pytest.approx(target["specattn p=0.97"], abs=0.01)


def test_match_p_must_be_one_of_the_p_values():
    cfg = compose_config("experiment=paper_table", "experiment.match_p=0.9")
    with pytest.raises(SpecAttnError) as error:
        first_pass_methods(cfg)
    assert str(error.value) == "experiment.match_p=0.9 is not one of experiment.p_values=[0.95, 0.97, 0.99]"
