"""Tables and plots of collected results (:func:`specattn.results.collect.collect`), written as PNG files.

``notebooks/analysis.ipynb`` calls these functions and ``python -m specattn.results plots`` writes
them all; no analysis lives only in the notebook.

* :func:`ppl_settings`: one row per run and method setting (token-weighted, like the run summaries);
* :func:`plot_pareto`: perplexity increase vs KV reduction, one curve per method and distinct run setting
  (:func:`curve_keys`: every config key the results depend on whose value differs between the runs);
* :func:`paper_table` / :func:`paper_table_markdown`: the paper's table from an ``experiment=paper_table`` run;
* :func:`plot_alignments`: the layer-alignment heatmaps of ``experiment=align`` runs;
* :func:`plot_kernel_scaling`: the kernel benchmarks of ``experiment=kernel_bench`` runs against length;
* :func:`plot_layer_coverage`: per-layer coverage and KV reduction of an ``experiment=layer_coverage`` run;
* :func:`plot_context_length`: KV reduction and perplexity increase against the context length;
* :func:`policy_points` / :func:`plot_policy_tradeoff`: ``experiment=decode_real``'s modes as speedup over dense
  speculative decoding against the share of its tau they keep, one panel per (context, batch);
* ``experiment=retrieval`` runs: accuracy heatmaps over depth x length (:mod:`specattn.retrieval.report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..align.plots import plot_alignment  # noqa: E402
from ..eval.ppl_metrics import summarise  # noqa: E402
from ..retrieval.report import plot_heatmaps, plot_overview  # noqa: E402
from ..core.errors import SpecAttnError  # noqa: E402

#: the paper's row order (methods not listed follow, in first-seen order)
METHOD_ORDER = ("dense", "streaming", "quest", "random", "draft_topk", "specattn", "oracle_topp")


def _experiment_rows(collected: pd.DataFrame, name: str) -> pd.DataFrame:
    return collected[collected["config.experiment.name"] == name]


#: run-level config keys that are no curve of their own: the method (its settings are a curve's points),
#: the figure's own keys, and the experiment's (paper_table and ppl runs of one setting join one curve)
NOT_CURVE_KEYS = ("method", "model.name", "dataset.name", "dataset.context_len", "experiment")


def _curve_columns(collected: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The ``config.*`` columns of the keys the runs' results depend on (``experiment.depends_on``, nodes
    expanded to their leaves) but :data:`NOT_CURVE_KEYS`."""
    listed = set()
    for text in rows.get("config.experiment.depends_on", pd.Series(dtype=object)).dropna().unique():
        listed.update(json.loads(text) if isinstance(text, str) else text)
    listed = [key for key in listed if not any(key == no or key.startswith(no + ".") for no in NOT_CURVE_KEYS)]
    columns = [c for c in collected.columns if c.startswith("config.")]
    return sorted(c for c in columns if any(c == f"config.{key}" or c.startswith(f"config.{key}.") for key in listed)
                  and not any(c == f"config.{no}" or c.startswith(f"config.{no}.") for no in NOT_CURVE_KEYS))


def ppl_settings(collected: pd.DataFrame) -> pd.DataFrame:
    """Per run and method setting: ``summarise`` columns plus ``run``, ``experiment``, ``model``,
    ``dataset``, ``context_len``, ``chunk_size``, ``gamma``, the setting's ``p`` and the run's value of
    every config key its results depend on (``config.*`` columns, see :func:`curve_keys`)."""
    if "nll" not in collected:
        return pd.DataFrame()
    rows = collected[collected["nll"].notna() & collected["context_len"].notna()]  # not layer_coverage's per-layer rows
    curve_columns = _curve_columns(collected, rows)
    frames = []
    for run, group in rows.groupby("run", sort=False):
        summary = summarise(group)
        first = group.iloc[0]
        summary.insert(0, "run", run)
        for column, key in (("experiment", "config.experiment.name"), ("model", "model"), ("dataset", "dataset")):
            summary[column] = first[key]
        for column in ("context_len", "chunk_size", "gamma"):  # float in the collected table when other runs lack them
            summary[column] = int(first[column])
        summary["p"] = summary.setting.map(group.groupby("setting").p.first())
        for column in curve_columns:
            summary[column] = first[column]
        frames.append(summary)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curve_keys(settings: pd.DataFrame) -> list[str]:
    """The ``config.*`` columns whose values differ between the runs of ``settings``: each distinct
    combination (per method) is a curve of its own."""
    columns = [c for c in settings.columns if c.startswith("config.")]
    return [c for c in columns if settings[c].map(repr).nunique() > 1]


