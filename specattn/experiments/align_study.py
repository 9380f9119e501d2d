"""``experiment=align_study``: which layer-mapping metric serves SpecAttn best (the paper's open question).

One calibration pass computes the similarity matrix of every metric of ``experiment.metrics`` (plus how the mapping settles
as calibration tokens grow); each metric's monotone mapping (and, for each bound of ``experiment.max_draft_layers``, its
mapping with at most that many distinct draft layers over the sparse verifier layers: ``"<metric> max<K>"``; the decoder
recomputes every distinct draft layer's rows each step), ``proportional`` and (for
self-speculative pairs) ``identity`` are then evaluated with SpecAttn at each ``p`` of
``experiment.p_values`` on the evaluation samples, against dense attention. Outputs: the table
(one row per mapping, p and sample; column ``layer_map`` names the mapping), ``tradeoff.png``
(ppl increase vs KV reduction per mapping), one heatmap and ``similarity_<metric>.npy`` per
metric, and ``stability.csv``. A killed run resumes: the similarities are read back from the run
folder and finished samples from ``parts/``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..align.calibrate import save_npy, similarity_matrices, write_layer_map
from ..align.dp import monotonic_alignment
from ..align.plots import plot_alignment, plot_tradeoff
from ..align.similarity_metrics import METRICS
from ..core import layer_maps
from ..core.checks import fractions, positive_int
from ..core.errors import SpecAttnError
from ..eval.perplexity import evaluate_sample, prepare
from ..eval.ppl_metrics import sample_rows, summarise
from ..methods import Dense, SpecAttn
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import write_table
from .align import draft_labels
from .evaluation import (
    check_impl,
    evaluate_samples,
    load_pair_for,
    load_samples,
    run_settings,
)


def mappings_to_compare(pair, similarities, bounds=(), dense_layers: int = 0) -> dict[str, list[int]]:
    """Each metric's monotone mapping, under each bound of ``bounds`` on its distinct draft layers (``"<metric>
    max<K>"``, counted from verifier layer ``dense_layers``; only bounds that change the map), plus the proportional
    and identity baselines."""
    maps = {metric: monotonic_alignment(matrix) for metric, matrix in similarities.items()}
    for metric, matrix in similarities.items():
        for bound in bounds:
            bounded = monotonic_alignment(matrix, int(bound), dense_layers)
            if bounded != maps[metric]:
                maps[f"{metric} max{int(bound)}"] = bounded
    maps["proportional"] = layer_maps.proportional(pair.n_draft_layers, pair.n_verifier_layers)
    if pair.draft_layers is not None:
        maps["identity"] = layer_maps.identity(pair.draft_layers, pair.n_verifier_layers)
    return maps


def stability_table(windows: list[tuple[int, dict]], final: dict[str, list[int]]) -> pd.DataFrame:
    """One row per calibration window and metric: the mapping so far and how many verifier layers
    it differs in from the final one."""
    rows = [{"metric": metric, "calibration_tokens": tokens, "mapping": monotonic_alignment(matrix)}
            for tokens, matrices in windows for metric, matrix in matrices.items()]
    frame = pd.DataFrame(rows)
    frame["layers_changed_vs_final"] = [sum(a != b for a, b in zip(m, final[metric]))
                                        for metric, m in zip(frame.metric, frame.mapping)]
    frame["mapping"] = frame.mapping.map(str)
    return frame


def study_metrics(cfg) -> tuple[str, ...]:
    """``experiment.metrics``: the similarity metrics compared (names of :data:`METRICS`)."""
    metrics = tuple(str(m) for m in cfg.experiment.metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise SpecAttnError(f"experiment.metrics={list(metrics)} must list metrics of {', '.join(METRICS)} "
                            f"(unknown: {', '.join(unknown) or 'none given'})")
    return metrics


def calibrate(cfg, pair, run_dir) -> dict[str, np.ndarray]:
    """Every studied metric's similarity matrix, computed once per run folder (``similarity_<metric>.npy``)
    with ``stability.parquet`` beside them."""
    metrics = study_metrics(cfg)
    paths = {metric: run_dir / f"similarity_{metric}.npy" for metric in metrics}
    if all(path.is_file() for path in paths.values()) and (run_dir / "stability.parquet").is_file():
        return {metric: np.load(path) for metric, path in paths.items()}
    windows = []
    similarities = similarity_matrices(cfg, pair, metrics=metrics, progress=cfg.progress,
                                       on_window=lambda tokens, m: windows.append((tokens, m)))
    for metric, matrix in similarities.items():
        save_npy(paths[metric], matrix)
    write_table(stability_table(windows, mappings_to_compare(pair, similarities)), run_dir / "stability.parquet")
    return similarities


def check(cfg) -> None:
    """Pre-load checks of this experiment's keys (``specattn.runs.validate.validate`` runs them)."""
    check_impl(cfg)
    fractions(cfg.experiment.p_values, "experiment.p_values", "[0.9,0.95]")
    study_metrics(cfg)
    for bound in cfg.experiment.get("max_draft_layers") or ():
        positive_int(bound, "experiment.max_draft_layers", "[4,7]")


