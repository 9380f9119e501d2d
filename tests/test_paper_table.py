"""``experiment=paper_table`` end to end on the tiny pair, and ``match=`` pointing at its run."""

import pandas as pd
import pytest

from specattn.core.errors import SpecAttnError
from specattn.experiments.rows import table_rows

from .conftest import compose_config, run_cli
from .conftest import paper_table_args as tiny
from .test_run_end_to_end import REQUIRED_COLUMNS, results_path

SETTINGS = ["dense", "streaming match=specattn p=0.95 n_sinks=4", "quest match=specattn p=0.95", "specattn p=0.95",
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
    assert by["streaming match=specattn p=0.95 n_sinks=4"] == pytest.approx(target, abs=0.01)
    assert by["quest match=specattn p=0.95"] == pytest.approx(target, abs=0.02)
    for sample, rows in results.groupby("sample"):  # matched per sample
        per = rows.set_index("setting").kv_reduction_sparse_layers
        assert per["streaming match=specattn p=0.95 n_sinks=4"] == pytest.approx(per["specattn p=0.95"], abs=0.015)
    assert by["specattn p=0.95"] > by["specattn p=0.97"] > by["specattn p=0.99"]
    assert by["oracle_topp p=0.95"] > by["oracle_topp p=0.99"]
    assert "quest match=specattn p=0.95" in stdout


def test_match_points_a_method_at_a_finished_run(paper_run, tiny_model_dir, tmp_path):
    path = paper_run[1]
    result = run_cli(*tiny(tiny_model_dir, "dataset.num_samples=2", "method=streaming", f"method.budget.match={path.parent}",
                           "method.budget.match_setting='specattn p=0.97'"), env={"SPECATTN_OUTPUTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(results_path(result.stdout))
    streaming = frame[frame.method == "streaming"]
    assert set(streaming.setting) == {"streaming match=specattn p=0.97 n_sinks=4"}
    reads = streaming.kv_reads_sparse_layers.sum() / streaming.kv_dense_reads_sparse_layers.sum()
    target = pd.read_parquet(path.parent / "summary.parquet").set_index("setting").kv_reduction_sparse_layers
    assert 1 - reads == pytest.approx(target["specattn p=0.97"], abs=0.01)


def test_a_row_must_match_an_unmatched_row():
    cfg = compose_config("experiment=paper_table", "experiment.match_p=0.9")
    with pytest.raises(SpecAttnError) as error:
        table_rows(cfg)
    assert str(error.value).startswith("experiment.rows: streaming matches 'specattn p=0.9', which is no unmatched row")


def test_rows_sweep_lists_take_any_method_and_refuse_bad_rows():
    rows = table_rows(compose_config("experiment=paper_table", "experiment.extra_rows=[draft_snapkv]",
                                     "experiment.rows=[{method:draft_topk,top_k:[8,16]},dense]"))
    assert [row.method.label for row in rows] == ["dense", "draft_topk top_k=8", "draft_topk top_k=16",
                                                  "draft_snapkv token_budget=256 history=4"]
    for rows_override, fragment in [
        ("experiment.rows=[nope]", "row method 'nope' is not a conf/method config"),
        ("experiment.rows=[{method:specattn,p:1.5}]", "experiment.rows.0.p=1.5 is outside (0, 1]"),
        ("experiment.rows=[{method:specattn,match:dense}]", "experiment.rows.0: specattn has no budget to match"),
        ("experiment.rows=[specattn,specattn]", "lists 'specattn p=0.95' twice"),
    ]:
        with pytest.raises(SpecAttnError) as error:
            table_rows(compose_config("experiment=paper_table", rows_override))
        assert fragment in str(error.value), rows_override