def curve_label(method: str, keys: list[str], values: tuple) -> str:
    """``specattn chunk_size=8 num_samples=4``: the method and the differing keys (last name, or the
    whole dotted key where two keys share it)."""
    names = [key.removeprefix("config.") for key in keys]
    last = [name.rsplit(".", 1)[-1] for name in names]
    shown = [short if last.count(short) == 1 else name for name, short in zip(names, last)]
    return " ".join([method, *(f"{name}={_text(value)}" for name, value in zip(shown, values))])


def _sortable(value) -> tuple:
    """Numbers by value, then everything else by its text (missing values last)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return (0, value, "")
    return (1, 0, "" if value is None else str(value))


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def pareto_curves(settings: pd.DataFrame, x: str = "kv_reduction") -> dict[str, pd.DataFrame]:
    """``{label: the curve's settings by x}``: one curve per method (paper order) and distinct value of the
    :func:`curve_keys` (dense, the origin, is none)."""
    sparse = settings[settings.method != "dense"]
    keys = curve_keys(settings)
    groups = sparse.groupby(["method", *keys], sort=False, dropna=False) if len(sparse) else []
    ordered = sorted(groups, key=lambda item: (_method_rank(item[0][0]), [_sortable(v) for v in item[0][1:]]))
    return {curve_label(method, keys, values): group.sort_values(x) for (method, *values), group in ordered}


#: the paper's operating points (KV reduction %, perplexity increase %): TinyLlama-1.1B -> Llama-2-7B on PG-19
PAPER_POINTS = ((78.4, 15.29), (68.8, 4.43), (44.3, 0.56))


def plot_pareto(settings: pd.DataFrame, path: Path, title: str = "", x: str = "kv_reduction",
                paper: bool = True) -> Path:
    """Perplexity increase (%) vs KV reduction (%): one curve per method and distinct setting of the
    runs (:func:`curve_keys`, named in the legend) through its settings in order of KV reduction; dense is
    the origin; ``paper``: the paper's three operating points (:data:`PAPER_POINTS`, another pair and text)
    as crosses. The y axis is linear while every point lies within +-10%, else symmetric-log."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    sparse = settings[settings.method != "dense"]
    curves = pareto_curves(settings, x)
    for label, group in curves.items():
        ax.plot(100 * group[x], 100 * group.ppl_rel_increase, marker="o", label=label)
    ax.scatter([0], [0], color="black", marker="*", s=80, label="dense", zorder=3)
    xs, ys = 100 * sparse[x], 100 * sparse.ppl_rel_increase
    if paper:
        px, py = zip(*PAPER_POINTS)
        ax.scatter(px, py, color="black", marker="x", s=50, zorder=3,
                   label="paper: SpecAttn, TinyLlama->Llama-2 on PG-19")
        xs, ys = pd.concat([xs, pd.Series(px)]), pd.concat([ys, pd.Series(py)])
    _sane_axes(ax, xs, ys)
    ax.set_xlabel("KV reduction, all layers (%)" if x == "kv_reduction" else "KV reduction, sparse layers (%)")
    ax.set_ylabel("perplexity increase (%)")
    ax.set_title(title or "perplexity increase vs KV reduction", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7 if len(curves) > 4 else 8)
    return _save(fig, path)


def _sane_axes(ax, xs: pd.Series, ys: pd.Series) -> None:
    """Limits that hold the origin and every point with a margin (one point included), plain tick labels;
    y symmetric-log only where points pass +-10%."""
    x_high = max(1.0, float(xs.max()) if len(xs) else 0.0)
    ax.set_xlim(min(0.0, float(xs.min()) if len(xs) else 0.0) - 0.04 * x_high, 1.06 * x_high)
    low, high = min(0.0, float(ys.min()) if len(ys) else 0.0), max(0.0, float(ys.max()) if len(ys) else 0.0)
    span = max(high - low, 0.1)
    if max(abs(low), abs(high)) > 10:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(min(low * 1.6, -0.5), high * 1.6)  # a margin in log terms
    else:
        ax.set_ylim(low - 0.08 * span, high + 0.08 * span)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def paper_table(settings: pd.DataFrame) -> pd.DataFrame:
    """The paper's columns for the settings of one run, in the paper's row order (by method, then p)."""
    p = settings.p.fillna(0.0).tolist()
    order = sorted(range(len(settings)), key=lambda i: (_method_rank(settings.method.iloc[i]), p[i], i))
    rows = settings.iloc[order]
    return pd.DataFrame({
        "method": rows.setting.values,
        "ppl": rows.ppl.values,
        "rel. increase": [math.nan if m == "dense" else v for m, v in zip(rows.method, rows.ppl_rel_increase)],
        "KV reduction": [math.nan if m == "dense" else v for m, v in zip(rows.method, rows.kv_reduction)],
        "KV reduction (sparse layers)": [math.nan if m == "dense" else v
                                         for m, v in zip(rows.method, rows.kv_reduction_sparse_layers)],
    })


def paper_table_markdown(table: pd.DataFrame) -> str:
    """``paper_table`` as a Markdown table (percentages with two decimals, ``-`` for none)."""
    def cell(column, value):
        if isinstance(value, str):
            return value
        if math.isnan(value):
            return "-"
        if column == "ppl":
            return f"{value:.3f}"
        return f"{100 * value:+.2f}%" if column == "rel. increase" else f"{100 * value:.2f}%"

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in row.items()) + " |" for _, row in table.iterrows()]
    return "\n".join(lines)


