"""Where a decoding step's time goes, from ``experiment=decode_real`` rows measured at several context lengths.

Per (batch, mode), the step time (``batch * tau / tokens_per_s``, ms) is fitted by least squares as
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
    ok = ok.assign(step_ms=1e3 * ok["batch"] * ok["tau"] / ok["tokens_per_s"], gigabytes=ok["bytes_total"] / 1e9,
                   weights_gb=weights / 1e9)
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
