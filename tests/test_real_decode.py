"""The real-weights decoding benchmark's logic on the CPU (tiny pair, float32, eager): every mode runs on
shared prefilled caches, the matched baselines get SpecAttn's measured kept fraction, tau and kept
fractions come out of the decoder, dense speculative decoding equals autoregressive decoding token for
token, and the lossless check says so (the GPU run is in docs/benchmarks.md)."""

from __future__ import annotations

import dataclasses
import gc
import math
import shutil
import statistics

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from specattn.bench.real_decode import (
    PointRunner,
    RealBenchConfig,
    agreement,
    cached_continuation_nll,
    continuation_nll,
    lossless,
    modes,
    per_prompt,
    run_point,
)
from specattn.core.errors import SpecAttnError
from specattn.decode.graph_engine import GraphDecoder, GraphSettings
from specattn.decode.kv_cache import SequenceKVCache
from specattn.models.pair import load_pair
from specattn.results.decoding_intervals import prompt_intervals

from .availability import needs_gpu
from .conftest import CONF
from .test_graph_engine import load, mapping, prompts


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    return load(tiny_model_dir, "cpu")


def config(pair, **overrides) -> RealBenchConfig:
    settings = dict(contexts=(120,), batches=(2,), prompts=4, new_tokens=16, p_values=(0.6, 0.9), match_p=0.6,
                    draft_reads=(), draft_refresh=4, draft_window=48, draft_sinks=8, gamma=4, chunk_size=8,
                    dense_layers=2, head_agg="mean", layer_map=mapping(pair), fused_layers=False, max_mem_gib=1.0,
                    seed=0)
    return RealBenchConfig(**{**settings, **overrides})


def test_every_mode_runs_on_shared_caches_and_the_matched_rows_read_specattns_fraction(pair):
    cfg = config(pair, draft_reads=("first_dense", "window"))
    ids = prompts(4, 120, 3)
    rows = run_point(pair, cfg, 120, 2, [ids[:2], ids[2:]], 1e11, lambda msg: None)
    frame = pd.DataFrame(rows).set_index("mode")
    assert list(frame.index) == ["ar", "dense", "specattn p=0.6", "specattn p=0.9", "streaming match=specattn p=0.6",
                                 "quest match=specattn p=0.6", "specattn p=0.6 draft=first_dense",
                                 "specattn p=0.6 draft=window", "dense draft=window"]
    assert frame.loc["specattn p=0.6 draft=first_dense", "draft_kept"] < 1.0
    assert frame.loc["dense draft=window", "bytes_draft_kv"] < frame.loc["dense", "bytes_draft_kv"]
    assert "error" not in frame or frame["error"].isna().all()
    assert (frame["groups"] == 2).all() and frame.loc["ar", "tau"] == 1.0
    assert 1.0 <= frame.loc["dense", "tau"] <= 5.0
    kept = frame.loc["specattn p=0.6", "verifier_kept"]
    assert 0.05 < kept < frame.loc["specattn p=0.9", "verifier_kept"] <= 1.0
    for row in ("streaming match=specattn p=0.6", "quest match=specattn p=0.6"):
        assert frame.loc[row, "kv_budget_frac"] == pytest.approx(kept)
        assert abs(frame.loc[row, "verifier_kept"] - kept) < 0.15  # the budget is in keys, the count in chunks
    assert math.isnan(frame.loc["dense", "verifier_kept"])  # no sparse layer
    assert (frame["roof_tokens_per_s"] > 0).all() and (frame["tokens_per_s"] > 0).all()
    agree = agreement(rows).set_index("mode")
    assert agree.loc["ar", "match_rate"] == 1.0 and agree.loc["dense", "first_divergence"] == 16
    # the same tokens (float32: dense SD = AR) get the same continuation perplexity; the sparse rows their own
    assert frame.loc["ar", "cont_ppl"] == pytest.approx(frame.loc["dense", "cont_ppl"], rel=1e-6)
    assert (frame["cont_ppl"] > 1.0).all() and frame["cont_ppl"].map(math.isfinite).all()
    # per prompt: the window indices of both groups, sums that give the row's tau and cont_ppl, agreement
    prompts_ = per_prompt(rows, 16).set_index(["mode", "prompt"])
    for mode, row in frame.iterrows():
        mine = prompts_.loc[mode]
        assert list(mine.index) == [0, 1, 2, 3]
        assert 4 * 16 / mine["steps"].sum() == pytest.approx(row["tau"])
        assert math.exp(mine["cont_nll"].sum() / (4 * 16)) == pytest.approx(row["cont_ppl"])
    assert (prompts_.loc["ar", "match_rate"] == 1.0).all() and (prompts_.loc["ar", "first_divergence"] == 16).all()
    assert prompts_.loc["specattn p=0.6", "first_divergence"].mean() == pytest.approx(
        agree.loc["specattn p=0.6", "first_divergence"])
    intervals = prompt_intervals(per_prompt(rows, 16).reset_index(drop=True), 16).set_index("mode")
    assert intervals.loc["ar", "cont_ppl_change"] == pytest.approx(0.0, abs=1e-6)
    assert intervals.loc["dense", "tau_ci95_low"] == intervals.loc["dense", "tau_ci95_high"] == 1.0
    low, mid, high = intervals.loc["specattn p=0.6", ["tau_ci95_low", "tau_retention", "tau_ci95_high"]]
    assert low <= mid <= high and mid == pytest.approx(frame.loc["specattn p=0.6", "tau"] / frame.loc["dense", "tau"])


def test_a_points_decoders_and_caches_are_freed_when_it_returns(pair):
    """The decoders are in reference cycles (Quest's selectors are closures over theirs): left to Python's cycle
    collector, one point's caches outlived it into the next (32K batch 16's 21 GB beside batch 32's own: out of
    memory on an H100). With automatic collection off, nothing of the point may be left when it returns."""
    def alive() -> int:
        return sum(isinstance(o, (GraphDecoder, SequenceKVCache)) for o in gc.get_objects())

    gc.collect()
    before = alive()
    gc.disable()
    try:
        rows = run_point(pair, config(pair), 120, 2, [prompts(2, 120, 3)], 1e11, lambda msg: None)
        assert alive() == before
    finally:
        gc.enable()
    assert "quest match=specattn p=0.6" in {r["mode"] for r in rows}  # the closures' mode ran


def test_matched_false_runs_every_mode_but_the_matched_baselines(pair):
    cfg = config(pair, draft_reads=("first_window",), matched=False, draft_dense_layers=0)
    ids = prompts(2, 120, 4)
    rows = run_point(pair, cfg, 120, 2, [ids], 1e11, lambda msg: None)
    frame = pd.DataFrame(rows).set_index("mode")
    assert list(frame.index) == ["ar", "dense", "specattn p=0.6", "specattn p=0.9", "specattn p=0.6 draft=first_window"]
    assert "error" not in frame or frame["error"].isna().all()
    # every draft layer windowed: its roofline reads less of the draft's cache than the default's two dense layers
    default = pd.DataFrame(run_point(pair, config(pair, draft_reads=("first_window",), matched=False), 120, 2, [ids],
                                     1e11, lambda msg: None)).set_index("mode")
    row = "specattn p=0.6 draft=first_window"
    assert frame.loc[row, "bytes_draft_kv"] < default.loc[row, "bytes_draft_kv"]
    assert frame.loc[row, "draft_kept"] < default.loc[row, "draft_kept"]


