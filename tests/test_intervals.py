"""Per-setting intervals of table runs (specattn.results.intervals): pooling and bootstrap behaviour."""

import math

import numpy as np
import pandas as pd
import pytest

from specattn.core.errors import SpecAttnError
from specattn.core.run_rows import read_samples
from specattn.results.collect import main
from specattn.results.intervals import interval_table, paired_versus


def rows(setting: str, nll, dense_nll, tokens, reads, dense_reads) -> pd.DataFrame:
    n = len(nll)
    return pd.DataFrame({"setting": setting, "nll": nll, "dense_nll": dense_nll, "tokens": tokens,
                         "kv_reads_sparse_layers": reads, "kv_dense_reads_sparse_layers": dense_reads,
                         "kv_reads": np.asarray(reads) + 100, "kv_dense_reads": np.asarray(dense_reads) + 100,
                         "sample": range(n)})


def test_pooled_ratios_weigh_samples_by_tokens_and_reads():
    table = interval_table(rows("specattn p=0.9", [110.0, 30.0], [100.0, 30.0], [100, 300], [10, 90], [100, 100]))
    row = table.iloc[0]
    assert row.ppl_increase_pct == pytest.approx(100 * (math.exp(10 / 400) - 1))  # not the mean of per-sample ratios
    assert row.sparse_kv_reduction_pct == pytest.approx(50.0)
    assert row.kv_reduction_pct == pytest.approx(100 * (1 - 300 / 400))
    assert row.ppl == pytest.approx(math.exp(140 / 400)) and row.samples == 2
    assert row.ci95_low <= row.ppl_increase_pct <= row.ci95_high and row.ci95_high > row.ci95_low


def test_identical_samples_have_no_spread_and_more_samples_narrow_the_interval():
    same = interval_table(rows("s", [105.0] * 6, [100.0] * 6, [100] * 6, [30] * 6, [100] * 6)).iloc[0]
    assert same.ci95_low == pytest.approx(same.ci95_high) and same.red_ci95_low == pytest.approx(70.0)
    rng = np.random.default_rng(1)

    def width(n):
        extra = rng.normal(5, 3, n)
        t = interval_table(rows("s", 100 + extra, [100.0] * n, [100] * n, [30] * n, [100] * n)).iloc[0]
        return t.ci95_high - t.ci95_low

    assert width(400) < 0.5 * width(8)


def test_dense_rows_get_zero_reduction_and_settings_keep_their_order():
    table = interval_table(pd.concat([rows("dense", [1.0, 2.0], [1.0, 2.0], [5, 5], [0, 0], [0, 0]),
                                      rows("quest", [2.0, 3.0], [1.0, 2.0], [5, 5], [1, 1], [4, 4])]))
    assert table.setting.tolist() == ["dense", "quest"]
    assert table.iloc[0].ppl_increase_pct == 0 and table.iloc[0].sparse_kv_reduction_pct == 0


def test_one_setting_under_several_layer_maps_gets_a_row_per_map():
    """The alignment study names its rows "specattn p=0.9" under every layer map: pooling them would average
    the maps; each map gets its own row, and a column that does not vary adds nothing to the name."""
    kl = rows("specattn p=0.9", [101.0, 101.0], [100.0, 100.0], [100, 100], [60, 60], [100, 100]).assign(
        layer_map="kl", head_agg="mean")
    proportional = rows("specattn p=0.9", [104.0, 104.0], [100.0, 100.0], [100, 100], [50, 50], [100, 100]).assign(
        layer_map="proportional", head_agg="mean")
    table = interval_table(pd.concat([kl, proportional])).set_index("setting")
    assert table.index.tolist() == ["specattn p=0.9 layer_map=kl", "specattn p=0.9 layer_map=proportional"]
    assert table.loc["specattn p=0.9 layer_map=kl"].ppl_increase_pct == pytest.approx(100 * (math.exp(2 / 200) - 1))
    assert table.loc["specattn p=0.9 layer_map=proportional"].sparse_kv_reduction_pct == pytest.approx(50.0)
    assert (table.samples == 2).all()


