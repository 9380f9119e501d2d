"""The retrieval experiment's summary, heatmaps and Markdown table (from its ``results.parquet`` rows,
or from collected rows of several runs).

* :func:`summarise`: per task, context length and method setting (and over all tasks, ``task=all``):
  exact-match ``accuracy``, partial credit ``score``, the dense verifier's accuracy on the same
  samples and the difference, KV reductions from the summed reads, ``tau`` and ``acceptance``;
* :func:`plot_heatmaps`: per setting, accuracy over depth x length, one panel per task;
* :func:`plot_overview`: one panel per setting, accuracy over depth x length over the tasks that have
  a depth axis;
* :func:`grid_markdown`: a value (accuracy, KV reduction, ...) per task and length, one column per setting.

* :func:`paired_vs_dense`: each setting's accuracy minus the dense verifier's on the same samples, with a
  95% bootstrap interval over samples (the issue's "within 2 points of dense" needs the interval).

``python -m specattn.retrieval.report INPUT...`` prints the Markdown tables of retrieval rows, per model: INPUT
is a collected table (``python -m specattn.results collect``), a retrieval run's folder (finished: its
``results.parquet``; cut by a time limit: its ``parts/`` so far) or a file of per-sample rows (``.csv`` or
``.parquet``, e.g. ``docs/data/*/retrieval_*_samples.csv``); several inputs are pooled (a sample in two is refused;
runs under different seeds hold different samples).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ..core.errors import SpecAttnError  # noqa: E402
from ..core.run_rows import read_samples  # noqa: E402

SUMMARY_COLUMNS = ("task", "context_len", "method", "setting", "samples", "accuracy", "score", "dense_accuracy",
                   "vs_dense", "kv_reduction_sparse_layers", "kv_reduction", "tau", "acceptance")
LOGGED = ("accuracy", "score", "kv_reduction_sparse_layers", "tau")
SPREAD = "spread"
SAMPLE = ["seed", "sample_id"]  # a sample: the same id under another seed is another sample


def _cell(group: pd.DataFrame, dense: pd.DataFrame) -> dict:
    steps = group.steps.sum()
    sparse_dense = group.kv_dense_reads_sparse_layers.sum()
    accuracy = group.correct.astype(float).mean()
    dense_accuracy = dense.correct.astype(float).mean() if len(dense) else math.nan
    return {
        "method": group.method.iloc[0], "samples": len(group), "accuracy": accuracy,
        "score": group.score.mean(), "dense_accuracy": dense_accuracy, "vs_dense": accuracy - dense_accuracy,
        "kv_reduction_sparse_layers": 1.0 - group.kv_reads_sparse_layers.sum() / sparse_dense if sparse_dense else 0.0,
        "kv_reduction": 1.0 - group.kv_reads.sum() / group.kv_dense_reads.sum(),
        "tau": group.new_tokens.sum() / steps, "acceptance": group.accepted.sum() / group.drafted.sum(),
    }


def _cells(results: pd.DataFrame):
    """``(task, length, rows)`` per context length (ascending) and task (first-seen order), then ``task=all``
    over the length's tasks; empty cells skipped."""
    tasks = list(dict.fromkeys(results.task))
    for length in sorted(results.context_len.unique()):
        at_length = results[results.context_len == length]
        for task in [*tasks, "all"]:
            cell = at_length if task == "all" else at_length[at_length.task == task]
            if not cell.empty:
                yield task, int(length), cell


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (task, context length, setting), tasks and settings in first-seen order, lengths ascending,
    then ``task=all`` per (length, setting)."""
    rows = []
    for task, length, cell in _cells(results):
        dense = cell[cell.method == "dense"]
        for setting, group in cell.groupby("setting", sort=False):
            rows.append({"task": task, "context_len": length, "setting": setting, **_cell(group, dense)})
    return pd.DataFrame(rows)[list(SUMMARY_COLUMNS)]


def paired_vs_dense(results: pd.DataFrame, seed: int = 0, draws: int = 2000) -> pd.DataFrame:
    """Per (task, context length, setting other than dense), tasks ``all`` included: ``vs_dense`` = accuracy
    minus dense's on the samples both answered, and its 95% percentile-bootstrap interval resampling samples
    (``vs_dense_low``, ``vs_dense_high``); ``samples`` = how many were paired. Where every pair agrees the
    interval has zero width: resampling cannot show a difference that never occurred (with n samples, about
    3/n is what such a cell cannot exclude)."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, length, cell in _cells(results):
        key = [k for k in SAMPLE if k in cell]  # rows without a seed: one seed
        dense = cell[cell.method == "dense"].set_index(key).correct.astype(float)
        for setting, group in cell[cell.method != "dense"].groupby("setting", sort=False):
            mine = group.set_index(key).correct.astype(float)
            both = mine.index.intersection(dense.index)
            if both.empty:
                continue
            diff = (mine[both] - dense[both]).to_numpy()
            boot = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
            rows.append({"task": task, "context_len": length, "setting": setting, "samples": len(diff),
                         "vs_dense": diff.mean(), "vs_dense_low": np.quantile(boot, 0.025),
                         "vs_dense_high": np.quantile(boot, 0.975)})
    return pd.DataFrame(rows, columns=["task", "context_len", "setting", "samples", "vs_dense", "vs_dense_low",
                                       "vs_dense_high"])


