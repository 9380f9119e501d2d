"""``experiment=kernel_bench``: the GPU kernel benchmarks of :mod:`specattn.bench.kernel_bench`.

Settings: ``conf/experiment/kernel_bench.yaml`` (``parts`` picks selection, profile, tune, attention);
``p``, ``chunk_size``, ``gamma`` and ``head_agg`` come from the root config. Writes one CSV per part run
(``selection.csv``, ``profile.csv``, ``tune.csv``, ``attention.csv``, ``breakeven.csv``) and
``summary.md`` (the hardware, the bandwidth, the tables) in the run folder.
"""

from __future__ import annotations

import pandas as pd
from omegaconf import OmegaConf

from ..bench.kernel_bench import BenchConfig, render, run_all
from ..runs.context import ExperimentResult, RunContext

TABLES = ("selection", "profile", "tune", "attention", "breakeven")


def config_from(cfg) -> BenchConfig:
    e = cfg.experiment
    ints = lambda xs: tuple(int(x) for x in xs)  # noqa: E731
    return BenchConfig(
        parts=tuple(str(p) for p in e.parts), p=float(cfg.p), chunk_size=int(cfg.chunk_size), gamma=int(cfg.gamma),
        rows=ints(e.rows), lengths=ints(e.lengths), sel_dtype=str(e.sel_dtype),
        max_sel_bytes=int(float(e.max_sel_gib) * 2**30), profile_shapes=tuple(ints(s) for s in e.profile_shapes),
        warmup_ms=int(e.warmup_ms), rep_ms=int(e.rep_ms),
        models=tuple(str(m) for m in e.models), batches=ints(e.batches), attn_lengths=ints(e.attn_lengths),
        densities=tuple(float(d) for d in e.densities), head_agg=str(cfg.head_agg), draft_dtype=str(e.draft_dtype),
        layers=int(e.layers),
        flashinfer=bool(e.flashinfer), page_size=int(e.page_size), rotate_bytes=int(e.rotate_bytes),
        max_kv_gib=float(e.max_kv_gib), budget_ms=float(e.budget_ms), min_reps=int(e.min_reps),
        max_reps=int(e.max_reps),
        split={k: int(v) for k, v in OmegaConf.to_container(e.split).items() if v is not None},
        tune_cases=tuple((str(m), int(b), int(n)) for m, b, n in e.tune_cases),
        tune_densities=tuple(float(d) for d in e.tune_densities),
    )


def run(ctx: RunContext) -> ExperimentResult:
    res = run_all(config_from(ctx.cfg), log=lambda msg: print(msg, flush=True))
    artifacts = {}
    for name in TABLES:
        if name in res:
            path = ctx.run_dir / f"{name}.csv"
            res[name].to_csv(path, index=False)
            artifacts[name] = path
    (ctx.run_dir / "summary.md").write_text(render(res) + "\n")
    artifacts["summary"] = ctx.run_dir / "summary.md"
    parts = [p for p in ("selection", "profile", "tune", "attention") if p in res]
    results = pd.concat([res[p].assign(part=p) for p in parts], ignore_index=True)
    metrics = {"bandwidth_TBps": res["bandwidth_TBps"], **{f"hw_{k}": v for k, v in res["hardware"].items()},
               **{f"split_{k}": v for k, v in res["split"].__dict__.items()}}
    summary = res.get("breakeven", res[parts[-1]])
    return ExperimentResult(results=results, summary=summary, artifacts=artifacts, metrics=metrics)
