"""The phase profile's accounting (specattn/bench/phase_profile.py): kernel classes, overlap, gaps, floors."""

import math

import pandas as pd
import pytest

from specattn.bench.phase_profile import (CLASSES, GAPS, OTHER, REPLAY, Kernel, exclusive_us, fixed_time_table,
                                          floor_bytes, kernel_class, main, phase_breakdown, top_kernels, versus_table)
from specattn.decode import roofline
from specattn.decode.draft_reads import DRAFT_READS


@pytest.mark.parametrize("name, label", [
    ("_split_kernel", "attention"), ("_merge_kernel", "attention"),
    ("nvjet_tst_64x8_64x16_4x1_v_bz_TNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1", "gemm"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>", "gemm"),
    ("_skinny_kernel", "gemm"), ("_qkv_rope_kernel", "gemm"), ("_gate_up_silu_kernel", "gemm"),
    ("_rows_kernel", "selection"), ("_score_rows_kernel", "selection"), ("nucleus_radix_kernel<float>", "selection"),
    ("_mask_list_kernel", "selection"), ("_threshold_list_kernel", "selection"),
    ("_rope_cache_kernel", "layer glue"), ("_silu_mul_kernel", "layer glue"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<long, at::native::ArgMaxOps<float>>>", OTHER),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", OTHER),
    ("Memcpy DtoD (Device -> Device)", OTHER),
])
def test_kernels_are_classed_by_name(name, label):
    assert kernel_class(name) == label


def test_an_overlapping_kernel_counts_only_its_time_past_the_kernels_before_it():
    # a merge launched as the split's dependent starts inside it: only its 5 us past the split's end are its own
    kernels = [Kernel("gemm_a", 0, 10), Kernel("_split_kernel", 12, 20), Kernel("_merge_kernel", 15, 25),
               Kernel("_rope_cache_kernel", 30, 31)]
    assert exclusive_us(kernels) == [10, 8, 5, 1]
    # given out of order, each keeps its own value
    assert exclusive_us(kernels[::-1]) == [1, 5, 8, 10]
    # one inside another adds nothing
    assert exclusive_us([Kernel("a", 0, 10), Kernel("b", 2, 5)]) == [10, 0]


def test_the_breakdown_adds_up_to_the_wall_time_and_charges_each_class_its_floor():
    kernels = [Kernel("gemm_a", 100, 110), Kernel("_split_kernel", 112, 120), Kernel("_merge_kernel", 115, 125),
               Kernel("_rope_cache_kernel", 130, 131), Kernel("void at::native::fill", 133, 134)]
    bandwidth = 1e12  # bytes/s: 1 MB reads in 1 us
    table = phase_breakdown(kernels, wall_ms=0.040, floors={"gemm": 6e6, "attention": 9e6}, bandwidth=bandwidth)
    by = table.set_index("part")
    assert list(table["part"]) == list(CLASSES) + [GAPS, REPLAY, "total"]
    assert by.loc["gemm", "ms"] == pytest.approx(0.010) and by.loc["gemm", "floor_ms"] == pytest.approx(0.006)
    assert by.loc["attention", "kernels"] == 2 and by.loc["attention", "ms"] == pytest.approx(0.013)
    assert by.loc["attention", "above_floor_ms"] == pytest.approx(0.004)
    assert by.loc["layer glue", "ms"] == pytest.approx(0.001) and by.loc["pytorch ops", "ms"] == pytest.approx(0.001)
    assert by.loc["selection", "kernels"] == 0 and by.loc["selection", "ms"] == 0
    assert by.loc[GAPS, "ms"] == pytest.approx(0.009)  # span 34 us, busy 25 us
    assert by.loc[REPLAY, "ms"] == pytest.approx(0.006)  # wall 40 us, span 34 us
    parts = table[table["part"] != "total"]
    assert parts["ms"].sum() == pytest.approx(by.loc["total", "ms"]) == pytest.approx(0.040)
    assert by.loc["total", "floor_ms"] == pytest.approx(0.015)
    assert by.loc["total", "above_floor_ms"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="no kernels"):
        phase_breakdown([], 1.0, {}, bandwidth)


SHAPE_V = roofline.ModelShape(28, 1536, 8960, 12, 2, 128, 151936, True)
SHAPE_D = roofline.ModelShape(24, 896, 4864, 14, 2, 64, 151936, True)


@pytest.mark.parametrize("reads", DRAFT_READS)
def test_every_roofline_component_lands_in_one_phase_and_class(reads):
    kw = {} if reads == "dense" else dict(draft_reads=reads, draft_kept=0.2, row0_from_scores=True)
    parts = roofline.step_bytes(SHAPE_V, SHAPE_D, 16, 32768, 4, kept=0.15, dense_layers=2, needed_layers=7, **kw)
    draft, verify = floor_bytes(parts, "draft"), floor_bytes(parts, "verify")
    assert math.isclose(sum(draft.values()) + sum(verify.values()), parts["total"])
    assert draft["gemm"] == parts["draft_weights"] and verify["gemm"] == parts["verifier_weights"]
    assert draft["attention"] == parts["draft_kv"] and verify["attention"] == parts["verifier_kv"]
    assert verify["selection"] == parts["draft_rows_k"] + parts["selection"]
    ar = roofline.step_bytes(SHAPE_V, None, 16, 32768, 0)
    assert floor_bytes(ar, "draft") == dict.fromkeys(CLASSES, 0.0)
    with pytest.raises(ValueError, match="new_part"):
        floor_bytes({**parts, "new_part": 1}, "draft")


def test_top_kernels_rank_names_by_their_own_time():
    kernels = [Kernel("_split_kernel", 0, 10), Kernel("_merge_kernel", 5, 12), Kernel("_split_kernel", 20, 30),
               Kernel("gemm_x", 31, 32)]
    top = top_kernels(kernels, n=2)
    assert list(top["name"]) == ["_split_kernel", "_merge_kernel"]
    assert top.loc[0, "calls"] == 2 and top.loc[0, "ms"] == pytest.approx(0.020)
    assert top.loc[1, "mean_us"] == pytest.approx(2.0)


def test_the_fixed_time_table_sums_each_modes_phases(tmp_path):
    kernels = [Kernel("gemm_a", 0, 10), Kernel("_split_kernel", 12, 20)]
    draft = phase_breakdown(kernels, 0.025, {"gemm": 5e6}, 1e12).assign(mode="dense", phase="draft")
    verify = phase_breakdown(kernels, 0.030, {"attention": 2e6}, 1e12).assign(mode="dense", phase="verify")
    ar = phase_breakdown(kernels, 0.021, {}, 1e12).assign(mode="ar", phase="verify")
    path = tmp_path / "rows.csv"
    pd.concat([ar, draft, verify]).to_csv(path, index=False)
    table = fixed_time_table(pd.read_csv(path))
    assert list(table.index) == ["ar", "dense"]
    assert table.loc["dense", "ms"] == pytest.approx(0.055) and table.loc["dense", "floor_ms"] == pytest.approx(0.007)
    assert table.loc["dense", "kernels"] == 4
    assert table.loc["dense", "gemm"] == pytest.approx(0.010 - 0.005 + 0.010)
    assert table.loc["dense", "attention"] == pytest.approx(0.008 + 0.006)
    assert table.loc["dense", "total"] == pytest.approx(0.055 - 0.007)
    assert list(table.columns)[-1] == "total" and table.loc["ar", "total"] == pytest.approx(0.021)


def test_the_fixed_time_table_carries_each_modes_step_and_bandwidth(tmp_path):
    # CSVs since the thirty-third session carry the timed step and the read bandwidth their floors used; older ones
    # (the test above) do not and still read
    kernels = [Kernel("gemm_a", 0, 10)]
    rows = pd.concat([phase_breakdown(kernels, 0.02, {}, 1e12).assign(mode=m, phase="verify", step_ms=s, read_tbs=3.1)
                      for m, s in (("ar", 6.8), ("dense", 20.2))])
    table = fixed_time_table(rows)
    assert list(table.columns[:2]) == ["step_ms", "read_tbs"]
    assert table.loc["dense", "step_ms"] == 20.2 and table.loc["ar", "step_ms"] == 6.8
    assert table.loc["ar", "read_tbs"] == 3.1 and table.loc["dense", "ms"] == pytest.approx(0.02)


def test_versus_gives_each_shared_modes_differences(tmp_path, capsys):
    # an A/B of the same point: the one-launch arm has two kernels fewer and 4 us less GEMM time; a mode only one
    # profile has is left out
    def rows(gemm_us, n_gemm, modes, step):
        kernels = [Kernel("gemm_a", 10 * i, 10 * i + gemm_us / n_gemm) for i in range(n_gemm)]
        return pd.concat([phase_breakdown(kernels, 0.05, {"gemm": 1e6}, 1e12).assign(
            mode=m, phase="draft", step_ms=step, read_tbs=3.0 + 0.1 * n_gemm) for m in modes])

    base, other = rows(12.0, 4, ["dense", "ar"], 20.0), rows(8.0, 2, ["dense"], 19.5)
    diff = versus_table(base, other)
    assert list(diff.index) == ["dense"] and "read_tbs" not in diff.columns
    assert diff.loc["dense", "kernels"] == -2 and diff.loc["dense", "step_ms"] == pytest.approx(-0.5)
    assert diff.loc["dense", "gemm"] == pytest.approx(-0.004) and diff.loc["dense", "ms"] == pytest.approx(0)
    base.to_csv(tmp_path / "a.csv", index=False), other.to_csv(tmp_path / "b.csv", index=False)
    main([str(tmp_path / "b.csv"), "--versus", str(tmp_path / "a.csv")])
    assert "b.csv minus" in capsys.readouterr().out
