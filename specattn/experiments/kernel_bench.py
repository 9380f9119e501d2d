"""``experiment=kernel_bench``: the GPU kernel benchmarks of :mod:`specattn.bench.kernel_bench`.

Config keys (``conf/experiment/kernel_bench.yaml``): ``parts`` (selection, attention), ``rows``,
``lengths``, ``sel_dtype``, ``max_sel_gib`` (selection); ``attn_lengths``, ``densities``, ``models``,
``draft_rows`` (attention); ``warmup_ms``, ``rep_ms`` (do_bench). ``p``, ``chunk_size`` and ``gamma``
come from the root config. Writes ``selection.csv``, ``attention.csv``, ``breakeven.csv`` and
``summary.md`` (the tables, the hardware and the targets) in the run folder.
"""

from __future__ import annotations

import pandas as pd

from ..gpu.bench.kernel_bench import BenchConfig, render, run_all
from .base import ExperimentResult, RunContext


def config_from(cfg) -> BenchConfig:
    e = cfg.experiment
    return BenchConfig(
        rows=tuple(int(r) for r in e.rows), lengths=tuple(int(x) for x in e.lengths), p=float(cfg.p),
        sel_dtype=str(e.sel_dtype), attn_lengths=tuple(int(x) for x in e.attn_lengths),
        densities=tuple(float(d) for d in e.densities), models=tuple(str(m) for m in e.models),
        chunk_size=int(cfg.chunk_size), gamma=int(cfg.gamma), draft_rows=int(e.draft_rows),
        max_sel_bytes=int(float(e.max_sel_gib) * 2**30), warmup_ms=int(e.warmup_ms), rep_ms=int(e.rep_ms),
    )


def run(ctx: RunContext) -> ExperimentResult:
    parts = tuple(str(p) for p in ctx.cfg.experiment.parts)
    res = run_all(config_from(ctx.cfg), parts, log=lambda msg: print(msg, flush=True))
    artifacts = {}
    for name in ("selection", "attention", "breakeven"):
        if name in res:
            path = ctx.run_dir / f"{name}.csv"
            res[name].to_csv(path, index=False)
            artifacts[name] = path
    text = render(res)
    (ctx.run_dir / "summary.md").write_text(text + "\n")
    artifacts["summary"] = ctx.run_dir / "summary.md"
    results = pd.concat([res[p].assign(part=p) for p in parts], ignore_index=True)
    metrics = {"bandwidth_TBps": res["bandwidth_TBps"], **{f"hw_{k}": v for k, v in res["hardware"].items()}}
    summary = res.get("breakeven") if "attention" in parts else res["selection"]
    return ExperimentResult(results=results, summary=summary, artifacts=artifacts, metrics=metrics)
