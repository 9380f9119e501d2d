"""95% bootstrap intervals of decoding quality, paired over prompts (``experiment=decode_real``'s ``prompts.csv``).

For each (context, batch, mode), against dense speculative decoding on the same prompts: ``tau_retention``
(the mode's tau over dense's: total new tokens over total steps, so the ratio of the steps' sums) and
``cont_ppl_change`` (the dense verifier's perplexity of the mode's outputs over that of dense's outputs, minus 1:
``exp((sum nll - sum dense nll) / tokens) - 1``), each with a percentile-bootstrap interval that resamples
prompts with replacement, the same prompts for both (a prompt is the unit: its text decides how hard it is). Each
(context, batch, mode) draws from a generator of its own (seeded by ``seed`` and the point and mode), so its interval
is the same whichever other points and modes are pooled with it. :func:`versus_intervals` pairs each mode with the
same mode of another run instead (a launch setting's A/B: :mod:`specattn.results.decoding_versus`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..core.errors import SpecAttnError

RESAMPLES = 10_000


def _paired(steps: np.ndarray, nll: np.ndarray, new_tokens: int, rng: np.random.Generator) -> dict:
    """``steps``, ``nll`` (prompts, 2): per prompt the compared (column 0) and the reference (column 1) -> the tau
    ratio (compared over reference: the reference's summed steps over the compared's, the same tokens) and the
    continuation-perplexity change of the compared, each with its percentile-bootstrap interval over prompts."""
    n = len(steps)
    picks = rng.integers(0, n, size=(RESAMPLES, n))

    def ratios(s, nl):
        return s[..., 1] / s[..., 0], np.exp((nl[..., 0] - nl[..., 1]) / (n * new_tokens)) - 1

    tau, ppl = ratios(steps.sum(0), nll.sum(0))
    tau_b, ppl_b = ratios(steps[picks].sum(1), nll[picks].sum(1))
    (tau_lo, tau_hi), (ppl_lo, ppl_hi) = np.percentile(tau_b, [2.5, 97.5]), np.percentile(ppl_b, [2.5, 97.5])
    return {"prompts": n, "tau_retention": tau, "tau_ci95_low": tau_lo, "tau_ci95_high": tau_hi,
            "cont_ppl_change": ppl, "ppl_ci95_low": ppl_lo, "ppl_ci95_high": ppl_hi}


def _pair(rows: pd.DataFrame, reference: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Steps and NLL (prompts, 2) of the prompts both tables hold (indexed by prompt): ``rows``, then ``reference``."""
    shared = rows.index.intersection(reference.index)
    return tuple(np.stack([rows.loc[shared, c], reference.loc[shared, c]], axis=1).astype(np.float64)
                 for c in ("steps", "cont_nll"))


def _check(prompts: pd.DataFrame) -> None:
    missing = {"context", "batch", "mode", "prompt", "steps", "cont_nll"} - set(prompts.columns)
    if missing:
        raise SpecAttnError(f"these rows lack {sorted(missing)}: intervals need decode_real's prompts.csv")


def _rng(seed: int, context, batch, mode, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(context), int(batch), zlib.crc32(str(mode).encode()), *more])


def prompt_intervals(prompts: pd.DataFrame, new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """``prompts`` (rows of ``prompts.csv``: context, batch, mode, prompt, steps, cont_nll) -> one row per
    (context, batch, mode) with the point values and their 95% intervals."""
    _check(prompts)
    out = []
    for (context, batch), group in prompts.groupby(["context", "batch"], sort=False):
        dense = group[group["mode"] == "dense"].set_index("prompt")
        if dense.empty:
            continue
        for mode, rows in group.groupby("mode", sort=False):
            steps, nll = _pair(rows.set_index("prompt"), dense)
            out.append({"context": context, "batch": batch, "mode": mode,
                        **_paired(steps, nll, new_tokens, _rng(seed, context, batch, mode))})
    return pd.DataFrame(out)


def versus_intervals(compared: pd.DataFrame, reference: pd.DataFrame, new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """Two runs' ``prompts.csv`` rows at the same points and prompts (e.g. one launch setting against another) -> one
    row per (context, batch, mode) both hold: that mode's tau in ``compared`` over its tau in ``reference``
    (``tau_retention``) and its continuation-perplexity change, paired over the prompts both ran, 95% intervals."""
    _check(compared)
    _check(reference)
    keys = ["context", "batch", "mode"]
    references = dict(tuple(reference.groupby(keys, sort=False)))
    out = []
    for key, rows in compared.groupby(keys, sort=False):
        if key not in references:
            continue
        steps, nll = _pair(rows.set_index("prompt"), references[key].set_index("prompt"))
        if len(steps):
            out.append({**dict(zip(keys, key)), **_paired(steps, nll, new_tokens, _rng(seed, *key, 1))})
    return pd.DataFrame(out)
