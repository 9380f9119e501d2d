"""Where a decoding step's time goes, from ``experiment=decode_real`` rows measured at several context lengths.

Per (batch, mode), the step time (``step_ms``: a group's time over the steps it took; rows measured before
``step_ms`` existed get it from :func:`with_step_times`, else the apparent ``batch * tau / tokens_per_s``, which
also counts each group's wait for its slowest sequence) is fitted by least squares as
``fixed + bytes / bandwidth`` over the contexts, ``bytes`` being the roofline's bytes per step of that mode at
that point (weights, KV, draft rows, selection). The intercept is what the step costs whatever it reads (the
launches and latencies of two small models' forwards, the selection's fixed work); the slope's inverse is the
bandwidth the mode's extra bytes actually move at. ``cap_at_longest`` is dense speculative decoding's step at
the longest context over its fit at the weights' bytes alone (every KV byte gone, its fixed cost and
bandwidth kept): the speedup a policy that read no KV at all would get there at dense's tau, what no
KV-read policy can exceed on that pair and batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["batch", "mode", "contexts", "fixed_ms", "bandwidth_TBps", "max_residual_ms", "step_ms_longest",
           "cap_at_longest"]


def step_costs(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``modes.csv`` of decode_real runs) -> one row per (batch, mode) measured at >= 3 contexts
    (none where the rows lack the byte counts)."""
    if not {"bytes_total", "bytes_verifier_weights", "bytes_draft_weights"} <= set(rows.columns):
        return pd.DataFrame(columns=COLUMNS)  # rows without the roofline's byte counts: nothing to fit
    ok = rows[rows["error"].isna()] if "error" in rows else rows
    weights = ok["bytes_verifier_weights"].fillna(0) + ok["bytes_draft_weights"].fillna(0)
    apparent = 1e3 * ok["batch"] * ok["tau"] / ok["tokens_per_s"]
    measured = ok["step_ms"] if "step_ms" in ok else pd.Series(np.nan, index=ok.index)
    ok = ok.assign(step_ms=measured.fillna(apparent), gigabytes=ok["bytes_total"] / 1e9, weights_gb=weights / 1e9)
    out = []
    for (batch, mode), group in ok.groupby(["batch", "mode"], sort=False):
        group = group.sort_values("context")
        if group["context"].nunique() < 3:
            continue
        slope, fixed = np.polyfit(group["gigabytes"], group["step_ms"], 1)
        residual = group["step_ms"] - (fixed + slope * group["gigabytes"])
        out.append({"batch": batch, "mode": mode, "contexts": group["context"].nunique(), "fixed_ms": fixed,
                    "bandwidth_TBps": 1.0 / slope if slope > 0 else np.nan,
                    "max_residual_ms": float(residual.abs().max()), "step_ms_longest": group["step_ms"].iloc[-1],
                    "no_kv_ms": fixed + slope * group["weights_gb"].iloc[-1]})
    table = pd.DataFrame(out, columns=[*COLUMNS[:-1], "no_kv_ms"])
    dense = table[table["mode"] == "dense"].set_index("batch")
    table["cap_at_longest"] = [dense.loc[b, "step_ms_longest"] / dense.loc[b, "no_kv_ms"] if b in dense.index else np.nan
                               for b in table["batch"]]
    return table[COLUMNS]


def with_step_times(rows: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """``modes.csv`` rows with ``step_ms`` and ``steady_tokens_per_s`` filled in where the run predates them, from
    its ``prompts.csv`` (steps per prompt; prompt ``i`` was in group ``(i - first_sample) // batch``, ``first_sample``
    0 where the rows lack it: :func:`specattn.results.run_files.read_prompts`): a group took as many steps
    as its slowest sequence, so ``step_ms = batch * new_tokens / tokens_per_s / mean over groups of those steps``
    (exact for one group; tokens/s being the median over groups, close for more)."""
    out = rows.copy()
    for column in ("step_ms", "steady_tokens_per_s"):
        if column not in out:
            out[column] = np.nan
    first = prompts["first_sample"] if "first_sample" in prompts else 0
    groups = prompts.assign(group=(prompts["prompt"] - first) // prompts["batch"], first_sample=first)
    slowest = groups.groupby(["context", "batch", "mode", "first_sample", "group"])["steps"].max()  # a run's group
    slowest = slowest.groupby(["context", "batch", "mode"]).mean()
    for i, r in out[out["step_ms"].isna()].iterrows():
        key = (r["context"], r["batch"], r["mode"])
        if key in slowest.index:
            out.loc[i, "step_ms"] = 1e3 * r["batch"] * r["new_tokens"] / r["tokens_per_s"] / slowest[key]
    fill = out["steady_tokens_per_s"].isna()
    out.loc[fill, "steady_tokens_per_s"] = 1e3 * out["batch"] * out["tau"] / out["step_ms"]
    return out
