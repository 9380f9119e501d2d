"""95% bootstrap intervals of decoding quality, paired over prompts (``experiment=decode_real``'s ``prompts.csv``).

For each (context, batch, mode), against dense speculative decoding on the same prompts: ``tau_retention``
(the mode's tau over dense's: total new tokens over total steps, so the ratio of the steps' sums) and
``cont_ppl_change`` (the dense verifier's perplexity of the mode's outputs over that of dense's outputs, minus 1:
``exp((sum nll - sum dense nll) / tokens) - 1``), each with a percentile-bootstrap interval that resamples
prompts with replacement, the same prompts for both (a prompt is the unit: its text decides how hard it is). Each
(context, batch, mode) draws from a generator of its own (seeded by ``seed`` and the point and mode), so its interval
is the same whichever other points and modes are pooled with it.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..core.errors import SpecAttnError

RESAMPLES = 10_000


def prompt_intervals(prompts: pd.DataFrame, new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """``prompts`` (rows of ``prompts.csv``: context, batch, mode, prompt, steps, cont_nll) -> one row per
    (context, batch, mode) with the point values and their 95% intervals."""
    missing = {"context", "batch", "mode", "prompt", "steps", "cont_nll"} - set(prompts.columns)
    if missing:
        raise SpecAttnError(f"these rows lack {sorted(missing)}: intervals need decode_real's prompts.csv")
    out = []
    for (context, batch), group in prompts.groupby(["context", "batch"], sort=False):
        dense = group[group["mode"] == "dense"].set_index("prompt")
        if dense.empty:
            continue
        for mode, rows in group.groupby("mode", sort=False):
            rows = rows.set_index("prompt")
            shared = rows.index.intersection(dense.index)
            steps = np.stack([rows.loc[shared, "steps"], dense.loc[shared, "steps"]], axis=1).astype(np.float64)
            nll = np.stack([rows.loc[shared, "cont_nll"], dense.loc[shared, "cont_nll"]], axis=1).astype(np.float64)
            rng = np.random.default_rng([seed, int(context), int(batch), zlib.crc32(str(mode).encode())])
            picks = rng.integers(0, len(shared), size=(RESAMPLES, len(shared)))

            def ratios(s, n, count):
                return s[..., 1] / s[..., 0], np.exp((n[..., 0] - n[..., 1]) / (count * new_tokens)) - 1

            tau, ppl = ratios(steps.sum(0), nll.sum(0), len(shared))
            tau_b, ppl_b = ratios(steps[picks].sum(1), nll[picks].sum(1), len(shared))
            (tau_lo, tau_hi), (ppl_lo, ppl_hi) = np.percentile(tau_b, [2.5, 97.5]), np.percentile(ppl_b, [2.5, 97.5])
            out.append({"context": context, "batch": batch, "mode": mode, "prompts": len(shared),
                        "tau_retention": tau, "tau_ci95_low": tau_lo, "tau_ci95_high": tau_hi,
                        "cont_ppl_change": ppl, "ppl_ci95_low": ppl_lo, "ppl_ci95_high": ppl_hi})
    return pd.DataFrame(out)