def plot_alignments(collected: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One heatmap per ``experiment=align`` run (its ``similarity`` cells, the chosen map as a path)."""
    paths = []
    for run, cells in _experiment_rows(collected, "align").groupby("run", sort=False):
        matrix = cells.pivot_table(index="draft_layer", columns="verifier_layer", values="similarity")
        mapping = cells[cells.chosen.astype(bool)].sort_values("verifier_layer").draft_layer.astype(int).tolist()
        labels = cells.drop_duplicates("draft_layer").sort_values("draft_layer").draft_label.astype(str).tolist()
        name = Path(run).name
        title = f"{cells['config.model.name'].iloc[0]}: {cells.metric.iloc[0]} similarity, draft vs verifier layers"
        paths.append(plot_alignment(matrix.to_numpy(), mapping, Path(out_dir) / f"alignment-{name}.png", title, labels))
    return paths


def plot_kernel_scaling(bench: pd.DataFrame, path: Path) -> Path:
    """Kernel benchmarks against length: nucleus selection time (ours vs sort-based, per row count)
    and the sparse pipeline's speedup over dense attention (per model and kept fraction)."""
    selection = bench[bench.part == "selection"].dropna(subset=["ours_threshold_ms"])
    attention = bench[bench.part == "attention"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for rows, group in selection.groupby("rows"):
        group = group.sort_values("L")
        line, = left.plot(group.L, group.ours_threshold_ms, marker="o", label=f"ours, {rows} rows")
        left.plot(group.L, group.sort_threshold_ms, marker="x", linestyle="--", color=line.get_color(),
                  label=f"torch.sort, {rows} rows")
    left.set(xscale="log", yscale="log", xlabel="keys per row (L)", ylabel="ms", title="top-p threshold")
    for (model, density), group in attention.groupby(["model", "density"]):
        group = group.sort_values("L")
        right.plot(group.L, group.pipeline_speedup, marker="o", label=f"{model}, keep {density:.0%}")
    right.axhline(1.0, color="grey", linewidth=1)
    right.set(xscale="log", xlabel="context length (L)", ylabel="speedup over dense",
              title="selection + sparse attention, one layer")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_decode_throughput(results: pd.DataFrame, path: Path) -> Path:
    """``experiment=decode_bench``: tokens/s against context, one panel per (pair, batch) (a row per pair),
    one line per mode (autoregressive, dense speculative decoding, SpecAttn per kept fraction); dotted: each
    mode's roofline."""
    ok = results[results["error"].isna()] if "error" in results else results
    pairs, batches = list(dict.fromkeys(ok["pair"])), sorted(set(ok["batch"]))
    fig, axes = plt.subplots(max(1, len(pairs)), max(1, len(batches)), figsize=(4.5 * max(1, len(batches)),
                             3.8 * max(1, len(pairs))), squeeze=False)
    for row, pair in enumerate(pairs):
        for col, batch in enumerate(batches):
            ax, group = axes[row][col], ok[(ok["pair"] == pair) & (ok["batch"] == batch)]
            for (mode, kept), line in group.groupby(["mode", "kept"], sort=False, dropna=False):
                line = line.sort_values("context")
                label = {"ar": "autoregressive", "dense": "dense spec. decoding"}.get(mode, f"SpecAttn {kept:.0%} kept")
                drawn, = ax.plot(line.context, line.tokens_per_s, marker="o", markersize=3, label=label)
                ax.plot(line.context, line.roof_tokens_per_s, linestyle=":", color=drawn.get_color())
            ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="tokens/s", title=f"{pair}, batch {batch}")
            ax.grid(alpha=0.3, which="both")
            if not group.empty:
                ax.legend(fontsize=6)
    return _save(fig, path)


#: :func:`policy_points`' columns
POINT_COLUMNS = ["context", "batch", "mode", "speedup", "steady_speedup", "tau_retention", "cont_ppl_change", "step_ms",
                 "verifier_kept", "roof_speedup", "roof_share", "steady_roof_share"]


def policy_points(rows: pd.DataFrame) -> pd.DataFrame:
    """``experiment=decode_real`` rows -> per (context, batch) and speculative mode: ``speedup`` (tokens/s over
    dense speculative decoding's), ``steady_speedup`` (the same over ``steady_tokens_per_s``), ``tau_retention`` (tau
    over dense's), ``cont_ppl_change``, all measured in the same run; the mode's ``step_ms`` and ``verifier_kept``;
    ``roof_speedup`` (the roofline's tokens/s over dense's, each at its row's measured tau and kept fraction) and the
    measured share of it, ``roof_share`` (tokens/s) and ``steady_roof_share``. NaN where the rows lack a column."""
    ok = rows[rows["error"].isna()] if "error" in rows else rows
    out = []

    def ratio(r, base, column):
        return r[column] / base[column] if column in r else math.nan

    for (context, batch), group in ok.groupby(["context", "batch"], sort=False):
        dense = group[group["mode"] == "dense"]
        if dense.empty:
            continue
        base = dense.iloc[0]
        for _, r in group[group["mode"] != "ar"].iterrows():
            speedup, steady, roof = (ratio(r, base, c) for c in ("tokens_per_s", "steady_tokens_per_s",
                                                                   "roof_tokens_per_s"))
            out.append({"context": context, "batch": batch, "mode": r["mode"], "speedup": speedup,
                        "steady_speedup": steady, "tau_retention": r["tau"] / base["tau"],
                        "cont_ppl_change": ratio(r, base, "cont_ppl") - 1, "step_ms": r.get("step_ms", math.nan),
                        "verifier_kept": r.get("verifier_kept", math.nan), "roof_speedup": roof,
                        "roof_share": speedup / roof, "steady_roof_share": steady / roof})
    return pd.DataFrame(out, columns=POINT_COLUMNS)


def pool_decode_runs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``modes.csv`` rows of several ``experiment=decode_real`` runs as one table: a (context, batch, mode)
    measured by more than one run keeps the later run's row (the list's order)."""
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(["context", "batch", "mode"], keep="last").reset_index(drop=True)


def repeated_points(frames: list[pd.DataFrame]) -> list[str]:
    """One line per (context, batch) that more than one of the runs' ``modes.csv`` rows (with column ``run``)
    measured: there :func:`pool_decode_runs` keeps each mode's row from the last run that has the mode, while the
    intervals pool the runs' prompts, a window decoded by several runs once, from the last (each prompt by its window:
    :func:`specattn.results.run_files.read_prompts`)."""
    runs = pd.concat([frame[["context", "batch", "run"]].drop_duplicates() for frame in frames], ignore_index=True)
    return [f"{context} tokens, batch {batch}: measured by {', '.join(group['run'])}; each mode's timings from the "
            "last of them that ran it, the intervals over every window they decoded (a window once, from the last)"
            for (context, batch), group in runs.groupby(["context", "batch"], sort=False) if len(group) > 1]


def plot_decoding_by_context(rows: pd.DataFrame, path: Path, title: str = "", batch: int | None = None,
                             intervals: pd.DataFrame | None = None) -> Path:
    """The real table's figure from :func:`policy_points`: a row of panels per batch (every batch measured, or only
    ``batch``), each speculative mode against the context length: its speedup over dense speculative decoding
    (steady state: filled markers on a line; tokens/s: hollow markers; the roofline's prediction at the mode's
    measured tau and kept fraction: dotted), tau as a share of dense speculative decoding's, and the dense verifier's
    continuation perplexity over dense speculative decoding's output's (where measured); with ``intervals``
    (:func:`specattn.results.decoding_intervals.prompt_intervals`) their 95% intervals as error bars. A mode keeps
    its colour in every row."""
    points = policy_points(rows)
    if points.empty:
        raise SpecAttnError("no (context, batch) point has dense speculative decoding: nothing to draw against")
    points = points[points["mode"] != "dense"]
    batches = sorted(points["batch"].unique()) if batch is None else [batch]
    modes = list(dict.fromkeys(points["mode"]))  # the rows' order, in every panel
    points = points.sort_values("context")
    fig, axes = plt.subplots(len(batches), 3, figsize=(17.0, 4.4 * len(batches)), squeeze=False)
    for row, at in zip(axes, batches):
        at_batch = points[points["batch"] == at]
        for i, mode in enumerate(modes):
            group, color = at_batch[at_batch["mode"] == mode], f"C{i % 10}"
            if group.empty:
                continue
            label = mode.replace("specattn", "SpecAttn").replace(" match=SpecAttn", " matched to")
            row[0].plot(group["context"], group["steady_speedup"], marker="o", lw=1, color=color, label=label)
            row[0].plot(group["context"], group["speedup"], marker="o", ls="none", mfc="none", color=color)
            row[0].plot(group["context"], group["roof_speedup"], ls=":", lw=1, color=color)
            bars = [None, None]
            if intervals is not None and not intervals.empty:
                ci = intervals[(intervals["batch"] == at) & (intervals["mode"] == mode)].set_index("context")
                ci = ci.reindex(group["context"])
                bars = [100 * np.abs(ci[[lo, hi]].to_numpy().T - ci[[mid]].to_numpy().T)
                        for lo, hi, mid in (("tau_ci95_low", "tau_ci95_high", "tau_retention"),
                                            ("ppl_ci95_low", "ppl_ci95_high", "cont_ppl_change"))]
            for ax, values, err in ((row[1], group["tau_retention"], bars[0]),
                                    (row[2], group["cont_ppl_change"], bars[1])):
                ax.errorbar(group["context"], 100 * values, yerr=err, marker="o", lw=1, capsize=2, color=color)
        for ax, level, ylabel, what in (
                (row[0], 1.0, "speedup over dense SD", "steady (filled), tokens/s (hollow), roofline (dotted)"),
                (row[1], 100.0, "tau, % of dense SD's", "tau retention"),
                (row[2], 0.0, "continuation ppl, % over dense SD's output", "the dense verifier's perplexity")):
            ax.axhline(level, color="grey", lw=0.6)
            ax.set_xscale("log", base=2)
            ax.set(xlabel="context (tokens)", ylabel=ylabel, title=f"batch {at}: {what}")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def tagged_policy_points(runs: list[tuple[pd.DataFrame, str]]) -> pd.DataFrame:
    """:func:`policy_points` of several runs side by side, each against its own dense speculative decoding: every
    mode but ``dense`` labelled ``"mode [tag]"`` by its run's tag (one ``dense`` row per point, the first run's)."""
    frames = []
    for rows, tag in runs:
        points = policy_points(rows)
        dense = points["mode"] == "dense"
        points.loc[~dense, "mode"] = points.loc[~dense, "mode"] + f" [{tag}]"
        frames.append(points)
    return pd.concat(frames, ignore_index=True).drop_duplicates(["context", "batch", "mode"]).reset_index(drop=True)


def plot_policy_tradeoff(rows: pd.DataFrame, path: Path, title: str = "") -> Path:
    """:func:`plot_points_tradeoff` of the rows' :func:`policy_points`."""
    return plot_points_tradeoff(policy_points(rows), path, title)


