"""The real table as docs/benchmarks.md prints it, from pooled ``experiment=decode_real`` runs.

One markdown row per (context, batch) and mode: the mode's step (ms) and tau, the verifier's kept fraction, tokens/s
and steady-state tokens/s over dense speculative decoding's at the same point (dense's own row gives its tokens/s),
the roofline's ratio at the measured tau and kept fraction and the share of it reached (tokens/s / steady), tau
retention and the continuation-perplexity change with their 95% intervals paired over prompts
(:func:`specattn.results.decoding_intervals.prompt_intervals`), the prompts the point ran and the groups of ``batch``
prompts they made (a group runs until its slowest sequence has its tokens, so one group's tokens/s is one draw of that
sequence), and where each point comes from: the run folder, whether its layers had the norms folded
(``experiment.fold_norms``; a run from before the option: no) and whether the draft's projections ran as one launches
(``experiment.draft_epilogue_rows`` or ``draft_down_split`` set; a run from before them: no). Autoregressive decoding
gets a row of its own (its step, and its tokens/s over dense speculative decoding's).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .run_files import run_config
from .plots import policy_points

HEADER = ("| context, batch | mode | step ms | tau | verifier kept | tokens/s | steady | roofline | share "
          "| tau retention | continuation ppl | prompts (groups) | run | norms folded | draft one launches |")
NAMES = {"ar": "AR", "dense": "dense SD"}


def mode_name(mode: str) -> str:
    """``specattn p=0.9`` -> ``SpecAttn p=0.9``, ``quest match=specattn p=0.9`` -> ``Quest, matched to p=0.9``."""
    if mode in NAMES:
        return NAMES[mode]
    for raw, name in (("streaming", "StreamingLLM"), ("quest", "Quest")):  # decode_real's matched baselines
        if mode.startswith(raw + " match=specattn "):
            return f"{name}, matched to {mode.rsplit(' ', 1)[1]}"
    return mode.replace("specattn", "SpecAttn", 1)


def run_settings(run: Path) -> dict[str, bool]:
    """The table's columns of where a row comes from, read from the run's ``config.yaml`` (:func:`run_config`; a run
    without one: all false): ``folded``, whether its layers had the norms folded (fused layers and ``fold_norms``), and
    ``draft_one``, whether its draft forwards ran a projection as one launch (fused layers and ``draft_epilogue_rows``
    or ``draft_down_split`` above 0: the q/k/v projection with its rotary and cache write, or the down projection with
    its residual add)."""
    experiment = run_config(run).get("experiment", {}) or {}
    fused = bool(experiment.get("fused_layers", True))
    return {"folded": fused and bool(experiment.get("fold_norms", False)),
            "draft_one": fused and any((experiment.get(key) or 0) > 0
                                       for key in ("draft_epilogue_rows", "draft_down_split"))}


def _missing(value) -> bool:
    """Whether a cell's value is absent (None, or NaN where a column lacks it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value, fmt: str, suffix: str = "") -> str:
    """``value`` formatted, or ``-`` where it is missing."""
    return "-" if _missing(value) else format(value, fmt) + suffix


def _count(row: pd.Series) -> str:
    """``prompts (groups)`` of a ``modes.csv`` row, or ``-`` where the run did not record them."""
    prompts, groups = row.get("prompts"), row.get("groups")
    return "-" if _missing(prompts) or _missing(groups) else f"{int(prompts)} ({int(groups)})"


def _interval(value: float, low: float, high: float, signed: bool) -> str:
    fmt = "+.1f" if signed else ".1f"
    return "-" if math.isnan(value) else f"{_num(100 * value, fmt, '%')} [{_num(100 * low, fmt, '%')}, " \
                                         f"{_num(100 * high, fmt, '%')}]"


def table_lines(rows: pd.DataFrame, intervals: pd.DataFrame | None) -> list[str]:
    """Markdown lines (header first) of pooled ``modes.csv`` rows that carry ``run``, ``folded`` and ``draft_one``
    columns, the points by batch, then longest context first."""
    points = policy_points(rows).set_index(["context", "batch", "mode"])
    spread = intervals.set_index(["context", "batch", "mode"]) if intervals is not None and len(intervals) else None
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    keys = sorted(rows[["context", "batch"]].drop_duplicates().itertuples(index=False), key=lambda k: (k[1], -k[0]))
    for context, batch in keys:
        group = rows[(rows["context"] == context) & (rows["batch"] == batch)]
        dense = group[group["mode"] == "dense"]
        if dense.empty:
            continue
        base = dense.iloc[0]
        point = f"{context // 1024}K, {batch}"
        for _, r in group.iterrows():
            where = f"{_count(r)} | {r['run']} | {'yes' if r['folded'] else 'no'} | {'yes' if r['draft_one'] else 'no'}"
            head = f"| {point} | {mode_name(r['mode'])} | {_num(r.get('step_ms'), '.3g')} | {r['tau']:.2f}"
            point = ""
            if r["mode"] in ("ar", "dense"):
                ratio = r["tokens_per_s"] / base["tokens_per_s"]
                shown = f"{ratio:.3f}x" if r["mode"] == "ar" else "1"
                lines.append(f"{head} | - | {shown} ({r['tokens_per_s']:,.0f} tok/s) | - | - | - | - | - | {where} |")
                continue
            p = points.loc[(context, batch, r["mode"])]
            tau = ppl = "-"
            if spread is not None and (context, batch, r["mode"]) in spread.index:
                i = spread.loc[(context, batch, r["mode"])]
                tau = _interval(i["tau_retention"], i["tau_ci95_low"], i["tau_ci95_high"], signed=False)
                ppl = _interval(i["cont_ppl_change"], i["ppl_ci95_low"], i["ppl_ci95_high"], signed=True)
            share = f"{_num(100 * p['roof_share'], '.0f', '%')} / {_num(100 * p['steady_roof_share'], '.0f', '%')}"
            lines.append(f"{head} | {_num(100 * p['verifier_kept'], '.1f', '%')} | {_num(p['speedup'], '.3f', 'x')}"
                         f" | {_num(p['steady_speedup'], '.3f', 'x')} | {_num(p['roof_speedup'], '.3f', 'x')}"
                         f" | {share} | {tau} | {ppl} | {where} |")
    return lines