def _counted(text: str, samples: int, most: int) -> str:
    """A cell's text, with ``(n=samples)`` when its setting has fewer samples than the row's ``samples`` column
    (pooled runs where some settings ran on fewer seeds)."""
    return text if samples == most else f"{text} (n={samples})"


def paired_markdown(paired: pd.DataFrame) -> str:
    """Rows (task, length, samples), one column per setting: accuracy minus dense's, points [95% interval];
    ``samples`` is the most pairs of any setting, a cell with fewer says its own."""
    settings = list(dict.fromkeys(paired.setting))
    lines = ["| task | length | samples | " + " | ".join(settings) + " |", "|---|---:|---:|" + "---:|" * len(settings)]
    for (task, length), group in paired.groupby(["task", "context_len"], sort=False):
        most = int(group.samples.max())
        cells = {r.setting: _counted(f"{100 * r.vs_dense:+.0f} [{100 * r.vs_dense_low:+.0f}, "
                                     f"{100 * r.vs_dense_high:+.0f}]", int(r.samples), most)
                 for r in group.itertuples()}
        lines.append(f"| {task} | {length} | {most} | " + " | ".join(cells.get(s, "-") for s in settings) + " |")
    return "\n".join(lines)


def read_rows(path: Path) -> pd.DataFrame:
    """Retrieval rows from a collected table, a run folder (finished or cut) or a file of per-sample rows; each
    row's ``seed`` (its run's: a sample is ``(seed, sample_id)``) from the rows, a collected table's
    ``config.seed``, the run folder's ``config.yaml``, else the default seed 0."""
    rows, _ = read_samples(path, kind="retrieval")
    if "config.experiment.name" in rows:
        rows = rows[rows["config.experiment.name"] == "retrieval"]
    missing = [c for c in ("task", "context_len", "sample_id", "setting", "method", "correct") if c not in rows]
    if missing or rows.empty:
        raise SpecAttnError(f"{path} holds no retrieval rows" + (f" (no {missing})" if missing else ""))
    rows = rows.reset_index(drop=True)
    if "seed" not in rows:
        config = path / "config.yaml"
        rows["seed"] = (rows["config.seed"] if "config.seed" in rows
                        else int(OmegaConf.load(config).get("seed", 0)) if config.is_file() else 0)
    return rows


