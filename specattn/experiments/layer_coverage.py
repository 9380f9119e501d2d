"""``experiment=layer_coverage``: per verifier layer, the share of the verifier's own attention mass
that SpecAttn's selection keeps (coverage), next to the layer's KV reduction (:mod:`specattn.core.coverage`).

SpecAttn at each ``experiment.p_values`` on the dataset's samples (one draft forward shared); rows:
one per sample, setting and sparse verifier layer (raw sums, so the summary aggregates exactly);
``coverage.png``: coverage and KV reduction against the verifier layer, one line per p.
"""

from __future__ import annotations

import pandas as pd

from ..eval.perplexity import evaluate_sample
from ..methods import Dense, SpecAttn
from ..results.plots import plot_layer_coverage
from ..runs.context import ExperimentResult, RunContext
from .evaluation import evaluate_samples, load_run


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per setting and layer: coverage and KV reduction from the summed rows."""
    sums = results.groupby(["setting", "p", "layer", "draft_layer"], sort=False)[
        ["coverage_mass", "coverage_pairs", "kv_reads", "kv_dense_reads"]].sum().reset_index()
    sums["coverage"] = sums.coverage_mass / sums.coverage_pairs
    sums["layer_kv_reduction"] = 1.0 - sums.kv_reads / sums.kv_dense_reads
    return sums[["setting", "p", "layer", "draft_layer", "coverage", "layer_kv_reduction"]]


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    methods = [Dense(), *(SpecAttn(float(p)) for p in cfg.experiment.p_values)]
    pair, settings, samples = load_run(cfg)

    def evaluate(index, sample):
        scores = evaluate_sample(pair, sample.input_ids, methods, settings, seed=cfg.seed + index,
                                 progress=cfg.progress, coverage=True)
        dense_nll = scores[0].nll_sum
        rows = []
        for method, score in zip(methods[1:], scores[1:]):
            for record in score.coverage.table():
                rows.append({"setting": method.label, "p": method.p, "sample": index, "sample_id": sample.sample_id,
                             "draft_layer": settings.layer_map[record["layer"]], "tokens": score.tokens,
                             "nll": score.nll_sum, "dense_nll": dense_nll, **record})
        return pd.DataFrame(rows)

    results = evaluate_samples(ctx, samples, evaluate, "coverage",
                               lambda last: {"last_layer_coverage": last.coverage})
    summary = summarise(results)
    path = plot_layer_coverage(summary, ctx.run_dir / "coverage.png",
                               f"{cfg.model.name} on {cfg.dataset.name}: SpecAttn's coverage of the verifier's "
                               "attention per layer")
    means = summary.groupby("setting", sort=False)[["coverage", "layer_kv_reduction"]].mean()
    metrics = {f"mean/{setting}/{key}": float(value) for setting, row in means.iterrows() for key, value in row.items()}
    return ExperimentResult(results, summary, artifacts={"coverage": path}, metrics=metrics)
