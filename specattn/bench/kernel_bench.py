"""Kernel benchmarks on one GPU: the parts behind ``python run.py experiment=kernel_bench``.

Parts (``experiment.parts``; settings and their defaults in ``conf/experiment/kernel_bench.yaml``):

- ``selection``: exact nucleus selection vs sort-based top-p (:mod:`.selection`, table 1);
- ``profile``: each selection launch eager and graph-replayed at ``profile_shapes``;
- ``tune``: the split kernel's tile, then split parameters swept at ``tune_cases`` (two stages); the best config is then
  used by ``attention`` in the same run (otherwise ``split`` or the kernel's defaults);
- ``attention``: one verification step per layer (:mod:`.attention`): dense (ours and FlashInfer),
  sparse attention alone, the whole step eager and graph-replayed; then the break-even table.

Every part measures the copy bandwidth once first; floors and ratios come from the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .timing import hardware, measure_bandwidth, measure_read_bandwidth, require_gpu

PARTS = ("selection", "profile", "tune", "attention")


@dataclass
class BenchConfig:
    """Every setting of the benchmark (filled from the experiment config; no defaults here)."""

    parts: tuple[str, ...]
    p: float
    chunk_size: int
    gamma: int
    # selection / profile
    rows: tuple[int, ...]
    lengths: tuple[int, ...]
    sel_dtype: str
    max_sel_bytes: int
    profile_shapes: tuple[tuple[int, int], ...]
    warmup_ms: int
    rep_ms: int
    # attention / tune
    models: tuple[str, ...]
    batches: tuple[int, ...]
    attn_lengths: tuple[int, ...]
    densities: tuple[float, ...]
    head_agg: str
    draft_dtype: str
    layers: int
    flashinfer: bool
    page_size: int
    rotate_bytes: int
    max_kv_gib: float
    budget_ms: float
    min_reps: int
    max_reps: int
    split: dict
    tune_cases: tuple[tuple[str, int, int], ...]
    tune_densities: tuple[float, ...]


def run_all(cfg: BenchConfig, log=print) -> dict:
    """Run the configured parts; returns {'hardware', 'bandwidth_TBps', and one table per part run}."""
    from ..gpu.kernels.split_config import SplitConfig

    unknown = set(cfg.parts) - set(PARTS)
    if unknown:
        from ..core.errors import SpecAttnError

        raise SpecAttnError(f"experiment.parts has {sorted(unknown)}: choose from {', '.join(PARTS)}")
    require_gpu()
    torch.backends.cuda.matmul.allow_tf32 = False
    bw, read_bw = measure_bandwidth(), measure_read_bandwidth()
    log(f"device-to-device copy bandwidth: {bw / 1e12:.3f} TB/s (read + write); read bandwidth {read_bw / 1e12:.3f} TB/s")
    res = {"hardware": hardware(), "bandwidth_TBps": bw / 1e12, "read_bandwidth_TBps": read_bw / 1e12}
    if "selection" in cfg.parts:
        from .selection import bench_selection, targets

        res["selection"] = bench_selection(cfg, bw, log)
        res["targets"] = targets(res["selection"])
    if "profile" in cfg.parts:
        from .selection import profile_selection

        res["profile"] = pd.concat([profile_selection(r, n, cfg.p, getattr(torch, cfg.sel_dtype), log)
                                    for r, n in cfg.profile_shapes], ignore_index=True)
    split = SplitConfig(**cfg.split)
    if "tune" in cfg.parts:
        from .attention import bench_tune

        res["tune"], split = bench_tune(cfg, split, log)
    res["split"] = split
    if "attention" in cfg.parts:
        from .attention import bench_attention, breakeven

        res["attention"] = bench_attention(cfg, bw, split, log, read_bw)
        res["breakeven"] = breakeven(res["attention"])
    return res


def _fmt(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df]
    try:
        return df[cols].to_markdown(index=False, floatfmt=".4g")
    except ImportError:  # tabulate missing
        return df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")


ATTENTION_COLUMNS = [
    "model", "batch", "L", "density", "selected_frac", "dense_ours_ms", "dense_fi_ms", "dense_ms", "fi_sparse_ms",
    "ours_same_ms", "ours_vs_fi_sparse", "fi_plan_ms", "fi_sparse_read_floor_frac", "ours_same_read_floor_frac",
    "sparse_read_floor_frac",
    "dense_ours_floor_frac", "selection_ms", "selection_batched_ms", "sparse_ms", "sparse_floor_frac", "sparse_speedup", "step_eager_ms",
    "step_eager_speedup", "step_graph_ms", "pipeline_speedup", "step_graph_floor_frac", "error",
]


def render(res: dict) -> str:
    """The tables of a run as markdown (what summary.md holds)."""
    parts = [f"hardware: {res['hardware']}", f"D2D copy bandwidth: {res['bandwidth_TBps']:.3f} TB/s (read+write); "
             f"read bandwidth: {res.get('read_bandwidth_TBps', float('nan')):.3f} TB/s",
             f"split config: {res['split']}"]
    if "selection" in res:
        parts.append("\n## Selection (softmax(3*randn) rows)\n")
        parts.append(_fmt(res["selection"], ["rows", "L", "dtype", "nucleus_frac", "ours_threshold_ms",
                                             "triton_threshold_ms", "cuda_threshold_ms", "ours_mask_ms",
                                             "ours_chunkmask_ms", "sort_threshold_ms", "sort_mask_ms", "topk_ms",
                                             "floor_ms", "speedup_vs_sort", "speedup_vs_topk", "x_floor",
                                             "chunkmask_x_floor", "skipped"]))
        parts += ["", *res["targets"]]
    if "profile" in res:
        parts.append("\n## Selection launches, eager and graph-replayed\n")
        parts.append(_fmt(res["profile"], ["rows", "L", "stage", "eager_ms", "graph_ms"]))
    if "tune" in res:
        parts.append("\n## Split kernel configurations (graph-replayed ms)\n")
        from .attention import KEYS

        wide = res["tune"].pivot_table(index=KEYS, columns=["model", "batch", "L", "mode"], values="ms")
        wide.columns = [f"{m} B{b} L{n} {mode}" for m, b, n, mode in wide.columns]
        parts.append(wide.reset_index().to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if "attention" in res:
        parts.append("\n## One verification step per layer (ms; ratios to the fastest dense; floor fractions)\n")
        parts.append(_fmt(res["attention"], ATTENTION_COLUMNS))
        fi = [c for c in res["attention"] if c.startswith("fi_")]
        dense = res["attention"].drop_duplicates(["model", "batch", "L"])
        parts.append("\n## Dense variants (ms, graph-replayed; fi_*_err: relative error against ours)\n")
        parts.append(_fmt(dense, ["model", "batch", "L", "dense_floor_ms", "dense_ours_ms", "dense_ours_eager_ms",
                                  *fi, "dense_by", "dense_ours_floor_frac", "dense_fi_floor_frac", "sparse_empty_ms"]))
        parts.append("\n## Break-even (smallest L where the step / sparse attention beats dense)\n")
        parts.append(_fmt(res["breakeven"], list(res["breakeven"].columns)))
    return "\n".join(parts)
