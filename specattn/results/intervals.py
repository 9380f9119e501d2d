"""Per-setting means of a table experiment's samples with 95% bootstrap intervals.

``python -m specattn.results intervals RUN [RUN ...]`` prints, for each run folder (finished, or cut: its
``parts/``; or a file of a run's per-sample rows), one row per setting, or with ``--pool`` one table over the
runs' samples together (:func:`pool_samples`), or with ``--join`` one table over runs of other settings on the
same windows (:func:`join_samples`): the pooled perplexity and its relative increase over dense
(``exp((sum nll - sum dense_nll) / sum tokens) - 1``, the same pooling as the run's own table), the
sparse-layer and whole-model KV read reductions (``1 - reads / dense reads`` over all samples), and a 95%
percentile-bootstrap interval for each ratio, resampling whole samples (texts), so the interval states how
much the number depends on which texts were drawn.
"""

from __future__ import annotations

import textwrap

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import SpecAttnError

RESAMPLES = 10_000


def _ratios(sums: np.ndarray) -> np.ndarray:
    """``sums (..., 5)``: nll, dense nll, tokens, sparse-layer reads, their dense reads -> (..., 2)."""
    increase = np.exp((sums[..., 0] - sums[..., 1]) / sums[..., 2]) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        reduction = np.where(sums[..., 4] > 0, 1 - sums[..., 3] / sums[..., 4], 0.0)
    return np.stack([increase, reduction], axis=-1)


VARIED = ("layer_map", "head_agg", "chunk_size")  # columns some studies vary under one setting name
SUMS = ["nll", "dense_nll", "tokens", "kv_reads_sparse_layers", "kv_dense_reads_sparse_layers"]  # what :func:`_ratios` sums


def setting_labels(samples: pd.DataFrame) -> pd.Series:
    """Each row's setting, with ``name=value`` appended for each :data:`VARIED` column that takes several
    values in ``samples`` (the alignment study runs "specattn p=0.9" once per layer map); dense rows, which
    none of those columns change, stay "dense"."""
    varied = [c for c in VARIED if c in samples and samples[c].astype(str).nunique() > 1]
    labels = samples["setting"].astype(str)
    sparse = labels != "dense"
    for column in varied:
        labels = labels.where(~sparse, labels + f" {column}=" + samples[column].astype(str))
    return labels.rename("setting")