def run(ctx: RunContext) -> ExperimentResult:
    cfg, run_dir = ctx.cfg, ctx.run_dir
    samples = load_samples(cfg)  # cut and counted before any weights load
    pair = load_pair_for(cfg, cfg.dataset.context_len)
    similarities = calibrate(cfg, pair, run_dir)
    maps = mappings_to_compare(pair, similarities, cfg.experiment.get("max_draft_layers") or (), int(cfg.dense_layers))
    artifacts = {}
    labels = draft_labels(pair)
    for metric, matrix in similarities.items():
        artifacts[f"heatmap_{metric}"] = plot_alignment(
            matrix, maps[metric], run_dir / f"heatmap_{metric}.png", f"{cfg.model.name}: {metric}", labels)
        write_layer_map(run_dir / f"layer_map_{metric}.yaml", maps[metric], {"metric": metric})

    prepare(pair)
    methods = [SpecAttn(float(p)) for p in cfg.experiment.p_values]

    def evaluate(index, sample):
        frames, dense = [], None  # the dense reference does not depend on the mapping: computed once
        for name, mapping in maps.items():
            scores = evaluate_sample(pair, sample.input_ids, ([Dense()] if dense is None else []) + methods,
                                     run_settings(cfg, mapping), seed=cfg.seed + index)
            if dense is None:
                dense, scores = scores[0], scores[1:]
            rows = sample_rows(cfg, index, sample, [Dense(), *methods], [dense, *scores],
                               layer_map=name, mapping=str(mapping))
            frames.append(rows[rows.method != "dense"])
        return pd.concat(frames, ignore_index=True)

    results = evaluate_samples(ctx, samples, evaluate, "mappings")
    summary = summarise(results, by=("layer_map", "p")).drop(columns="method")
    artifacts["tradeoff"] = plot_tradeoff(summary, run_dir / "tradeoff.png")
    maps_table = pd.DataFrame([{"layer_map": k, "verifier_to_draft": str(v)} for k, v in maps.items()])
    stability = pd.read_parquet(run_dir / "stability.parquet")
    print(maps_table.to_string(index=False))
    print(f"calibration: {int(stability.calibration_tokens.max())} tokens; tradeoff plot: {artifacts['tradeoff']}")
    ctx.logger.log_table("mappings", maps_table)
    ctx.logger.log_table("stability", stability)
    best = summary.loc[summary.groupby("p").ppl_rel_increase.idxmin()]
    metrics = {f"best_map/p={r.p}": r.layer_map for r in best.itertuples()}
    return ExperimentResult(results, summary, artifacts=artifacts, metrics=metrics)