def test_repeated_timings_decode_the_same_tokens_and_report_their_spread(pair):
    """repeats=3 times each group's decoding three times: the median counts, and every measure but time is
    the single pass's (the repeats decode the same tokens from the same caches)."""
    ids = prompts(2, 120, 9)
    once, thrice = (pd.DataFrame(run_point(pair, config(pair, draft_reads=("reuse",), repeats=r), 120, 2, [ids], 1e11,
                                           lambda msg: None)).set_index("mode") for r in (1, 3))
    timing = ["tokens_per_s", "timing_spread", "roof_frac", "step_ms", "steady_tokens_per_s", "passes"]
    pd.testing.assert_frame_equal(once.drop(columns=timing), thrice.drop(columns=timing))
    assert (once["timing_spread"] == 0).all() and (thrice["timing_spread"] >= 0).all()
    assert thrice["timing_spread"].max() > 0  # three host-clock timings on the CPU are never all equal
    # one group: its time is step_ms times the steps of its slowest sequence; steady state never below tokens/s
    for mode, row in thrice.iterrows():
        group_ms = 2 * 16 / row["tokens_per_s"] * 1e3
        assert row["step_ms"] * max(row["prompt_steps"]) == pytest.approx(group_ms, rel=1e-9)
        assert row["steady_tokens_per_s"] == pytest.approx(2 * row["tau"] / row["step_ms"] * 1e3, rel=1e-12)
        assert row["steady_tokens_per_s"] >= row["tokens_per_s"] * (1 - 1e-12)
    assert thrice.loc["ar", "steady_tokens_per_s"] == pytest.approx(thrice.loc["ar", "tokens_per_s"], rel=1e-12)


def test_every_timed_pass_is_kept_in_run_order_and_the_medians_come_from_them(pair, tmp_path):
    """timings.csv's rows: repeats per (mode, group), in the order they ran; each group's median over its passes
    and the median of those over the groups give the mode's tokens/s; they survive the point's parquet part (a
    resumed run writes the same table); without nvidia-smi the GPU's state is NaN, not made up."""
    from specattn.bench.real_decode import pass_timings
    from specattn.runs.outputs import SampleParts

    ids = prompts(4, 120, 5)
    rows = run_point(pair, config(pair, repeats=3), 120, 2, [ids[:2], ids[2:]], 1e11, lambda msg: None)
    table = pass_timings(rows)
    modes_ = [r["mode"] for r in rows]
    assert len(table) == len(modes_) * 2 * 3
    assert table["at"].is_monotonic_increasing and (table["ms"] > 0).all()
    assert (table.groupby(["mode", "group"])["pass"].apply(sorted) == pd.Series([[0, 1, 2]] * 2 * len(modes_),
            index=table.groupby(["mode", "group"]).size().index)).all()
    for r in rows:
        mine = table[table["mode"] == r["mode"]]
        per_group = mine.groupby("group")["ms"].median()
        assert r["tokens_per_s"] == pytest.approx(statistics.median(2 * 16 / per_group * 1e3), rel=1e-12)
        assert r["timing_spread"] == pytest.approx(max((g.max() - g.min()) / g.median()
                                                       for _, g in mine.groupby("group")["ms"]), rel=1e-12)
    # the first pass of a group runs right after the group's prefill, every mode's passes one after the other
    first = table.groupby(["group", "mode"], sort=False)["at"].min().reset_index()
    assert list(first.sort_values("at")["group"]) == [0] * 4 + [1] * 4 + [0] * 2 + [1] * 2  # pass 1: matched rows
    if shutil.which("nvidia-smi") is None:
        assert table[["sm_mhz", "mem_mhz", "temp_c", "power_w"]].isna().all().all()
    parts = SampleParts(tmp_path)
    parts.save(0, pd.DataFrame(rows))
    pd.testing.assert_frame_equal(pass_timings(parts.load(0).to_dict("records")), table)


def test_policy_points_are_ratios_to_dense_speculative_decoding_at_each_point(tmp_path, monkeypatch):
    from specattn.results.plots import plot_policy_tradeoff, policy_points

    rows = pd.DataFrame([
        {"context": 32768, "batch": 16, "mode": "ar", "tokens_per_s": 2900.0, "tau": 1.0},
        {"context": 32768, "batch": 16, "mode": "dense", "tokens_per_s": 2500.0, "tau": 4.0},
        {"context": 32768, "batch": 16, "mode": "specattn p=0.95 draft=window", "tokens_per_s": 4500.0, "tau": 4.1},
        {"context": 16384, "batch": 4, "mode": "dense", "tokens_per_s": 1700.0, "tau": 4.0},
        {"context": 16384, "batch": 4, "mode": "specattn p=0.9", "tokens_per_s": 1785.0, "tau": 3.8}])
    points = policy_points(rows).set_index(["context", "mode"])
    assert len(points) == 4  # ar is not speculative: no point
    assert points.loc[(32768, "dense"), "speedup"] == 1.0 and points.loc[(32768, "dense"), "tau_retention"] == 1.0
    assert points.loc[(32768, "specattn p=0.95 draft=window"), "speedup"] == pytest.approx(1.8)
    assert points.loc[(32768, "specattn p=0.95 draft=window"), "tau_retention"] == pytest.approx(1.025)
    assert points.loc[(16384, "specattn p=0.9"), "speedup"] == pytest.approx(1.05)  # against its own point's dense
    assert points["steady_speedup"].isna().all()  # rows without steady_tokens_per_s
    steady = policy_points(rows.assign(steady_tokens_per_s=rows["tokens_per_s"] * [1, 1, 2, 1, 1]))
    assert steady.set_index(["context", "mode"]).loc[(32768, "specattn p=0.95 draft=window"), "steady_speedup"] == \
        pytest.approx(3.6)
    assert points[["step_ms", "verifier_kept", "roof_speedup", "roof_share"]].isna().all().all()  # columns absent
    # the roofline's ratio at each row's own tau and kept fraction, and the measured share of it
    roofed = policy_points(rows.assign(roof_tokens_per_s=[3000.0, 4000.0, 6000.0, 2000.0, 2200.0],
                                       steady_tokens_per_s=rows["tokens_per_s"] * [1, 1, 1.2, 1, 1],
                                       step_ms=[1.0, 2.0, 3.0, 4.0, 5.0], verifier_kept=[None, None, 0.2, None, 0.3]))
    window = roofed.set_index(["context", "mode"]).loc[(32768, "specattn p=0.95 draft=window")]
    assert window["roof_speedup"] == pytest.approx(1.5) and window["roof_share"] == pytest.approx(1.2)
    assert window["steady_roof_share"] == pytest.approx(1.8 * 1.2 / 1.5)
    assert (window["step_ms"], window["verifier_kept"]) == (3.0, 0.2)
    at16k = roofed.set_index(["context", "mode"]).loc[(16384, "specattn p=0.9")]
    assert at16k["roof_speedup"] == pytest.approx(1.1) and at16k["roof_share"] == pytest.approx(1.05 / 1.1)
    assert plot_policy_tradeoff(rows, tmp_path / "t.png").stat().st_size > 10_000
    from specattn.results import plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plot_policy_tradeoff(rows.assign(steady_tokens_per_s=rows["tokens_per_s"] * [1, 1, 2, 1, 1]), tmp_path / "s.png")
    top = drawn[0].axes[0]  # 32K: dense and the window policy, whose hollow steady point sits at 3.6x
    hollow = [c for c in top.collections if len(c.get_facecolors()) == 0]
    assert len(top.collections) == 3 and len(hollow) == 1
    assert tuple(hollow[0].get_offsets()[0]) == pytest.approx((102.5, 3.6))
    assert "steady" in top.get_ylabel()