def interval_table(samples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per setting of ``samples`` (a table run's per-sample rows; :func:`setting_labels`): the pooled
    ratios and their 95% bootstrap intervals (percent points), resampling the setting's samples with
    replacement."""
    missing = [c for c in SUMS + ["setting", "kv_reads", "kv_dense_reads"] if c not in samples]
    if missing:
        raise SpecAttnError(f"these rows lack {missing}: intervals need a paper_table/ppl run's per-sample rows")
    rng = np.random.default_rng(seed)
    rows = []
    for setting, group in samples.groupby(setting_labels(samples).to_numpy(), sort=False):
        values = group[SUMS].to_numpy(dtype=np.float64)
        point = _ratios(values.sum(axis=0))
        picks = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
        low, high = np.percentile(_ratios(values[picks].sum(axis=1)), [2.5, 97.5], axis=0)
        whole = group["kv_dense_reads"].sum()
        rows.append({"setting": setting, "samples": len(group),
                     "ppl": float(np.exp(group["nll"].sum() / group["tokens"].sum())),
                     "ppl_increase_pct": 100 * point[0], "ci95_low": 100 * low[0], "ci95_high": 100 * high[0],
                     "sparse_kv_reduction_pct": 100 * point[1], "red_ci95_low": 100 * low[1],
                     "red_ci95_high": 100 * high[1],
                     "kv_reduction_pct": 100 * (1 - group["kv_reads"].sum() / whole) if whole else 0.0})
    return pd.DataFrame(rows)


def _paired(label: str, mine: pd.DataFrame, theirs: pd.DataFrame, reference: str, rng) -> dict | None:
    """``mine`` minus ``theirs`` (per-sample rows of two settings) on the samples both ran: the differences of the
    pooled ratios (percent points) and their 95% bootstrap intervals, resampling samples for both at once."""
    mine, theirs = mine.set_index("sample_id")[SUMS], theirs.set_index("sample_id")[SUMS]
    both = mine.index.intersection(theirs.index)
    if both.empty:
        return None
    a, b = mine.loc[both].to_numpy(np.float64), theirs.loc[both].to_numpy(np.float64)
    picks = rng.integers(0, len(both), size=(RESAMPLES, len(both)))
    diff = 100 * (_ratios(a[picks].sum(axis=1)) - _ratios(b[picks].sum(axis=1)))
    point = 100 * (_ratios(a.sum(axis=0)) - _ratios(b.sum(axis=0)))
    low, high = np.percentile(diff, [2.5, 97.5], axis=0)
    return {"setting": label, "versus": reference, "samples": len(both),
            "ppl_increase_diff_pct": point[0], "ci95_low": low[0], "ci95_high": high[0],
            "sparse_kv_reduction_diff_pct": point[1], "red_ci95_low": low[1], "red_ci95_high": high[1]}


def paired_versus(samples: pd.DataFrame, reference: str, seed: int = 0) -> pd.DataFrame:
    """Settings against a reference, on the samples both ran, paired (so a text's own difficulty cancels):
    ``reference`` is a setting (:func:`setting_labels`, e.g. ``specattn p=0.9 heads=mean``: every other sparse
    setting minus it), or ``column=value`` of a :data:`VARIED` column (``layer_map=proportional``: each setting
    minus the same setting under that value). Rows: :func:`_paired`."""
    labels = setting_labels(samples)
    rng = np.random.default_rng(seed)
    if reference in set(labels):
        base = samples[(labels == reference).to_numpy()]
        rows = [_paired(label, group, base, reference, rng)
                for label, group in samples.groupby(labels.to_numpy(), sort=False)
                if label != reference and group.setting.iloc[0] != "dense"]
        return pd.DataFrame([row for row in rows if row is not None])
    column, _, value = reference.partition("=")
    if column not in VARIED or not value:
        raise SpecAttnError(f"--versus {reference!r}: name a setting ({', '.join(dict.fromkeys(labels))}) or one of "
                            f"{', '.join(VARIED)} and its value, e.g. --versus layer_map=proportional")
    if column not in samples or value not in set(samples[column].astype(str)):
        raise SpecAttnError(f"--versus {reference!r}: no rows have {column}={value} "
                            f"(these have {sorted(set(samples[column].astype(str))) if column in samples else 'no ' + column})")
    others = [c for c in VARIED if c != column and c in samples]
    is_base = (samples[column].astype(str) == value).to_numpy()
    base = samples[is_base]
    rows = []
    for label, group in samples[~is_base].groupby(labels.to_numpy()[~is_base], sort=False):
        if group.setting.iloc[0] == "dense":
            continue
        same = base[base.setting == group.setting.iloc[0]]
        for other in others:
            same = same[same[other].astype(str) == str(group[other].iloc[0])]
        rows.append(_paired(label, group, same, reference, rng))
    return pd.DataFrame([row for row in rows if row is not None])


def pareto_settings(samples: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (:func:`interval_table`) as the settings :func:`specattn.results.plots.plot_pareto` draws:
    method, p, the pooled ratios as fractions (x: ``kv_reduction_sparse_layers``)."""
    first = samples.groupby(setting_labels(samples).to_numpy(), sort=False)[["method", "p"]].first()
    return pd.DataFrame({"setting": table.setting, "method": table.setting.map(first.method),
                         "p": table.setting.map(first.p), "ppl_rel_increase": table.ppl_increase_pct / 100,
                         "kv_reduction_sparse_layers": table.sparse_kv_reduction_pct / 100,
                         "kv_reduction": table.kv_reduction_pct / 100})


def plot_run(run: Path, samples: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> Path:
    """``out_dir/pareto-<run>.png``: the run's settings against sparse-layer KV reduction, the paper's
    operating points drawn beside them; the title says model, data, length and sample count."""
    from .plots import plot_pareto

    first = samples.iloc[0]
    title = textwrap.fill(f"{first['model']} on {first['dataset']}, {int(first['context_len'])} tokens, "
                          f"{samples['sample_id'].nunique()} samples ({run.name})", 90)  # a pooled name is long
    out_dir.mkdir(parents=True, exist_ok=True)
    return plot_pareto(pareto_settings(samples, table), out_dir / f"pareto-{run.name}.png", title,
                       x="kv_reduction_sparse_layers")


def _same_data(frames: list[pd.DataFrame], names: list[str], verb: str) -> None:
    """Refuse runs of different models, data or lengths (one line naming the column and each run's values)."""
    for column in ("model", "dataset", "context_len"):
        values = {name: set(frame[column].astype(str)) for name, frame in zip(names, frames) if column in frame}
        if len(set().union(*values.values())) > 1:
            raise SpecAttnError(f"the runs differ in {column} ({', '.join(f'{n}: {sorted(v)}' for n, v in values.items())}): "
                                f"{verb} runs of the same model, data and length only")


def join_samples(frames: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Several runs' per-sample rows side by side (runs of other settings over the same windows, e.g. one per
    ``chunk_size``): their sparse rows labelled by the :data:`VARIED` columns they differ in
    (:func:`setting_labels`), so ``--versus`` pairs them sample by sample; dense rows once per window (the first
    run's). The same model, data and length in every run; no setting twice on one window."""
    _same_data(frames, names, "join")
    joined = pd.concat(frames, ignore_index=True)
    dense = joined["setting"].astype(str) == "dense"
    joined = pd.concat([joined[dense].drop_duplicates("sample_id"), joined[~dense]], ignore_index=True)
    labelled = setting_labels(joined).astype(str) + " @ " + joined["sample_id"].astype(str)
    if labelled.duplicated().any():
        first = labelled[labelled.duplicated()].iloc[0]
        raise SpecAttnError(f"{first}: the same setting on the same window in two runs; join runs that differ in "
                            f"{', '.join(VARIED)} (or pool runs of other windows with --pool)")
    return joined


def pool_samples(frames: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Several runs' per-sample rows as one sample set (runs of the same settings over disjoint windows, e.g.
    ``dataset.first_sample=22`` after a run of 22): the same model, data, length and settings in every run,
    no sample in two."""
    _same_data(frames, names, "pool")
    settings = [set(frame["setting"]) for frame in frames]
    for name, have in zip(names[1:], settings[1:]):
        if have != settings[0]:
            raise SpecAttnError(f"{name} has settings {sorted(have ^ settings[0])} that {names[0]} has not (or the "
                                "reverse): pool runs of the same rows only")
    seen: dict[str, str] = {}
    for name, frame in zip(names, frames):
        for sample in frame["sample_id"].unique():
            if sample in seen:
                raise SpecAttnError(f"sample {sample} is in both {seen[sample]} and {name}: pooled runs must measure "
                                    "different windows (run the later one with dataset.first_sample=<samples before>)")
            seen[sample] = name
    return pd.concat(frames, ignore_index=True)
