"""Plots of the alignment experiments: similarity heatmaps and the mapping trade-off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_alignment(similarity: np.ndarray, mapping: list[int], path: Path, title: str,
                   draft_labels: list[str] | None = None) -> Path:
    """Save ``similarity`` ``(n_draft, n_verifier)`` as a heatmap, the map ``f(j)`` as a white path."""
    n_draft, n_verifier = similarity.shape
    fig, ax = plt.subplots(figsize=(max(6, n_verifier * 0.28), max(3.5, n_draft * 0.3)))
    image = ax.imshow(similarity, aspect="auto", origin="lower", cmap="viridis")
    ax.plot(range(n_verifier), mapping, color="white", linewidth=1.5, marker="o", markersize=3)
    ax.set_xlabel("verifier layer j")
    ax.set_ylabel("draft layer i")
    if draft_labels:
        ax.set_yticks(range(n_draft), draft_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="similarity (higher = closer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tradeoff(summary: pd.DataFrame, path: Path) -> Path:
    """Perplexity increase vs KV reduction (sparse layers), one line per ``layer_map``, points = p."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, group in summary.groupby("layer_map", sort=False):
        group = group.sort_values("p")
        ax.plot(100 * group.kv_reduction_sparse_layers, 100 * group.ppl_rel_increase, marker="o", label=name)
    ax.set_xlabel("KV reduction, sparse layers (%)")
    ax.set_ylabel("perplexity increase (%)")
    ax.set_title("SpecAttn by layer mapping (points: p values)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