def pool_rows(frames: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Several inputs' rows as one set; a (model, length, seed, sample, setting) in two inputs is refused."""
    keys = ["model", "context_len", *SAMPLE, "setting"]
    seen: dict[tuple, str] = {}
    for frame, name in zip(frames, names):
        for key in frame[[k for k in keys if k in frame]].itertuples(index=False):
            if key in seen:
                raise SpecAttnError(f"sample {key} is in both {seen[key]} and {name}: pool disjoint runs")
            seen[key] = name
    return pd.concat(frames, ignore_index=True)


def summary_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """``{"summary/<task>/<length>/<setting>/<metric>": value}`` for the :data:`LOGGED` metrics."""
    return {f"summary/{row.task}/{row.context_len}/{row.setting}/{key}": getattr(row, key)
            for row in summary.itertuples() for key in LOGGED}


def uninformative(summary: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The (task, length) cells where the dense verifier's accuracy is below ``threshold``."""
    dense = summary[(summary.method == "dense") & (summary.task != "all")]
    return dense[dense.accuracy < threshold][["task", "context_len", "samples", "accuracy"]]


def _depth_label(depth: float) -> str:
    return SPREAD if pd.isna(depth) else f"{depth:g}"


def accuracy_grid(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """``(accuracy, counts, depth labels, lengths)``: mean exact match per depth (rows; NaN depth ->
    ``spread``, last) and context length (columns)."""
    depths = sorted(rows.depth.dropna().unique()) + ([math.nan] if rows.depth.isna().any() else [])
    lengths = sorted(int(x) for x in rows.context_len.unique())
    accuracy = np.full((len(depths), len(lengths)), np.nan)
    counts = np.zeros((len(depths), len(lengths)), dtype=int)
    for i, depth in enumerate(depths):
        at_depth = rows[rows.depth.isna()] if pd.isna(depth) else rows[rows.depth == depth]
        for j, length in enumerate(lengths):
            cell = at_depth[at_depth.context_len == length]
            counts[i, j] = len(cell)
            if len(cell):
                accuracy[i, j] = cell.correct.astype(float).mean()
    return accuracy, counts, [_depth_label(d) for d in depths], lengths


def _heatmap(ax, rows: pd.DataFrame, title: str, xlabel: bool = True, ylabel: bool = True):
    accuracy, counts, depths, lengths = accuracy_grid(rows)
    image = ax.imshow(accuracy, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            if counts[i, j]:
                ax.text(j, i, f"{100 * accuracy[i, j]:.0f}%\nn={counts[i, j]}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n % 1024 == 0 else str(n) for n in lengths], fontsize=7)
    ax.set_yticks(range(len(depths)), depths, fontsize=7)
    if xlabel:
        ax.set_xlabel("context length (tokens)", fontsize=7)
    if ylabel:
        ax.set_ylabel("needle depth", fontsize=7)
    ax.set_title(title, fontsize=8)
    return image


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def _heatmap_grid(panels: list[tuple[str, pd.DataFrame]], columns: int, size: tuple[float, float], title: str,
                  path: Path) -> Path:
    """``panels`` ((label, rows) each) as accuracy-over-depth x length heatmaps, at most ``columns`` a line,
    each panel ``size`` inches, one shared colour bar; saved to ``path``."""
    columns = min(columns, max(1, len(panels)))
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, squeeze=False, figsize=(size[0] * columns + 1, size[1] * lines),
                             layout="constrained")
    for i, (ax, (label, rows)) in enumerate(zip(axes.flat, panels)):
        image = _heatmap(ax, rows, label, i + columns >= len(panels), i % columns == 0)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if panels:
        fig.colorbar(image, ax=axes, shrink=0.6, label="exact match")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_heatmaps(results: pd.DataFrame, out_dir: Path, prefix: str = "heatmap", title: str = "") -> dict[str, Path]:
    """Per setting, ``<prefix>-<setting>.png``: accuracy over depth x length, one panel per task."""
    paths = {}
    tasks = list(dict.fromkeys(results.task))
    for setting, rows in results.groupby("setting", sort=False):
        path = Path(out_dir) / f"{prefix}-{slug(setting)}.png"
        panels = [(task, rows[rows.task == task]) for task in tasks]
        paths[path.stem] = _heatmap_grid(panels, 4, (2.6, 2.4), f"{title}{setting}", path)
    return paths


def plot_overview(results: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One panel per setting: accuracy over depth x length over the tasks with a depth axis."""
    rows = results[results.depth.notna()]
    panels = [(setting, rows[rows.setting == setting]) for setting in dict.fromkeys(rows.setting)]
    return _heatmap_grid(panels, 3, (3.0, 2.6), title or "exact match over depth x length (tasks with a depth axis)",
                         path)


def grid_markdown(summary: pd.DataFrame, value: str = "accuracy") -> str:
    """Rows (task, length, samples), one column per setting: ``value`` as a percentage (``tau``: as is);
    ``samples`` is the most of any setting, a cell with fewer says its own."""
    settings = list(dict.fromkeys(summary.setting))
    lines = ["| task | length | samples | " + " | ".join(settings) + " |", "|---|---:|---:|" + "---:|" * len(settings)]
    for (task, length), group in summary.groupby(["task", "context_len"], sort=False):
        values, counts = dict(zip(group.setting, group[value])), dict(zip(group.setting, group.samples))
        most = int(group.samples.max())
        cells = ["-" if pd.isna(values.get(s, math.nan))
                 else _counted(f"{values[s]:.2f}" if value == "tau" else f"{100 * values[s]:.0f}%", int(counts[s]), most)
                 for s in settings]
        lines.append(f"| {task} | {length} | {most} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specattn.retrieval.report",
                                     description="Markdown tables of retrieval rows: collected tables, run folders "
                                                 "(finished or cut) or per-sample files, pooled")
    parser.add_argument("inputs", type=Path, nargs="+",
                        help="collected tables, retrieval run folders or files of their per-sample rows")
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR",
                        help="also write the pooled rows' figures there: retrieval-overview[-MODEL].png (accuracy "
                             "over depth x length per setting) and one heatmap per setting and task")
    args = parser.parse_args(argv)
    try:
        rows = pool_rows([read_rows(path) for path in args.inputs], [str(path) for path in args.inputs])
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for model, group in rows.groupby("model", sort=False) if "model" in rows else [("", rows)]:
        summary = summarise(group)
        for value, what in (("accuracy", "exact match"), ("score", "partial credit"),
                            ("kv_reduction_sparse_layers", "KV reduction, sparse layers"), ("tau", "tau")):
            print(f"\n{model}: {what}\n\n{grid_markdown(summary, value)}")
        print(f"\n{model}: exact match minus dense's on the same samples, points [95% bootstrap interval]\n\n"
              f"{paired_markdown(paired_vs_dense(group))}")
        if args.figures is not None:
            args.figures.mkdir(parents=True, exist_ok=True)
            name = f"-{slug(model)}" if model else ""
            samples = int((group.method == "dense").sum())
            overview = plot_overview(group, args.figures / f"retrieval-overview{name}.png",
                                     f"{model}: exact match over depth x length ({samples} samples in all)")
            maps = plot_heatmaps(group, args.figures, f"retrieval-heatmap{name}", f"{model}: ")
            print(f"\nfigures: {overview}, " + ", ".join(str(path) for path in maps.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
