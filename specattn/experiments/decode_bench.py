"""``experiment=decode_bench``: end-to-end decoding throughput of :mod:`specattn.bench.decode_bench`.

Settings: ``conf/experiment/decode_bench.yaml``; ``p``, ``gamma``, ``chunk_size``, ``dense_layers``,
``head_agg`` and ``seed`` from the root config. Writes ``modes.csv`` (one row per pair, batch, context and
mode; rewritten after every point, so a killed run keeps what it measured), ``speedups.csv``,
``crossover.csv``, ``summary.md`` and ``decode_throughput.png`` in the run folder.
"""

from __future__ import annotations

from ..bench.decode_bench import DecodeBenchConfig, run_all
from ..bench.decode_tables import render, tables
from ..results.plots import plot_decode_throughput
from ..runs.context import ExperimentResult, RunContext
from .decode_real import draft_down_split, draft_epilogue_rows


def config_from(cfg, device: str = "cuda", dtype: str = "bfloat16") -> DecodeBenchConfig:
    e = cfg.experiment
    ints = lambda xs: tuple(int(x) for x in xs)  # noqa: E731
    return DecodeBenchConfig(
        pairs=tuple(str(p) for p in e.pairs), batches=ints(e.batches), contexts=ints(e.contexts),
        kept=tuple(float(k) for k in e.kept), tau=float(e.tau), gamma=int(cfg.gamma), chunk_size=int(cfg.chunk_size),
        dense_layers=int(cfg.dense_layers), p=float(cfg.p), head_agg=str(cfg.head_agg),
        warmup_steps=int(e.warmup_steps), reps=int(e.reps), steps=int(e.steps), profile_reps=int(e.profile_reps),
        max_mem_gib=float(e.max_mem_gib), fused_layers=bool(e.fused_layers), device=device, dtype=dtype, seed=int(cfg.seed),
        draft_reads=tuple(str(r) for r in e.get("draft_reads", ())), draft_refresh=int(e.get("draft_refresh", 8)),
        draft_window=int(e.get("draft_window", 1024)), draft_sinks=int(e.get("draft_sinks", 16)),
        fold_norms=bool(e.get("fold_norms", True)), draft_epilogue_rows=draft_epilogue_rows(e),
        draft_down_split=draft_down_split(e))


def check(cfg) -> None:
    """Before anything loads: the draft's one-launch layer settings (as decode_real's)."""
    draft_epilogue_rows(cfg.experiment)
    draft_down_split(cfg.experiment)


def run(ctx: RunContext) -> ExperimentResult:
    res = tables(run_all(config_from(ctx.cfg), log=lambda msg: print(msg, flush=True),
                         out_csv=ctx.run_dir / "modes.csv"))
    artifacts = {}
    for name in ("speedups", "crossover"):
        artifacts[name] = ctx.run_dir / f"{name}.csv"
        res[name].to_csv(artifacts[name], index=False)
    res["results"].to_csv(ctx.run_dir / "modes.csv", index=False)
    artifacts["modes"] = ctx.run_dir / "modes.csv"
    (ctx.run_dir / "summary.md").write_text(render(res) + "\n")
    artifacts["summary"] = ctx.run_dir / "summary.md"
    if not res["results"].empty:
        artifacts["plot"] = plot_decode_throughput(res["results"], ctx.run_dir / "decode_throughput.png")
    print("\n".join(res["targets"]), flush=True)
    summary = res["speedups"] if not res["speedups"].empty else res["results"]
    return ExperimentResult(results=res["results"], summary=summary, artifacts=artifacts,
                            metrics={"bandwidth_TBps": res["bandwidth_TBps"],
                                     **{f"hw_{k}": v for k, v in res["hardware"].items()}})
