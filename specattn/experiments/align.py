"""``experiment=align``: draft-to-verifier layer mapping from attention similarity on calibration text.

Writes to the run folder ``similarity.npy`` (``(n_draft, n_verifier)``, mean row similarity),
``layer_map.yaml`` (one draft layer per verifier layer, at most ``align.max_draft_layers`` distinct ones over the
verifier layers from ``dense_layers`` on when that is set; usable as ``layer_map=<path>``) and
``heatmap.png`` (the matrix with the chosen monotone path); the results table is the long-form
matrix with the chosen cells marked.
"""

from __future__ import annotations

import pandas as pd

from ..align.calibrate import bounded_alignment, save_npy, similarity_matrices, write_layer_map
from ..align.plots import plot_alignment
from ..models.pair import ModelPair
from ..runs.context import ExperimentResult, RunContext
from .evaluation import load_pair_for


def draft_labels(pair: ModelPair) -> list[str]:
    """Tick labels of draft layers (with the verifier layer behind each for self-speculative pairs)."""
    if pair.draft_layers is None:
        return [str(i) for i in range(pair.n_draft_layers)]
    return [f"{i} (v{layer})" for i, layer in enumerate(pair.draft_layers)]


def run(ctx: RunContext) -> ExperimentResult:
    cfg, run_dir = ctx.cfg, ctx.run_dir
    pair = load_pair_for(cfg)
    metric = cfg.align.metric
    similarity = similarity_matrices(cfg, pair, progress=cfg.progress)[metric]
    mapping, bound = bounded_alignment(cfg, similarity)
    labels = draft_labels(pair)
    save_npy(run_dir / "similarity.npy", similarity)
    map_path = write_layer_map(run_dir / "layer_map.yaml", mapping, {
        "metric": metric, "model": cfg.model.name, "calibration_tokens": int(cfg.align.num_tokens),
        "head_agg": cfg.head_agg, **bound})
    heatmap = plot_alignment(similarity, mapping, run_dir / "heatmap.png",
                             f"{cfg.model.name}: {metric} similarity, draft vs verifier layers", labels)
    cells = pd.DataFrame([
        {"metric": metric, "draft_layer": i, "draft_label": labels[i], "verifier_layer": j,
         "similarity": float(similarity[i, j]), "chosen": mapping[j] == i}
        for i in range(similarity.shape[0]) for j in range(similarity.shape[1])])
    summary = pd.DataFrame({"verifier_layer": range(len(mapping)), "draft_layer": mapping,
                            "draft_label": [labels[i] for i in mapping],
                            "similarity": [float(similarity[i, j]) for j, i in enumerate(mapping)]})
    print(f"layer map ({metric}), verifier layer -> draft layer: {mapping}")
    print(f"heatmap: {heatmap}")
    print(f"layer_map: {map_path}  (use with layer_map={map_path})")
    return ExperimentResult(cells, summary, artifacts={"heatmap": heatmap, "layer_map": map_path},
                            metrics={"mean_chosen_similarity": float(summary.similarity.mean())})