def test_paired_versus_a_layer_map_pairs_samples_and_cancels_their_difficulty(tmp_path, capsys):
    """Two texts, one hard (nll +50 under every map), one easy: the js map costs 1 nat less than the
    proportional one on each, reads 10 points less on each; paired, the interval has no spread."""
    def study(layer_map, extra, reads):
        frame = rows("specattn p=0.9", [150.0 + extra, 101.0 + extra], [100.0, 100.0], [100, 100], [reads] * 2,
                     [100, 100])
        return frame.assign(layer_map=layer_map, sample_id=["hard.py#0", "easy.py#0"])

    samples = pd.concat([study("proportional", 1.0, 50), study("js", 0.0, 40)])
    table = paired_versus(samples, "layer_map=proportional").iloc[0]
    assert table.setting == "specattn p=0.9 layer_map=js" and table.samples == 2
    expected = 100 * (math.exp(51 / 200) - math.exp(53 / 200))
    assert table.ppl_increase_diff_pct == pytest.approx(expected)
    assert table.sparse_kv_reduction_diff_pct == pytest.approx(10.0)
    assert table.red_ci95_low == pytest.approx(10.0) and table.red_ci95_high == pytest.approx(10.0)
    assert table.ci95_low < 0 and table.ci95_high < 0  # 1 nat less on each text: always cheaper
    with pytest.raises(SpecAttnError, match="layer_map=kl"):
        paired_versus(samples, "layer_map=kl")
    with pytest.raises(SpecAttnError, match="name a setting"):
        paired_versus(samples, "p=0.9")
    samples.to_parquet(tmp_path / "study.parquet")
    assert main(["intervals", str(tmp_path / "study.parquet"), "--versus", "layer_map=cosine"]) == 2
    assert "no rows have layer_map=cosine" in capsys.readouterr().err


def test_paired_versus_a_setting_compares_every_other_sparse_row_with_it():
    """The grid's rows in one run ("specattn p=0.9 heads=max" beside "... heads=mean"): every sparse row minus the
    named one, paired over samples; dense is left out."""
    dense = rows("dense", [100.0, 150.0], [100.0, 150.0], [100, 100], [0, 0], [0, 0])
    mean = rows("specattn p=0.9 heads=mean", [101.0, 151.0], [100.0, 150.0], [100, 100], [40, 40], [100, 100])
    top = rows("specattn p=0.9 heads=max", [103.0, 153.0], [100.0, 150.0], [100, 100], [30, 30], [100, 100])
    samples = pd.concat([dense, mean, top]).assign(sample_id=lambda f: f["sample"].map({0: "a.py#0", 1: "b.py#0"}))
    table = paired_versus(samples, "specattn p=0.9 heads=mean")
    assert table.setting.tolist() == ["specattn p=0.9 heads=max"] and table.iloc[0].samples == 2
    assert table.iloc[0].ppl_increase_diff_pct == pytest.approx(100 * (math.exp(6 / 200) - math.exp(2 / 200)))
    assert table.iloc[0].sparse_kv_reduction_diff_pct == pytest.approx(10.0)


def test_a_cut_run_is_read_from_its_parts_and_a_wrong_folder_is_refused(tmp_path, capsys):
    (tmp_path / "run" / "parts").mkdir(parents=True)
    part = rows("specattn p=0.95", [101.0], [100.0], [100], [40], [100])
    part.to_parquet(tmp_path / "run" / "parts" / "sample-00000.parquet")
    samples, finished = read_samples(tmp_path / "run")
    assert not finished and len(samples) == 1
    assert main(["intervals", str(tmp_path / "run")]) == 0
    assert "cut" in capsys.readouterr().out
    assert main(["intervals", str(tmp_path)]) == 2
    assert "not a table run's folder" in capsys.readouterr().err
    with pytest.raises(SpecAttnError, match="lack"):
        interval_table(part.drop(columns=["kv_reads"]))


def test_pareto_option_draws_one_point_per_sparse_setting_at_its_pooled_ratios(tmp_path, monkeypatch):
    from specattn.results import plots
    from specattn.results.intervals import pareto_settings

    samples = pd.concat([rows("dense", [100.0, 50.0], [100.0, 50.0], [100, 50], [0, 0], [0, 0]),
                         rows("specattn p=0.9", [104.0, 51.0], [100.0, 50.0], [100, 50], [30, 20], [100, 100]),
                         rows("specattn p=0.95", [101.0, 50.0], [100.0, 50.0], [100, 50], [60, 40], [100, 100])])
    samples = samples.assign(method=samples.setting.str.split().str[0], p=samples.setting.str.extract(r"p=(.*)")[0]
                             .astype(float), model="m", dataset="d", context_len=150,
                             sample_id=samples["sample"].map(lambda i: f"doc#{i}"))
    settings = pareto_settings(samples, interval_table(samples))
    specattn = settings[settings.method == "specattn"]
    assert specattn.p.tolist() == [0.9, 0.95]
    assert specattn.kv_reduction_sparse_layers.tolist() == pytest.approx([0.75, 0.5])
    assert specattn.ppl_rel_increase.iloc[0] == pytest.approx(math.exp(5 / 150) - 1)
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig.axes[0]) or path)
    run = tmp_path / "paper_table-x"
    (run / "parts").mkdir(parents=True)
    samples.to_parquet(run / "parts" / "sample-00000.parquet")
    assert main(["intervals", str(run), "--pareto", str(tmp_path / "figs")]) == 0
    (line,) = drawn[0].get_lines()
    assert sorted(line.get_xdata()) == pytest.approx([50.0, 75.0]) and "2 samples" in drawn[0].get_title()


