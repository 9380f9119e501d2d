"""``experiment=align_study``: which layer-mapping metric serves SpecAttn best (the paper's open question).

One calibration pass computes the similarity matrix of every metric (plus how the mapping settles
as calibration tokens grow); each metric's monotone mapping, ``proportional`` and (for
self-speculative pairs) ``identity`` are then evaluated with SpecAttn at each ``p`` of
``experiment.p_values`` on the evaluation samples, against dense attention. Outputs: the table
(one row per mapping, p and sample), ``tradeoff.png`` (ppl increase vs KV reduction per mapping),
one heatmap per metric and ``stability.csv``.
"""

from __future__ import annotations

import time

import pandas as pd
from hydra.utils import instantiate
from tqdm.auto import tqdm

from .. import layer_map as layer_maps
from ..align.calibrate import similarity_matrices, write_layer_map
from ..align.dp import monotonic_alignment
from ..align.metrics import METRICS
from ..align.plots import plot_alignment, plot_tradeoff
from ..data.windows import token_windows
from ..methods import Dense, SpecAttn
from ..outputs import summarise_ppl, write_table
from ..perplexity import EvalSettings, evaluate_sample, prepare
from .align import draft_labels, load_for_alignment
from .base import ExperimentResult, RunContext
from .ppl import check_pair, sample_rows


def mappings_to_compare(cfg, pair, similarities) -> dict[str, list[int]]:
    """Each metric's monotone mapping, plus the proportional and identity baselines."""
    maps = {metric: monotonic_alignment(matrix) for metric, matrix in similarities.items()}
    maps["proportional"] = layer_maps.proportional(pair.n_draft_layers, pair.n_verifier_layers)
    if pair.draft_layers is not None:
        maps["identity"] = layer_maps.identity(pair.draft_layers, pair.n_verifier_layers)
    return maps


def stability_rows(final: dict[str, list[int]]):
    """Collector of per-window mappings; rows say how many verifier layers differ from the final map."""
    rows = []

    def on_window(tokens, matrices):
        for metric, matrix in matrices.items():
            rows.append({"metric": metric, "calibration_tokens": tokens, "mapping": monotonic_alignment(matrix)})

    def table() -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        frame["layers_changed_vs_final"] = [sum(a != b for a, b in zip(m, final[metric]))
                                            for metric, m in zip(frame.metric, frame.mapping)]
        frame["mapping"] = frame.mapping.map(str)
        return frame

    return on_window, table


def run(ctx: RunContext) -> ExperimentResult:
    cfg, run_dir = ctx.cfg, ctx.run_dir
    pair = load_for_alignment(cfg)
    check_pair(cfg, pair)
    windows = []
    start = time.perf_counter()
    similarities = similarity_matrices(cfg, pair, metrics=METRICS, progress=cfg.progress,
                                       on_window=lambda tokens, m: windows.append((tokens, m)))
    calibration_seconds = time.perf_counter() - start
    maps = mappings_to_compare(cfg, pair, similarities)
    collect, stability = stability_rows(maps)
    for tokens, matrices in windows:
        collect(tokens, matrices)
    artifacts = {}
    labels = draft_labels(pair)
    for metric, matrix in similarities.items():
        artifacts[f"heatmap_{metric}"] = plot_alignment(
            matrix, maps[metric], run_dir / f"heatmap_{metric}.png", f"{cfg.model.name}: {metric}", labels)
        write_layer_map(run_dir / f"layer_map_{metric}.yaml", maps[metric], {"metric": metric})
    write_table(stability(), run_dir / "stability.parquet")

    prepare(pair)
    documents = instantiate(cfg.dataset.source).documents()
    samples = token_windows(documents, pair.tokenizer, cfg.dataset.context_len, cfg.dataset.num_samples,
                            cfg.dataset.name)
    p_values = [float(p) for p in cfg.experiment.p_values]
    frames = []
    for index, sample in enumerate(tqdm(samples, desc="align_study", unit="sample", disable=not cfg.progress)):
        for name, mapping in maps.items():
            settings = EvalSettings(cfg.dataset.prefill_frac, cfg.gamma, cfg.chunk_size, cfg.dense_layers,
                                    cfg.head_agg, tuple(mapping), "parallel", cfg.experiment.query_block)
            methods = [Dense(), *[SpecAttn(p) for p in p_values]]
            begin = time.perf_counter()
            scores = evaluate_sample(pair, sample.input_ids, methods, settings, seed=cfg.seed + index)
            rows = sample_rows(cfg, index, sample, methods, scores, time.perf_counter() - begin)
            rows = rows[rows.method != "dense"].assign(layer_map=name, mapping=str(mapping))
            rows["setting"] = rows.setting + " map=" + name
            frames.append(rows)
    results = pd.concat(frames, ignore_index=True)
    summary = summarise_ppl(results)
    summary.insert(1, "layer_map", [s.split("map=")[1] for s in summary.setting])
    summary.insert(2, "p", [float(s.split("p=")[1].split()[0]) for s in summary.setting])
    summary = summary.drop(columns=["method", "setting"])
    artifacts["tradeoff"] = plot_tradeoff(summary, run_dir / "tradeoff.png")
    maps_table = pd.DataFrame([{"layer_map": k, "verifier_to_draft": str(v)} for k, v in maps.items()])
    print(maps_table.to_string(index=False))
    print(f"calibration: {calibration_seconds:.0f} s for {windows[-1][0]} tokens; tradeoff plot: {artifacts['tradeoff']}")
    ctx.logger.log_table("mappings", maps_table)
    ctx.logger.log_table("stability", stability())
    best = summary.loc[summary.groupby("p").ppl_rel_increase.idxmin()]
    metrics = {f"best_map/p={r.p}": r.layer_map for r in best.itertuples()}
    return ExperimentResult(results, summary, artifacts=artifacts,
                            metrics=metrics | {"calibration_seconds": calibration_seconds})