def test_decode_runs_pool_into_one_table_and_the_by_context_figure(tmp_path, capsys):
    """Two runs (32K in one, 2K and 8K in the other; 8K batch 16 in both: the later run's row wins), the
    continuation perplexity change over dense SD's, the by-context figure with a row of panels a batch, and the
    CLI's one-line refusal of a folder that is not a decode_real run."""
    from matplotlib.image import imread

    from specattn.results.collect import main
    from specattn.results.plots import plot_decoding_by_context, policy_points, pool_decode_runs

    def point(context, batch, speedup, tau, ppl):
        return [{"context": context, "batch": batch, "mode": "ar", "tokens_per_s": 900.0, "tau": 1.0, "cont_ppl": 1.2},
                {"context": context, "batch": batch, "mode": "dense", "tokens_per_s": 1000.0, "tau": 4.0,
                 "cont_ppl": 1.2},
                {"context": context, "batch": batch, "mode": "specattn p=0.9", "tokens_per_s": 1000.0 * speedup,
                 "tau": tau, "cont_ppl": ppl}]
    first = pd.DataFrame(point(32768, 16, 1.1, 3.9, 1.23) + point(8192, 16, 0.5, 2.0, 2.4))
    second = pd.DataFrame(point(2048, 16, 0.95, 4.1, 1.2) + point(8192, 16, 0.9, 3.8, 1.26) + point(8192, 4, 1.0, 4, 1.2))
    rows = pool_decode_runs([first, second])
    assert len(rows) == 12
    points = policy_points(rows).set_index(["context", "batch", "mode"])
    at8k = points.loc[(8192, 16, "specattn p=0.9")]
    assert at8k["speedup"] == pytest.approx(0.9) and at8k["tau_retention"] == pytest.approx(0.95)
    assert at8k["cont_ppl_change"] == pytest.approx(0.05)
    runs = []
    for i, frame in enumerate((first, second)):
        runs.append(tmp_path / f"run{i}")
        runs[-1].mkdir()
        frame.assign(new_tokens=16).to_csv(runs[-1] / "modes.csv", index=False)
        prompts_ = [{"context": c, "batch": b, "mode": m, "prompt": k, "steps": 4 + k + (m != "dense"), "cont_nll": 3.0 + k}
                    for c, b in frame[["context", "batch"]].drop_duplicates().itertuples(index=False)
                    for m in ("dense", "specattn p=0.9") for k in range(3)]
        pd.DataFrame(prompts_).to_csv(runs[-1] / "prompts.csv", index=False)
    assert main(["decoding", *map(str, runs), "-o", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert "0.900" in out and "0.500" not in out  # the later run's 8K batch-16 row
    assert "paired over prompts" in out and "0.8333" in out  # tau retention: (4 + 5 + 6) / (5 + 6 + 7) steps
    for name in ("policy_tradeoff.png", "decoding_by_context.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 10_000
    # a row of panels a batch (4 and 16 here; 4.4 inches a row at 120 dpi), or only the batch asked for
    assert imread(tmp_path / "fig" / "decoding_by_context.png").shape[0] == round(2 * 4.4 * 120)
    assert imread(plot_decoding_by_context(rows, tmp_path / "one.png", batch=16)).shape[0] == round(4.4 * 120)
    assert main(["decoding", str(tmp_path), "-o", str(tmp_path / "fig")]) != 0
    assert "no modes.csv in" in capsys.readouterr().err
    # --prompts: per prompt the mode's tau ratio, a column a batch, and how the batches agree (8K: batch 4 and 16)
    assert main(["decoding", *map(str, runs), "-o", str(tmp_path / "fig"), "--prompts", "specattn p=0.9"]) == 0
    agreement = capsys.readouterr().out.split("how the batches agree")[1].splitlines()
    assert agreement[2].split()[:4] == ["8192", "4", "16", "3"]  # context, the two batches, the prompts both ran
    assert main(["decoding", *map(str, runs), "-o", str(tmp_path / "fig"), "--prompts", "quest"]) != 0
    assert "--prompts 'quest' is not a mode of these runs" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()  # a run without prompts.csv cannot say which prompt lost what
    shutil.copy(runs[0] / "modes.csv", tmp_path / "bare" / "modes.csv")
    assert main(["decoding", str(tmp_path / "bare"), "-o", str(tmp_path / "fig"), "--prompts", "specattn p=0.9"]) != 0
    assert "--prompts 'specattn p=0.9' needs every run's prompts.csv" in capsys.readouterr().err
    # --markdown: the docs' table, points by batch then longest context first, each with the run it comes from
    (runs[0] / "config.yaml").write_text("experiment:\n  fused_layers: true\n  fold_norms: true\n"
                                         "  draft_epilogue_rows: 16\n  draft_down_split: 0\n")
    first.assign(new_tokens=16, prompts=32, groups=2).to_csv(runs[0] / "modes.csv", index=False)  # the count column
    assert main(["decoding", *map(str, runs), "-o", str(tmp_path / "fig"), "--markdown", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert lines[0].startswith("| context, batch | mode |") and lines[1] == "|" + "---|" * 15
    assert [line.split(" | ")[0] for line in lines[2:] if not line.startswith("|  |")] == [
        "| 8K, 4", "| 32K, 16", "| 8K, 16", "| 2K, 16"]
    at8k = lines[lines.index(next(line for line in lines if line.startswith("| 8K, 16"))) + 2]
    assert at8k.startswith("|  | SpecAttn p=0.9 | ") and "| 3.80 | - | 0.900x |" in at8k  # the later run's row
    assert at8k.endswith("| - | run1 | no | no |")  # no prompts or groups recorded in that run, nor its settings
    assert "83.3% [" in at8k  # tau retention with its interval (steps 4 + 5 + 6 against 5 + 6 + 7)
    top = lines[2:5]  # 8K batch 4: AR's tokens/s over dense speculative decoding's, dense's own, then SpecAttn
    assert "| AR |" in top[0] and "0.900x (900 tok/s)" in top[0] and "| dense SD |" in top[1] and "1 (1,000 tok/s)" in top[1]
    assert any(line.startswith("| 32K, 16 | AR") and line.endswith("| 32 (2) | run0 | yes | yes |") for line in lines)
    assert f"table: {tmp_path / 't.md'}" in capsys.readouterr().out
    # --tags: the same 8K batch-16 point in both runs, side by side, each against its own dense (not pooled)
    assert main(["decoding", *map(str, runs), "--tags", "one", "two", "--only", "p=0.9", "-o",
                 str(tmp_path / "tagged")]) == 0
    out = capsys.readouterr().out
    assert "specattn p=0.9 [one]" in out and "specattn p=0.9 [two]" in out and "0.500" in out and "0.900" in out
    assert out.count(" dense ") == 4 and " ar " not in out  # one dense row per point: 32K, 8K x 2 batches, 2K
    assert (tmp_path / "tagged" / "policy_tradeoff.png").stat().st_size > 10_000
    assert main(["decoding", *map(str, runs), "--tags", "one", "-o", str(tmp_path / "tagged")]) == 2
    assert "one tag per run" in capsys.readouterr().err


def test_a_points_intervals_do_not_depend_on_what_else_is_pooled_with_it():
    """A generator per point and mode: the docs' pooled real table gives each point the interval its own run gave."""
    gen = np.random.default_rng(1)

    def point(context: int) -> pd.DataFrame:
        return pd.DataFrame([{"context": context, "batch": 4, "mode": mode, "prompt": k,
                              "steps": int(gen.integers(50, 90)), "cont_nll": float(gen.normal(40, 8))}
                             for mode in ("dense", "specattn p=0.9", "quest") for k in range(12)])

    alone = point(8192)
    pooled = pd.concat([point(2048), alone, point(32768)], ignore_index=True)
    first = prompt_intervals(alone, 256).set_index("mode")
    again = prompt_intervals(pooled, 256)
    again = again[again["context"] == 8192].set_index("mode")
    assert first.loc["quest", "tau_ci95_high"] > first.loc["quest", "tau_ci95_low"]  # a real spread, not a point
    pd.testing.assert_frame_equal(again, first)


def test_prompt_intervals_pair_each_prompt_with_dense_on_the_same_prompt():
    """Two prompts, dense takes 10 and 20 steps for 40 tokens, the mode 20 and 20, and its NLL is 40 nats above
    dense's on prompt 1 only: tau retention 30/40, ppl change exp(40/80) - 1 (pooled over both prompts); every
    resample draws the same prompts for both, so an identical mode has a zero-width interval."""
    rows = pd.DataFrame([
        {"context": 8, "batch": 2, "mode": "dense", "prompt": 0, "steps": 10, "cont_nll": 10.0},
        {"context": 8, "batch": 2, "mode": "dense", "prompt": 1, "steps": 20, "cont_nll": 30.0},
        {"context": 8, "batch": 2, "mode": "copy", "prompt": 0, "steps": 10, "cont_nll": 10.0},
        {"context": 8, "batch": 2, "mode": "copy", "prompt": 1, "steps": 20, "cont_nll": 30.0},
        {"context": 8, "batch": 2, "mode": "sparse", "prompt": 1, "steps": 20, "cont_nll": 70.0},
        {"context": 8, "batch": 2, "mode": "sparse", "prompt": 0, "steps": 20, "cont_nll": 10.0}])
    table = prompt_intervals(rows, 40).set_index("mode")
    assert table.loc["copy", ["tau_ci95_low", "tau_ci95_high", "ppl_ci95_low", "ppl_ci95_high"]].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert table.loc["sparse", "tau_retention"] == pytest.approx(30 / 40)
    assert table.loc["sparse", "cont_ppl_change"] == pytest.approx(math.exp(40 / 80) - 1)
    assert table.loc["sparse", "tau_ci95_low"] == pytest.approx(0.5) and table.loc["sparse", "tau_ci95_high"] == 1.0
    assert table.loc["sparse", "prompts"] == 2
    with pytest.raises(SpecAttnError, match="prompts.csv"):
        prompt_intervals(rows.drop(columns="steps"), 40)


def test_step_costs_recover_a_known_fixed_cost_and_bandwidth():
    """Rows generated from step = fixed + bytes / bandwidth (dense: 6 ms + GB / 3 TB/s; a sparse mode: 8 ms +
    GB / 2 TB/s over fewer bytes) give those back, the cap is dense's longest step over its weights-only fit,
    and a mode measured at fewer than 3 contexts gets no fit."""
    from specattn.results.step_costs import step_costs

    rows = []
    for context, kv_gb in ((2048, 1.0), (8192, 4.0), (16384, 8.0), (32768, 16.0)):
        for mode, fixed, tbps, share in (("dense", 6.0, 3.0, 1.0), ("specattn p=0.9", 8.0, 2.0, 0.3)):
            total = 7.0 + share * kv_gb  # 7 GB of weights
            step_ms = fixed + total / tbps
            rows.append({"context": context, "batch": 16, "mode": mode, "tau": 4.0, "tokens_per_s": 16 * 4.0 / step_ms * 1e3,
                         "bytes_total": total * 1e9, "bytes_verifier_weights": 3e9, "bytes_draft_weights": 4e9})
    rows.append({"context": 2048, "batch": 16, "mode": "quest", "tau": 4.0, "tokens_per_s": 1e4, "bytes_total": 8e9,
                 "bytes_verifier_weights": 3e9, "bytes_draft_weights": 4e9})
    costs = step_costs(pd.DataFrame(rows)).set_index("mode")
    assert "quest" not in costs.index
    assert costs.loc["dense", "fixed_ms"] == pytest.approx(6.0) and costs.loc["dense", "bandwidth_TBps"] == pytest.approx(3.0)
    assert costs.loc["specattn p=0.9", "fixed_ms"] == pytest.approx(8.0)
    assert costs.loc["specattn p=0.9", "bandwidth_TBps"] == pytest.approx(2.0)
    assert costs.loc["dense", "max_residual_ms"] == pytest.approx(0.0, abs=1e-9)
    assert costs.loc["dense", "cap_at_longest"] == pytest.approx((6.0 + 23.0 / 3.0) / (6.0 + 7.0 / 3.0))


def test_step_times_of_archived_rows_come_from_each_groups_slowest_prompt():
    """Rows without step_ms get it from prompts.csv: two groups of 2 whose slowest prompts took 10 and 14 steps,
    16 tokens each, 100 tokens/s -> 2 * 16 / 100 s over 12 steps; step_costs then fits the measured step, not the
    apparent batch * tau / tokens_per_s (which counts the wait for the slowest sequence)."""
    from specattn.results.step_costs import step_costs, with_step_times

    prompts = pd.DataFrame({"context": 64, "batch": 2, "mode": "dense", "prompt": [0, 1, 2, 3], "steps": [10, 6, 14, 8]})
    rows = pd.DataFrame([{"context": 64, "batch": 2, "mode": "dense", "new_tokens": 16, "tokens_per_s": 100.0,
                          "tau": 64 / 38}])
    out = with_step_times(rows, prompts).iloc[0]
    assert out["step_ms"] == pytest.approx(1e3 * 2 * 16 / 100.0 / 12)
    assert out["steady_tokens_per_s"] == pytest.approx(2 * (64 / 38) / out["step_ms"] * 1e3)
    assert out["steady_tokens_per_s"] > rows["tokens_per_s"].iloc[0]  # 38 / 4 = 9.5 steps on average, 12 timed
    measured = with_step_times(rows.assign(step_ms=5.0), prompts).iloc[0]  # a measured step_ms is kept
    assert measured["step_ms"] == 5.0
    fits = []
    for step in (None, 2.0):
        frame = pd.DataFrame([{"context": c, "batch": 16, "mode": "dense", "tau": 4.0, "tokens_per_s": 1000.0,
                               "bytes_total": c * 1e6, "bytes_verifier_weights": 1e9, "bytes_draft_weights": 1e9,
                               **({} if step is None else {"step_ms": step + c / 1e4})} for c in (1e3, 2e3, 4e3)])
        fits.append(step_costs(frame).iloc[0])
    assert fits[0]["fixed_ms"] == pytest.approx(64.0) and fits[1]["fixed_ms"] == pytest.approx(2.0)


def test_continuation_nll_is_the_dense_verifiers_own(pair, tiny_model_dir):
    """Against transformers' own forward of the verifier (SDPA, float32), loaded separately."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    prompt = prompts(1, 50, 7)[0]
    tokens = torch.randint(3, 259, (9,), generator=torch.Generator().manual_seed(8)).tolist()
    with torch.inference_mode():
        logits = reference(torch.cat([prompt, torch.tensor(tokens)])[None]).logits[0, 49:58].float()
    expected = float(torch.nn.functional.cross_entropy(logits, torch.tensor(tokens), reduction="sum"))
    assert continuation_nll(pair, prompt, tokens) == pytest.approx(expected, rel=1e-5)


def cached_against_full_prefill(pair, length: int, new: int, rows: int):
    """The cached scorer over a runner's shared caches after a mode decoded, against one full prefill per
    sequence; and the prompt's keys are left as the prefill wrote them (the next mode reads them)."""
    cfg = config(pair, new_tokens=new)
    batch = prompts(3, length, 17)
    runner = PointRunner(pair, cfg, length, 3, 1e11, lambda msg: None)
    runner.prefill(batch)
    keys = runner.caches[0].keys[0][:, :, :length - 1].clone()
    settings = GraphSettings(cfg.gamma, cfg.chunk_size, cfg.dense_layers, "mean", cfg.layer_map, 0.6)
    out = runner.run_mode("specattn p=0.6", settings, batch)
    reference = [continuation_nll(pair, prompt, t) for prompt, t in zip(batch, out["tokens_out"])]
    runner.decoders["specattn p=0.6"].resume(batch)
    again = cached_continuation_nll(pair, runner.caches[0], batch, out["tokens_out"], rows, cfg.chunk_size)
    assert torch.equal(runner.caches[0].keys[0][:, :, :length - 1], keys)
    assert runner.caches[0].lengths.tolist() == [length - 1] * 3
    return out["cont_nll"], again, reference


@pytest.mark.parametrize("new,rows", [(16, 5), (13, 5), (7, 1), (9, 16)])
def test_cached_continuation_nll_equals_a_full_prefill_per_sequence(pair, new, rows):
    """Pieces of ``rows`` tokens over the shared cache (a last piece shorter than the others: 13 = 2 x 5 + 3;
    one token per forward; more rows than tokens) give each sequence's full-prefill NLL."""
    during, again, reference = cached_against_full_prefill(pair, 120, new, rows)
    assert again == pytest.approx(reference, rel=1e-5)
    if rows == 5:  # what run_mode itself reported (gamma + 1 = 5 rows)
        assert during == pytest.approx(reference, rel=1e-5)


@needs_gpu
def test_cuda_cached_continuation_nll_equals_a_full_prefill_in_bfloat16(tiny_model_dir):
    """The decoder's dense kernel with gamma + 1 rows per forward against the SDPA prefill: bfloat16 rounding
    only (a mean NLL per token within 2%)."""
    cuda_pair = load(tiny_model_dir, "cuda", torch.bfloat16)
    during, again, reference = cached_against_full_prefill(cuda_pair, 300, 40, 5)
    for got in (during, again):
        assert got == pytest.approx(reference, rel=0.02)


def test_tau_and_acceptance_count_the_tokens_kept_when_the_last_step_overshoots(tiny_model_dir):
    """The draft is the verifier itself (all 6 layers), so dense verification accepts every drafted token:
    16 new tokens take 4 steps of gamma + 1 = 5 tokens (20), the last of which keeps 1, its first drafted
    token. tau = 16 / 4 = 4 (tau_steps = 20 / 4 = 5); acceptance up to the output's end: 3 x 4 + 1
    drafted, all accepted (acceptance_steps: 16 of 16)."""
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path, cfg.draft.layers = str(tiny_model_dir), list(range(6))
    full = load_pair(cfg, torch.device("cpu"), torch.float32)
    bench = config(full, p_values=(), new_tokens=16)
    rows = run_point(full, bench, 120, 2, [prompts(2, 120, 5)], 1e11, lambda msg: None)
    frame = pd.DataFrame(rows).set_index("mode")
    assert frame.loc["dense", "tau"] == 4.0 and frame.loc["dense", "tau_steps"] == 5.0
    assert frame.loc["dense", "acceptance"] == 1.0 and frame.loc["dense", "acceptance_steps"] == 1.0
    assert frame.loc["ar", "tau"] == frame.loc["ar", "tau_steps"] == 1.0 and math.isnan(frame.loc["ar", "acceptance"])


def test_a_mode_whose_decoder_failed_to_set_up_is_not_reused_by_the_next_group(pair, monkeypatch):
    """A decoder is kept for the next groups only once it is set up (on the GPU: captured). A failure there fails that
    group's mode, and the next group builds and sets up its own again: it never times a half-built decoder (on the
    GPU the next group replayed nothing and ran eagerly, timed as if replayed)."""
    cfg = config(pair, p_values=(0.6,))
    ids = prompts(4, 120, 3)
    failing, built = {"left": 1}, []
    real_init, real_resume = GraphDecoder.__init__, GraphDecoder.resume

    def init_counted(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self.settings.mode)

    def resume_failing_once(self, prompts_):
        if self.settings.mode == "specattn" and failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("operation not permitted when stream is capturing")
        return real_resume(self, prompts_)

    monkeypatch.setattr(GraphDecoder, "__init__", init_counted)
    monkeypatch.setattr(GraphDecoder, "resume", resume_failing_once)
    rows = run_point(pair, cfg, 120, 2, [ids[:2], ids[2:]], 1e11, lambda msg: None)
    frame = pd.DataFrame(rows).set_index("mode")
    assert frame.loc["specattn p=0.6", "groups"] == 1 and frame.loc["dense", "groups"] == 2  # group 0's failed
    assert frame.loc["specattn p=0.6", "prompt_ids"] == [2, 3]
    assert built.count("specattn") == 2  # the failed mode built a fresh decoder for the second group


def test_lossless_check_on_float32_finds_no_difference(pair):
    frame = lossless(pair, config(pair), prompts(3, 90, 8), lambda msg: None)
    assert len(frame) == 6 and frame["identical"].all()


def test_a_points_memory_is_its_caches_and_prefill_and_max_mem_gib_skips_it(pair):
    """point_bytes: both caches exactly as PointRunner allocates them, plus the prefill's largest MLP activations;
    max_mem_gib skips a point (a reason naming the setting), and a point over the device's free memory is refused
    with a one-line error before it allocates."""
    from specattn.bench.real_decode import check_free_memory, point_bytes, skip_reason, weight_bytes

    cfg = config(pair)
    runner = PointRunner(pair, cfg, 120, 2, 1e11, lambda msg: None)
    caches = sum(t.numel() * t.element_size() for c in runner.caches for t in (c.keys, c.values))
    v = pair.verifier.config
    prefill = 2 * 120 * (3 * v.intermediate_size + 4 * v.hidden_size) * pair.verifier.dtype.itemsize  # one group of 2
    assert point_bytes(pair, cfg, 120, 2) == caches + prefill
    assert weight_bytes(pair) == sum(p.numel() * p.element_size() for m in (pair.verifier, pair.draft)
                                     for p in (*m.parameters(), *m.buffers()))
    assert skip_reason(pair, cfg, 120, 2) is None  # max_mem_gib=1.0 holds the tiny pair
    small = dataclasses.replace(cfg, max_mem_gib=(weight_bytes(pair) + caches) / 2**30)  # the prefill does not fit
    reason = skip_reason(pair, small, 120, 2)
    assert reason.startswith("L=120 B=2: skipped") and "experiment.max_mem_gib=" in reason
    check_free_memory(pair, cfg, 120, 2, caches + prefill)
    with pytest.raises(SpecAttnError, match=r"L=120 B=2 needs about .* GiB free: lower experiment.max_mem_gib"):
        check_free_memory(pair, cfg, 120, 2, caches + prefill - 1)


def test_targets_and_summary_from_rows():
    from specattn.experiments.decode_real import render, targets

    rows = pd.DataFrame([
        {"context": 32768, "batch": 16, "mode": "dense", "verify": "dense", "draft_reads": "dense", "tau": 3.0,
         "tokens_per_s": 1000.0, "steady_tokens_per_s": 1300.0, "roof_tokens_per_s": 1500.0,
         "verifier_kept": float("nan"), "error": None},
        {"context": 32768, "batch": 16, "mode": "specattn p=0.95", "verify": "specattn", "draft_reads": "dense",
         "tau": 3.0, "tokens_per_s": 1180.0, "steady_tokens_per_s": 1430.0, "roof_tokens_per_s": 1800.0,
         "verifier_kept": 0.3, "error": None},
        {"context": 32768, "batch": 16, "mode": "specattn p=0.95 draft=reuse", "verify": "specattn",
         "draft_reads": "reuse", "tau": 2.9, "tokens_per_s": 1700.0, "steady_tokens_per_s": 2600.0,
         "roof_tokens_per_s": 3000.0, "verifier_kept": 0.3, "error": None},
    ]).assign(cont_ppl=[1.2, 1.21, 1.26])
    loss = pd.DataFrame([{"reference": "ar", "compared": "dense", "prompt": 0, "identical": False,
                          "first_divergence": 7, "top2_margin": 0.1},
                         {"reference": "ar", "compared": "dense", "prompt": 1, "identical": True,
                          "first_divergence": 16, "top2_margin": float("nan")}])
    lines = targets(rows, loss)
    assert "1.18x (steady state 1.10x) = 98% of it (target >= 85%: met; >= 1.15x: met)" in lines[0]
    assert ("1.70x (steady state 2.00x) dense speculative decoding with tau 96.7% of dense's (target >= 1.6x with "
            "tau >= 95%: met); the dense verifier's continuation ppl +5.0% over dense's") in lines[1]
    assert lines[2].startswith("lossless: 1 of 2 comparisons differ, 0 not explained")
    text = render(rows, pd.DataFrame(), loss, {"gpu": "test"}, 4e12, 4.4e12)
    assert "### Targets" in text and "### 32768 tokens, batch 16" in text and "steady_vs_dense_sd" in text
    assert "Skipped" not in text
    skipped = render(rows, pd.DataFrame(), loss, {"gpu": "test"}, 4e12, 4.4e12, ["L=65536 B=32: skipped, ..."])
    assert "### Skipped for memory\n- L=65536 B=32: skipped, ..." in skipped
    assert "(steady state" not in targets(rows.drop(columns="steady_tokens_per_s"), loss)[0]  # rows before 12-03


def test_lossless_prompts_zero_skips_the_check_and_negative_is_refused():
    from hydra import compose, initialize_config_dir

    from specattn.core.errors import SpecAttnError
    from specattn.experiments.decode_real import check

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for value in (0, 32):
            check(compose("config", overrides=["experiment=decode_real", f"experiment.lossless_prompts={value}"]))
        with pytest.raises(SpecAttnError, match="experiment.lossless_prompts=-1"):
            check(compose("config", overrides=["experiment=decode_real", "experiment.lossless_prompts=-1"]))


def test_fold_norms_is_on_by_default_and_checked_before_weights_load():
    from hydra import compose, initialize_config_dir

    from specattn.core.errors import SpecAttnError
    from specattn.experiments.decode_real import check

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=decode_real"])
        check(cfg)
        assert cfg.experiment.fold_norms is True and cfg.experiment.fused_layers is True
        check(compose("config", overrides=["experiment=decode_real", "experiment.fused_layers=false"]))  # no fold then
        with pytest.raises(SpecAttnError, match="experiment.fold_norms"):
            check(compose("config", overrides=["experiment=decode_real", "experiment.fold_norms=yes"]))


def test_prompt_windows_take_the_largest_point_and_prompts_csv_names_each_window():
    """decode_real cuts each context's windows once, before the weights (as many as its largest point takes: a
    point takes their first ones), refuses too few naming the key that asked for them, and prompts.csv names the
    window (``document#round``) each prompt index took, after ``first_sample`` too."""
    from hydra import compose, initialize_config_dir

    from specattn.data.sources import Document
    from specattn.experiments.decode_real import prompt_windows, with_sources
    from specattn.models.byte_tokenizer import byte_tokenizer

    docs = [Document("a", "a" * 200), Document("b", "b" * 130), Document("c", "c" * 70)]  # windows of 64: 3, 2, 1
    tokenizer = byte_tokenizer()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        def cfg(*extra):
            return compose("config", overrides=["experiment=decode_real", "experiment.contexts=[64,100]", *extra])

        windows = prompt_windows(cfg("experiment.batches=[1,3]", "experiment.prompts=2"), docs, tokenizer)
        assert {c: [w.sample_id for w in ws] for c, ws in windows.items()} == {64: ["a#0", "b#0", "c#0"],
                                                                          100: ["a#0", "b#0", "a#1"]}
        later = prompt_windows(cfg("experiment.contexts=[64]", "experiment.batches=[1]", "experiment.prompts=2",
                                   "dataset.first_sample=3"), docs, tokenizer)
        assert [w.sample_id for w in later[64]] == ["a#1", "b#1"]
        for extra, asked in ((["experiment.batches=[7]", "experiment.prompts=2"], "experiment.batches=7"),
                             (["experiment.batches=[1]", "experiment.prompts=7"], "experiment.prompts=7")):
            with pytest.raises(SpecAttnError, match=f"holds only 6 windows of experiment.contexts=64 tokens, fewer "
                                                    f"than {asked}.*: lower {asked.split('=')[0]} or experiment.contexts"):
                prompt_windows(cfg("experiment.contexts=[64]", *extra), docs, tokenizer)
    prompts = pd.DataFrame({"context": [64, 100, 64], "batch": [1, 1, 3], "mode": ["dense", "ar", "dense"],
                            "prompt": [0, 2, 2], "steps": [9, 30, 8]})
    named = with_sources(prompts, windows)
    assert list(named.columns) == ["context", "batch", "mode", "prompt", "source", "steps"]
    assert list(named["source"]) == ["a#0", "a#1", "c#0"] and named["steps"].tolist() == [9, 30, 8]  # by context
    assert with_sources(pd.DataFrame(), windows).empty


def test_kernel_launches_are_settings_checked_before_weights_load():
    from hydra import compose, initialize_config_dir

    from specattn.experiments.decode_real import bench_config, check
    from specattn.gpu.kernels.rows_config import RowsConfig
    from specattn.gpu.kernels.split_config import SplitConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=decode_real"])
        check(cfg)
        plain = bench_config(cfg, tuple(range(28)))
        assert plain.split is None and plain.rows is None  # the kernels' defaults
        assert plain.sparse_split == SplitConfig(block_n=128, stages=2)  # the list layers' (measured)
        cfg = compose("config", overrides=["experiment=decode_real", "experiment.split.warps=2",
                                           "experiment.split.min_chunks=4", "experiment.rows.block_n=128",
                                           "experiment.rows.blocks=2"])
        check(cfg)
        tuned = bench_config(cfg, tuple(range(28)))
        assert tuned.split == SplitConfig(warps=2, min_chunks=4) and tuned.rows == RowsConfig(128, 2)
        assert tuned.draft_dense_layers is None and tuned.matched
        cfg = compose("config", overrides=["experiment=decode_real", "experiment.sparse_split.ctas_per_sm=4",
                                           "experiment.draft_dense_layers=0", "experiment.matched=false"])
        check(cfg)
        sweep = bench_config(cfg, tuple(range(28)))
        assert sweep.sparse_split == SplitConfig(128, stages=2, ctas_per_sm=4) and sweep.split is None
        assert sweep.draft_dense_layers == 0 and not sweep.matched and sweep.row0_from_scores
        assert sweep.draft_split == plain.draft_split == SplitConfig(block_n=128, stages=3)  # the measured default
        assert all(s.draft_split == plain.draft_split and s.split is None for _, s in modes(plain, 0.3))
        cfg = compose("config", overrides=["experiment=decode_real", "experiment.draft_split.block_n=null",
                                           "experiment.draft_split.stages=null"])
        check(cfg)
        assert bench_config(cfg, tuple(range(28))).draft_split is None  # all null: the draft takes split's launch
        cfg = compose("config", overrides=["experiment=decode_real", "experiment.split.merge_tile=16",
                                           "experiment.sparse_split.ctas_per_sm=3"])
        check(cfg)
        tuned = bench_config(cfg, tuple(range(28)))
        assert tuned.split == SplitConfig(merge_tile=16)
        assert tuned.sparse_split == SplitConfig(128, stages=2, ctas_per_sm=3)
        for bad, match in [("experiment.split.block_n=48", r"experiment.split=\{'block_n': 48\}.*powers of two"),
                           ("experiment.split.merge_tile=64", r"experiment.split=\{'merge_tile': 64\}.*at most 32"),
                           ("experiment.sparse_split.merge_tile=24", r"merge_tile.*powers of two"),
                           ("experiment.rows.blocks=0", r"experiment.rows=\{'blocks': 0\}"),
                           ("experiment.sparse_split.warps=0", r"experiment.sparse_split=\{.*'warps': 0.*\}"),
                           ("experiment.draft_split.block_n=96",
                            r"experiment.draft_split=\{'block_n': 96, .*'stages': 3.*\}"),
                           ("experiment.draft_dense_layers=-1", "experiment.draft_dense_layers=-1"),
                           ("experiment.matched=maybe", "experiment.matched='maybe' must be true or false")]:
            with pytest.raises(SpecAttnError, match=match):
                check(compose("config", overrides=["experiment=decode_real", bad]))


def test_a_point_killed_after_a_group_resumes_there_with_the_rows_of_an_uninterrupted_run(pair, tmp_path):
    """decode_real keeps each finished prompt group (GroupParts): a run killed after the matched pass's first
    group resumes from the three groups it saved, decodes only the last, and gives the uninterrupted run's rows
    (everything but the timings, which are this process's)."""
    from specattn.runs.outputs import GroupParts

    cfg, ids = config(pair, draft_reads=("first_window",)), prompts(4, 120, 3)
    groups = [ids[:2], ids[2:]]
    whole = pd.DataFrame(run_point(pair, cfg, 120, 2, groups, 1e11, lambda msg: None))

    class Killed(Exception):
        pass

    class KilledAfterMatchedGroup0(GroupParts):
        def save(self, pass_index, group, results):
            super().save(pass_index, group, results)
            if (pass_index, group) == (1, 0):
                raise Killed

    with pytest.raises(Killed):
        run_point(pair, cfg, 120, 2, groups, 1e11, lambda msg: None, KilledAfterMatchedGroup0(tmp_path, "point-00000"))
    store = GroupParts(tmp_path, "point-00000")
    assert sorted(p.name for p in store.folder.iterdir()) == ["pass0-group0000.json", "pass0-group0001.json",
                                                               "pass1-group0000.json"]
    logs = []
    resumed = pd.DataFrame(run_point(pair, cfg, 120, 2, groups, 1e11, logs.append, store))
    assert sum("resumed from its part" in msg for msg in logs) == 3
    assert store.path(1, 1).is_file()  # the one group decoded again
    timings = ["tokens_per_s", "step_ms", "steady_tokens_per_s", "timing_spread", "roof_frac", "passes"]
    assert list(resumed["mode"]) == list(whole["mode"]) and len(whole) == 7
    pd.testing.assert_frame_equal(resumed.drop(columns=timings), whole.drop(columns=timings))
    store.clear()
    assert not store.folder.exists()


def test_a_damaged_group_part_is_a_one_line_error_naming_it_and_the_fix(tmp_path):
    from specattn.core.errors import SpecAttnError
    from specattn.runs.outputs import GroupParts

    store = GroupParts(tmp_path, "point-00003")
    store.save(0, 2, {"dense": {"tau": 3.5, "tokens_out": [[1, 2]], "cont_nll": [float("nan")]}})
    assert store.load(0, 2)["dense"]["tokens_out"] == [[1, 2]] and store.load(0, 1) is None
    store.path(0, 2).write_text('{"dense": {"tau": 3.')
    with pytest.raises(SpecAttnError, match=r"pass0-group0002.json is unreadable .*delete it .* rerun=true"):
        store.load(0, 2)


def test_gpu_state_parses_nvidia_smi_and_gives_nan_where_a_field_or_the_tool_is_missing(tmp_path, monkeypatch):
    from specattn.bench.timing import gpu_state

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\necho '1980, 3201, 41, [N/A]'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    state = gpu_state(3)
    assert [state[k] for k in ("sm_mhz", "mem_mhz", "temp_c")] == [1980.0, 3201.0, 41.0]
    assert math.isnan(state["power_w"])
    assert "--id=3" in (tmp_path / "args").read_text()
    smi.write_text("#!/bin/sh\nexit 9\n")  # a failing driver: NaN, not an exception in the middle of a run
    assert all(math.isnan(v) for v in gpu_state().values())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert all(math.isnan(v) for v in gpu_state().values())


def test_other_layer_maps_run_beside_the_same_dense_baselines_and_the_roofline_counts_their_rows(pair):
    """experiment.layer_maps: SpecAttn p=match_p and each policy again under each named map, in the same run (one
    dense baseline for all); a copy of the run's own map decodes exactly the run's tokens with the same reads (the
    map is what changes a mode, nothing else), a one-layer map has its rows' bytes in the roofline cut to one layer."""
    own = mapping(pair)
    one = tuple([own[0]] * 2 + [own[-1]] * (len(own) - 2))  # every sparse verifier layer on the last draft layer
    cfg = config(pair, draft_reads=("first_window",), matched=False, layer_maps=(("same", own), ("one", one)))
    ids = prompts(2, 120, 6)
    frame = pd.DataFrame(run_point(pair, cfg, 120, 2, [ids], 1e11, lambda msg: None)).set_index("mode")
    assert list(frame.index) == ["ar", "dense", "specattn p=0.6", "specattn p=0.9", "specattn p=0.6 draft=first_window",
                                 "specattn p=0.6 map=same", "specattn p=0.6 draft=first_window map=same",
                                 "specattn p=0.6 map=one", "specattn p=0.6 draft=first_window map=one"]
    assert "error" not in frame or frame["error"].isna().all()
    assert list(frame["layer_map"]) == ["run"] * 5 + ["same"] * 2 + ["one"] * 2
    needed = len(set(own[2:]))
    assert needed > 1 and frame.loc["specattn p=0.6", "rows_layers"] == needed
    assert frame.loc["specattn p=0.6 map=one", "rows_layers"] == 1
    assert frame.loc["dense", "rows_layers"] == frame.loc["ar", "rows_layers"] == 0  # no selection, no rows
    for base in ("specattn p=0.6", "specattn p=0.6 draft=first_window"):
        twin = frame.loc[f"{base} map=same"]
        assert twin["tokens"] == frame.loc[base, "tokens"] and twin["verifier_kept"] == frame.loc[base, "verifier_kept"]
        assert twin["bytes_draft_rows_k"] == frame.loc[base, "bytes_draft_rows_k"]
    rows_k = frame.loc["specattn p=0.6", "bytes_draft_rows_k"]
    assert frame.loc["specattn p=0.6 map=one", "bytes_draft_rows_k"] == pytest.approx(rows_k / needed, rel=1e-6)


def test_a_draft_layer_both_selections_use_is_one_row_slot_and_the_roofline_counts_it_once(pair):
    """Under reuse the draft's own selection recomputes every policy layer's rows; a layer the verifier's map also
    selects from is one row slot (its rows computed and selected once), and the roofline counts it once: the
    verifier's selection adds bytes only for its map layers that are no policy layer (here draft layer 0, read
    densely). first_window selects nothing of its own: its slots are the map's."""
    own = mapping(pair)
    layer_map = own[:2] + (0,) + own[3:]  # one sparse verifier layer on draft layer 0
    cfg = config(pair, draft_reads=("reuse", "first_window"), matched=False, layer_map=layer_map, draft_dense_layers=1)
    frame = pd.DataFrame(run_point(pair, cfg, 120, 2, [prompts(2, 120, 6)], 1e11, lambda msg: None)).set_index("mode")
    assert "error" not in frame or frame["error"].isna().all()
    selecting, policy = set(layer_map[2:]), set(range(1, pair.n_draft_layers))
    assert 0 in selecting and len(selecting) > 1 and selecting - {0} <= policy
    plain, reuse = frame.loc["specattn p=0.6"], frame.loc["specattn p=0.6 draft=reuse"]
    assert plain["rows_layers"] == frame.loc["specattn p=0.6 draft=first_window", "rows_layers"] == len(selecting)
    assert reuse["rows_layers"] == len(selecting | policy)
    # plain SpecAttn's selection bytes are per map layer; reuse's verifier selection keeps layer 0's only, and the
    # draft's own selection counts every policy layer (the shared ones among them) once
    assert reuse["bytes_selection"] == pytest.approx(plain["bytes_selection"] / len(selecting), rel=1e-9)
    assert reuse["bytes_draft_select"] > 0 and reuse["bytes_draft_rows_k"] > 0
    settings = GraphSettings(gamma=4, chunk_size=8, layer_map=layer_map, p=0.6, draft_reads="reuse",
                             draft_dense_layers=1)
    assert settings.row_layers(pair.n_verifier_layers, pair.n_draft_layers) == (sorted(selecting | policy),
                                                                                 sorted(selecting))
    assert settings.roofline_layers(pair.n_verifier_layers, pair.n_draft_layers) == (len(selecting), len(selecting) - 1)


def test_other_layer_maps_are_checked_before_weights_load(tmp_path):
    from hydra import compose, initialize_config_dir

    from specattn.experiments.decode_real import check

    short = tmp_path / "short.yaml"
    short.write_text("verifier_to_draft: [0, 1, 2]\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        check(compose("config", overrides=["experiment=decode_real", "model=qwen_coder",
                                           "+experiment.layer_maps.prop=proportional"]))
        for bad, match in [(f"+experiment.layer_maps.short={short}", r"experiment.layer_maps.short: .*3 entries"),
                           ("+experiment.layer_maps.cal=auto",
                            r"experiment.layer_maps.cal=auto: name a layer_map file")]:
            with pytest.raises(SpecAttnError, match=match):
                check(compose("config", overrides=["experiment=decode_real", "model=qwen_coder", bad]))
        from specattn.runs.validate import validate

        with pytest.raises(SpecAttnError, match=r"experiment.layer_maps.gone: layer_map=.*gone.yaml: no such file"):
            validate(compose("config", overrides=["experiment=decode_real", "model=qwen_coder", "device=cpu",
                                                  f"+experiment.layer_maps.gone={tmp_path / 'gone.yaml'}"]))
        cfg = compose("config", overrides=["experiment=decode_real", "model=qwen_coder"])
        cfg.experiment.layer_maps = {"a b": "proportional"}  # a name the mode labels could not carry
        with pytest.raises(SpecAttnError, match=r"has the name 'a b'"):
            check(cfg)


def test_versus_intervals_pair_each_mode_with_the_same_mode_of_the_reference_run():
    """Run B takes 20 steps where run A took 10 on prompt 0 and the same 20 on prompt 1 (40 tokens each), with 40
    nats more on prompt 0: B's tau over A's is 30/40, its ppl change exp(40/80) - 1; a mode only one run holds gets
    no row, and the step table carries both runs' steps and their relative change."""
    from specattn.results.decoding_intervals import versus_intervals
    from specattn.results.decoding_versus import versus_table

    def prompts(steps0, nll0, modes=("sparse",)):
        return pd.DataFrame([{"context": 8, "batch": 2, "mode": mode, "prompt": p, "steps": s, "cont_nll": n}
                             for mode in modes for p, s, n in ((0, steps0, nll0), (1, 20, 30.0))])

    a, b = prompts(10, 10.0, ("sparse", "only_a")), prompts(20, 50.0)
    table = versus_intervals(b, a, 40).set_index("mode")
    assert list(table.index) == ["sparse"]
    assert table.loc["sparse", "tau_retention"] == pytest.approx(30 / 40)
    assert table.loc["sparse", "cont_ppl_change"] == pytest.approx(math.exp(40 / 80) - 1)
    assert table.loc["sparse", "tau_ci95_low"] == pytest.approx(0.5) and table.loc["sparse", "tau_ci95_high"] == 1.0
    same = versus_intervals(a, a, 40).set_index("mode")
    bounds = ["tau_ci95_low", "tau_ci95_high", "ppl_ci95_low", "ppl_ci95_high"]
    assert same[bounds].values.tolist() == [[1, 1, 0, 0]] * 2  # a run against itself: zero-width intervals
    rows = pd.DataFrame([{"context": 8, "batch": 2, "mode": "sparse", "step_ms": 9.0, "steady_tokens_per_s": 1.0,
                          "new_tokens": 40}])
    ab = versus_table(rows, b, rows.assign(step_ms=10.0), a).iloc[0]
    assert (ab["step_ms_ref"], ab["step_ms"]) == (10.0, 9.0) and ab["step_change"] == pytest.approx(-0.1)
    assert ab["tau_ratio"] == pytest.approx(30 / 40)


TINY_REAL_RUN = ["experiment=decode_real", "model=tiny_random", "dataset=python_packages", "experiment.contexts=[256]",
                 "experiment.batches=[1,2]", "experiment.prompts=2", "experiment.new_tokens=16", "experiment.repeats=1",
                 "experiment.lossless_prompts=2", "experiment.lossless_context=256", "experiment.p_values=[0.9]",
                 "experiment.match_p=0.9", "experiment.draft_reads=[first_dense,reuse,window,first_window]",
                 "experiment.draft_window=64", "experiment.draft_sinks=8", "chunk_size=8", "dense_layers=2",
                 "logger=none", "progress=false"]  # every draft read policy, at the root config's dtype (float32)


@needs_gpu
def test_a_tiny_decode_real_run_end_to_end_gpu(tmp_path):
    """``python run.py experiment=decode_real`` on the tiny random pair (random weights: the wiring, not the numbers):
    both points and the lossless check run, every table is written, and prompts.csv names the window each prompt
    decoded (the windows the dataset gives); asking for more windows than the text holds is refused before the pair
    loads (no "loaded in" line), naming the keys."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from specattn.data.windows import token_windows
    from specattn.models.byte_tokenizer import byte_tokenizer

    from .conftest import run_cli

    env = {"SPECATTN_OUTPUTS": str(tmp_path / "out")}
    result = run_cli(*TINY_REAL_RUN, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    run = next((tmp_path / "out").rglob("modes.csv")).parent
    for name in ("agreement.csv", "prompts.csv", "timings.csv", "lossless.csv", "summary.md"):
        assert (run / name).is_file(), name
    modes = pd.read_csv(run / "modes.csv")
    # a point's modes: AR, dense, SpecAttn, the two matched, the four policies, dense with the window policy
    assert sorted(set(modes["batch"])) == [1, 2] and len(modes) == 2 * 10
    assert "error" not in modes or modes["error"].isna().all(), modes.get("error").dropna().tolist()
    prompts = pd.read_csv(run / "prompts.csv")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=TINY_REAL_RUN)
    names = [w.sample_id for w in token_windows(instantiate(cfg.dataset.source).documents(), byte_tokenizer(), 256, 2)]
    assert list(prompts.columns[:5]) == ["context", "batch", "mode", "prompt", "source"]
    assert prompts["source"].tolist() == [names[i] for i in prompts["prompt"]]
    refused = run_cli(*TINY_REAL_RUN, "dataset.first_sample=100000000", env=env)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]  # (the GPU image may warn)
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-2000:]
    assert "fewer than dataset.first_sample=100000000 + experiment.prompts=2" in errors[0]
    assert "windows of experiment.contexts=256 tokens" in errors[0] and "loaded in" not in refused.stdout
