"""Is a mode's acceptance loss a property of the prompt or of the batch? (``experiment=decode_real``'s
``prompts.csv``, pooled over runs.)

Prompt ``k`` at a context is the same text at every batch (the ``k``-th window of the dataset: runs' prompts are
numbered by window, :func:`specattn.results.run_files.read_prompts`), so a mode's per-prompt
tau over dense speculative decoding's can be set side by side across the batches a context ran at. If the loss
follows the text, the batches' columns agree (a high correlation over the prompts they share, the same prompts
hardest in each); if it follows the batch (bfloat16 differences, a batch's kernels), they do not.
``python -m specattn.results decoding RUN... -o FOLDER --prompts MODE`` prints both tables.
"""

from __future__ import annotations

import itertools

import pandas as pd

from ..core.errors import SpecAttnError


def prompt_tau_ratios(prompts: pd.DataFrame, mode: str) -> pd.DataFrame:
    """``prompts`` (rows of ``prompts.csv``: context, batch, mode, prompt, steps) -> per (context, prompt) a column
    per batch: ``mode``'s tau over dense speculative decoding's on that prompt (dense's steps over the mode's: both
    decode the same new tokens); NaN where a batch did not run the prompt."""
    if mode not in set(prompts["mode"]):
        raise SpecAttnError(f"--prompts {mode!r} is not a mode of these runs: choose one of "
                            f"{sorted(set(prompts['mode']) - {'dense', 'ar'})}")
    steps = prompts.pivot_table(index=["context", "prompt", "batch"], columns="mode", values="steps")
    ratio = (steps["dense"] / steps[mode]).dropna()
    return ratio.unstack("batch").sort_index()


def batch_agreement(ratios: pd.DataFrame, hardest: int = 3) -> pd.DataFrame:
    """:func:`prompt_tau_ratios` -> per context and pair of batches: the prompts both ran, the Pearson correlation of
    their ratios over those prompts, each batch's mean ratio on them, and the ``hardest`` prompts of each (lowest
    ratio first) with the share the two lists have in common."""
    out = []
    for context, at in ratios.groupby(level="context"):
        at = at.droplevel("context")
        for a, b in itertools.combinations(at.columns, 2):  # a batch without this context's prompts: no row
            both = at[[a, b]].dropna()
            if len(both) < 3:
                continue
            low_a, low_b = (list(both[c].nsmallest(hardest).index) for c in (a, b))
            out.append({"context": context, "batch_a": a, "batch_b": b, "prompts": len(both),
                        "correlation": both[a].corr(both[b]), "mean_a": both[a].mean(), "mean_b": both[b].mean(),
                        "hardest_a": low_a, "hardest_b": low_b,
                        "hardest_shared": len(set(low_a) & set(low_b)) / hardest})
    return pd.DataFrame(out, columns=["context", "batch_a", "batch_b", "prompts", "correlation", "mean_a", "mean_b",
                                      "hardest_a", "hardest_b", "hardest_shared"])
