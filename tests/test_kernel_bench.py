"""experiment=kernel_bench: its config, the synthetic draft rows, the tables (CPU); a tiny run (GPU)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from specattn.bench import attention as A
from specattn.bench.kernel_bench import render, run_all
from specattn.core.errors import SpecAttnError
from specattn.experiments.kernel_bench import config_from
from specattn.gpu.kernels.split_config import SplitConfig
from specattn.methods import nucleus as select

from .availability import HAS_CUDA, HAS_FLASHINFER, needs_gpu
from .conftest import compose_config


def bench_config(*overrides):
    return config_from(compose_config("experiment=kernel_bench", *overrides))


def test_config_comes_from_the_experiment_yaml():
    cfg = bench_config("experiment.batches=[2]", "experiment.split.block_n=128", "gamma=3")
    assert cfg.parts == ("attention",) and cfg.batches == (2,) and cfg.gamma == 3 and cfg.head_agg == "mean"
    assert SplitConfig(**cfg.split).block_n == 128
    assert cfg.tune_cases[0] == ("llama-3.1-8b", 1, 32768) and cfg.profile_shapes[0] == (32, 8192)


def test_run_all_refuses_unknown_parts_and_cpu():
    with pytest.raises(SpecAttnError, match="parts"):
        run_all(bench_config("experiment.parts=[speed]"))
    if not HAS_CUDA:
        with pytest.raises(SpecAttnError, match="CUDA GPU"):
            run_all(bench_config())


@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
def test_synthetic_draft_rows_select_the_wanted_chunks(density):
    """The float64 nucleus of the bench's draft rows keeps exactly the chosen chunks (union over rows)."""
    b, h, t, c, n_keys, p = 2, 3, 5, 16, 16 * 40 + 3, 0.95
    prefix = n_keys - t
    nc = math.ceil(prefix / c)
    masks = A.random_masks(b, h, nc, density, torch.Generator().manual_seed(1))
    assert masks.sum(-1).eq(max(1, round(density * nc))).all()
    rows = A.draft_rows_for(masks, prefix, 4, c, nc * c, p, torch.Generator().manual_seed(2), torch.float32)
    assert rows.shape == (b, h, 4, nc * c) and rows[..., prefix:].eq(0).all()
    got = select.nucleus_chunk_mask(rows.double(), p, c, group=4)[:, :, 0]
    assert torch.equal(got, masks)


def test_tune_stages_are_distinct_and_include_their_start():
    base = SplitConfig()
    tiles = A.tile_configs(base)
    assert tiles[0] == base and len(tiles) == len(set(tiles)) == 16
    assert {(c.ctas_per_sm, c.min_chunks) for c in tiles} == {(base.ctas_per_sm, base.min_chunks)}
    assert sorted(c.merge_tile for c in tiles if c.merge_tile != base.merge_tile) == [8, 16]
    assert [c for c in tiles if c.fused_merge] == [replace(base, fused_merge=True)]  # the one-launch merge, once
    assert [c for c in tiles if not c.pdl] == [replace(base, pdl=False)]  # the merge launched after the split, once
    assert [c for c in tiles if c.steal] == [replace(base, steal=25)]  # a quarter of the work in dynamic ranges, once
    stealing = SplitConfig(steal=25)
    assert replace(stealing, steal=0) in A.tile_configs(stealing)  # from a stealing base: the static split, once
    assert replace(stealing, fused_merge=True, steal=0) in A.tile_configs(stealing)  # no fused launch with steal
    tile = SplitConfig(block_n=32, warps=2)
    splits = A.split_configs(tile)
    assert splits[0] == tile and len(splits) == len(set(splits)) == 24
    assert {(c.block_n, c.warps, c.stages) for c in splits} == {(32, 2, tile.stages)}