def test_runs_over_disjoint_windows_pool_into_one_sample_set_and_overlaps_are_refused(tmp_path, capsys):
    """Two files of per-sample rows (a run of windows 0-1 and one of window 2, as dataset.first_sample=2 gives)
    pool into the table of all three; the same window twice, other settings or another length: one line each."""
    def run(ids, setting="specattn p=0.9", length=8192):
        frame = pd.concat([rows("dense", [1.0] * len(ids), [1.0] * len(ids), [10] * len(ids), [0] * len(ids), [0] * len(ids)),
                           rows(setting, [1.5, 2.0, 1.2][:len(ids)], [1.0] * len(ids), [10] * len(ids), [5] * len(ids),
                                [10] * len(ids))])
        return frame.assign(sample_id=list(ids) * 2, context_len=length)
    first, second = run(["a#0", "b#0"]), run(["a#1"])
    paths = []
    for name, frame in (("first", first), ("second", second), ("again", run(["b#0"])),
                        ("other", run(["c#0"], "specattn p=0.95")), ("longer", run(["d#0"], length=32768))):
        paths.append(tmp_path / f"{name}.csv")
        frame.to_csv(paths[-1], index=False)
    assert main(["intervals", str(paths[0]), str(paths[1]), "--pool"]) == 0
    out = capsys.readouterr().out
    whole = interval_table(pd.concat([first, second], ignore_index=True)).set_index("setting")
    assert "pooled-first+second" in out and f"{whole.loc['specattn p=0.9', 'ppl_increase_pct']:.3f}" in out
    assert whole.loc["specattn p=0.9", "samples"] == 3
    for bad, message in ((paths[2], "sample b#0 is in both"), (paths[3], "has settings"), (paths[4], "differ in context_len")):
        assert main(["intervals", str(paths[0]), str(bad), "--pool"]) != 0
        assert message in capsys.readouterr().err


def test_runs_of_other_settings_on_the_same_windows_join_and_pair_across_runs(tmp_path, capsys):
    """One run per chunk size over the same two windows (the grid's layout): --join labels each sparse row by
    its chunk size, keeps dense once per window, and --versus pairs rows of different runs sample by sample; the
    same setting twice on a window, runs of other lengths, and --pool with --join are refused (one line each)."""
    def run(chunk, nll, length=8192):
        frame = pd.concat([rows("dense", [100.0, 150.0], [100.0, 150.0], [100, 100], [0, 0], [0, 0]),
                           rows("specattn p=0.9", nll, [100.0, 150.0], [100, 100], [chunk, chunk], [100, 100])])
        return frame.assign(sample_id=["a#0", "b#0"] * 2, chunk_size=chunk, context_len=length, model="m", dataset="d")
    paths = {}
    for name, frame in (("c8", run(8, [103.0, 153.0])), ("c16", run(16, [101.0, 151.0])),
                        ("c16again", run(16, [102.0, 152.0])), ("long", run(32, [101.0, 151.0], 32768))):
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    assert main(["intervals", "--join", str(paths["c8"]), str(paths["c16"]),
                 "--versus", "specattn p=0.9 chunk_size=16"]) == 0
    out = capsys.readouterr().out
    assert "joined-c8+c16" in out and "specattn p=0.9 chunk_size=8" in out and "dense chunk_size" not in out
    from specattn.results.intervals import join_samples

    joined = join_samples([run(8, [103.0, 153.0]), run(16, [101.0, 151.0])], ["c8", "c16"])
    assert (joined.setting == "dense").sum() == 2  # once per window
    table = interval_table(joined).set_index("setting")
    assert table.loc["dense", "samples"] == 2 and table.loc["specattn p=0.9 chunk_size=8", "samples"] == 2
    versus = paired_versus(joined, "specattn p=0.9 chunk_size=16").set_index("setting")
    assert versus.loc["specattn p=0.9 chunk_size=8", "ppl_increase_diff_pct"] == pytest.approx(
        100 * (math.exp(6 / 200) - math.exp(2 / 200)))
    assert versus.loc["specattn p=0.9 chunk_size=8", "sparse_kv_reduction_diff_pct"] == pytest.approx(8.0)  # 92% - 84%
    for args, message in ((["--join", str(paths["c16"]), str(paths["c16again"])], "same setting on the same window"),
                          (["--join", str(paths["c16"]), str(paths["long"])], "differ in context_len"),
                          (["--join", "--pool", str(paths["c8"]), str(paths["c16"])], "exclude each other")):
        assert main(["intervals", *args]) != 0
        assert message in capsys.readouterr().err
