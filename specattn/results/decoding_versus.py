"""A launch setting's A/B on ``experiment=decode_real``: each mode of one run against the same mode of a reference
run at the same points and prompts (e.g. ``experiment.draft_down_split=8`` against 0).

Per (context, batch, mode) both runs hold: the step (ms, ``modes.csv``) and the steady rate of each, the step's
relative change, and, paired over the prompts both ran (:func:`specattn.results.decoding_intervals.versus_intervals`),
the mode's tau in the run over its tau in the reference and its continuation-perplexity change, with 95% bootstrap
intervals: a setting that sums in another order moves the greedy tokens, so tau moves by chance; an interval that
excludes 1 says it moved by more.
"""

from __future__ import annotations

import pandas as pd

from .decoding_intervals import versus_intervals

KEYS = ["context", "batch", "mode"]


def versus_table(rows: pd.DataFrame, prompts: pd.DataFrame | None, reference_rows: pd.DataFrame,
                 reference_prompts: pd.DataFrame | None) -> pd.DataFrame:
    """``modes.csv`` rows (with ``step_ms``) and ``prompts.csv`` rows of a run and of its reference -> one row per
    (context, batch, mode) both hold: ``step_ms_ref``, ``step_ms``, ``step_change`` (relative), the steady rates, and
    where both have prompts the paired tau ratio and continuation-ppl change with their intervals."""
    cols = ["step_ms", "steady_tokens_per_s"]
    both = reference_rows[KEYS + cols].merge(rows[KEYS + cols], on=KEYS, suffixes=("_ref", ""))
    both = both[KEYS + ["step_ms_ref", "step_ms", "steady_tokens_per_s_ref", "steady_tokens_per_s"]]
    both.insert(5, "step_change", both["step_ms"] / both["step_ms_ref"] - 1)
    if prompts is None or reference_prompts is None:
        return both
    paired = versus_intervals(prompts, reference_prompts, int(rows["new_tokens"].iloc[0]))
    return both.merge(paired.rename(columns={"tau_retention": "tau_ratio"}), on=KEYS, how="left")