def plot_points_tradeoff(points: pd.DataFrame, path: Path, title: str = "") -> Path:
    """:func:`policy_points` (or :func:`tagged_policy_points`) as a scatter, one labelled point per mode, a panel per
    (context, batch); dense speculative decoding is the star at (100%, 1.0x). Where the points have it, each mode's
    steady-state speedup is a hollow marker below or above its tokens/s point, joined to it (the gap is the slowest
    sequence's wait)."""
    panels = list(dict.fromkeys(zip(points["context"], points["batch"])))
    cols = min(2, max(1, len(panels)))
    rows_ = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows_, cols, figsize=(6.0 * cols, 4.6 * rows_), squeeze=False)
    for ax, (context, batch) in zip(axes.flat, panels):
        group = points[(points["context"] == context) & (points["batch"] == batch)]
        for _, r in group.iterrows():
            dense = r["mode"] == "dense"
            dot = ax.scatter(100 * r["tau_retention"], r["speedup"], marker="*" if dense else "o", s=90 if dense else 25,
                             color="black" if dense else None)
            if not dense and not math.isnan(r["steady_speedup"]):
                color = dot.get_facecolor()[0]
                ax.scatter(100 * r["tau_retention"], r["steady_speedup"], s=25, facecolors="none", edgecolors=[color])
                ax.plot([100 * r["tau_retention"]] * 2, [r["speedup"], r["steady_speedup"]], color=color, lw=0.6)
            ax.annotate(r["mode"].replace("specattn", "SpecAttn").replace(" match=SpecAttn p=0.95", " (matched)"),
                        (100 * r["tau_retention"], r["speedup"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="grey", lw=0.6)
        steady = group["steady_speedup"].notna().any()
        ax.set(xlabel="tau, % of dense speculative decoding's",
               ylabel="tokens/s over dense speculative decoding" + (" (hollow: steady state)" if steady else ""),
               title=f"{context} tokens, batch {batch}")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_plots(collected: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Every plot the collected runs allow: a Pareto plot per (model, dataset, context length), a
    context-length plot per (model, dataset) measured at several lengths, the alignment heatmaps, the
    kernel scaling plot, the retrieval heatmaps per model (every retrieval run of the model together)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    settings = ppl_settings(collected)
    if not settings.empty:
        for (model, dataset, context), group in settings.groupby(["model", "dataset", "context_len"]):
            key = f"pareto-{model}-{dataset}-{context}"
            written[key] = plot_pareto(group, out_dir / f"{key}.png", f"{model} on {dataset}, {context} tokens")
        for (model, dataset), group in settings.groupby(["model", "dataset"]):
            if group.context_len.nunique() > 1:
                key = f"context_length-{model}-{dataset}"
                written[key] = plot_context_length(group, out_dir / f"{key}.png", f"{model} on {dataset}")
    for path in plot_alignments(collected, out_dir):
        written[path.stem] = path
    bench = _experiment_rows(collected, "kernel_bench")
    if not bench.empty:
        written["kernel_scaling"] = plot_kernel_scaling(bench, out_dir / "kernel_scaling.png")
    for model, rows in _experiment_rows(collected, "retrieval").groupby("model", sort=False):
        written[f"retrieval-{model}"] = plot_overview(rows, out_dir / f"retrieval-{model}.png", f"{model}: exact match "
                                                      "over depth x length (tasks with a depth axis)")
        written.update(plot_heatmaps(rows, out_dir, prefix=f"retrieval-{model}", title=f"{model}: "))
    return written


def one_run_per_length(settings: pd.DataFrame) -> pd.DataFrame:
    """Per context length and setting, the row of the run with the most samples, by length."""
    rows = settings.sort_values("samples", ascending=False, kind="stable")
    return rows.drop_duplicates(["context_len", "setting"]).sort_values("context_len", kind="stable")


def plot_context_length(settings: pd.DataFrame, path: Path, title: str,
                        methods: tuple[str, ...] = ("specattn", "oracle_topp")) -> Path:
    """KV reduction (sparse layers) and perplexity increase against the context length, one line per
    method and p (``ppl_settings`` rows of one model and dataset; per context length and setting the
    run with the most samples)."""
    rows = one_run_per_length(settings[settings.method.isin(methods)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (method, p), group in rows.groupby(["method", "p"], sort=False):
        style = "-" if method == "specattn" else "--"
        label = f"{method} p={p:g}"
        left.plot(group.context_len, 100 * group.kv_reduction_sparse_layers, style, marker="o", label=label)
        right.plot(group.context_len, 100 * group.ppl_rel_increase, style, marker="o", label=label)
    for ax, ylabel in ((left, "KV reduction, sparse layers (%)"), (right, "perplexity increase (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    right.set_yscale("symlog", linthresh=0.1)
    left.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_layer_coverage(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """An ``experiment=layer_coverage`` summary: the verifier mass kept (top) and the KV reduction
    (bottom) against the verifier layer, one line per p."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for p, group in summary.groupby("p"):
        top.plot(group.layer, 100 * group.coverage, marker="o", markersize=3, label=f"p={p}")
        bottom.plot(group.layer, 100 * group.layer_kv_reduction, marker="o", markersize=3, label=f"p={p}")
    top.set_ylabel("verifier mass kept (%)")
    bottom.set_ylabel("KV reduction (%)")
    bottom.set_xlabel("verifier layer")
    top.set_title(title, fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