def test_the_best_config_is_the_best_geometric_mean_over_cases():
    rows = []
    for config, times in ((SplitConfig(), (1.0, 1.0)), (SplitConfig(warps=8), (0.5, 2.0)),
                          (SplitConfig(warps=2), (0.9, 0.95))):
        for (model, ms) in zip(("a", "b"), times):
            rows.append({"model": model, "batch": 1, "L": 8, "mode": "dense", **config.__dict__, "ms": ms})
    assert A._best(pd.DataFrame(rows)) == SplitConfig(warps=2)  # 0.5 is not worth 2.0
    rows += [{**r, "merge_tile": 16, "ms": r["ms"] * 0.9} for r in rows if r["warps"] == 2]
    assert A._best(pd.DataFrame(rows)) == SplitConfig(warps=2, merge_tile=16)  # every field of the config counts
    rows += [{**r, "fused_merge": True, "ms": r["ms"] * 0.9} for r in rows if r["merge_tile"] == 16]
    best = A._best(pd.DataFrame(rows))
    assert best == SplitConfig(warps=2, merge_tile=16, fused_merge=True) and best.fused_merge is True


def test_breakeven_and_render():
    rows = [{"model": "m", "batch": 1, "L": n, "density": d, "pipeline_speedup": n / 16384 * (1 - d),
             "step_eager_speedup": n / 65536, "sparse_speedup": 2.0, "dense_ms": 1.0, "dense_ours_ms": 1.0,
             "dense_by": "ours"} for n in (8192, 32768, 131072) for d in (0.1, 0.5)]
    rows.append({"model": "m", "batch": 4, "L": 8192, "error": "RuntimeError: boom"})
    attn = pd.DataFrame(rows)
    be = A.breakeven(attn).set_index(["model", "batch", "density"])
    assert be.loc[("m", 1, 0.1), "first_L_step_graph"] == 32768
    assert pd.isna(be.loc[("m", 1, 0.5), "first_L_step_eager"]) or be.loc[("m", 1, 0.5), "first_L_step_eager"] == 131072
    text = render({"hardware": {"gpu": "x"}, "bandwidth_TBps": 4.2, "split": SplitConfig(), "attention": attn,
                   "breakeven": A.breakeven(attn)})
    assert "Break-even" in text and "boom" in text


@needs_gpu
def test_tiny_bench_runs_gpu():
    """Every part but selection on tiny sizes (flashinfer where installed): the wiring, not the numbers."""
    cfg = bench_config("experiment.parts=[profile,tune,attention]", "experiment.profile_shapes=[[4,2048]]",
                       "experiment.batches=[2]", "experiment.attn_lengths=[2048]", "experiment.densities=[0.25]",
                       "experiment.models=[llama-3.1-8b]", "experiment.tune_cases=[[llama-2-7b,1,4096]]",
                       "experiment.tune_densities=[0.1]", "experiment.budget_ms=5", "experiment.min_reps=2",
                       "experiment.layers=4", "experiment.rotate_bytes=1000000",
                       f"experiment.flashinfer={str(HAS_FLASHINFER).lower()}")
    res = run_all(cfg)
    attn = res["attention"]
    assert "error" not in attn or attn["error"].isna().all(), attn.get("error")
    assert len(attn) == 1 and attn["pipeline_speedup"].notna().all() and 0.2 < attn["selected_frac"].iloc[0] < 0.3
    if HAS_FLASHINFER:
        for variant in ("decode_tc", "decode", "prefill"):
            assert attn[f"fi_{variant}_err"].iloc[0] < 2e-2, variant
    tune = res["tune"]  # two stages, each config timed dense and at the one density (stage 2: the best tile's splits)
    assert (tune.stage == 1).sum() == 2 * len(A.tile_configs(SplitConfig()))
    assert (tune.stage == 2).sum() == 2 * (len(A.split_configs(SplitConfig())) - 1)
    assert tune.ms.notna().all() and isinstance(res["split"], SplitConfig)
    assert "## One verification step" in render(res)
