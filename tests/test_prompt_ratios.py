"""specattn.results.prompt_ratios: a mode's per-prompt tau over dense speculative decoding's, a column per batch, and
whether the batches agree on which prompts lose (a property of the text) or not (a property of the batch)."""

from __future__ import annotations

import pandas as pd
import pytest

from specattn.core.errors import SpecAttnError
from specattn.results.prompt_ratios import batch_agreement, prompt_tau_ratios

TEXT = [0.7, 0.8, 0.9, 1.0, 1.05, 1.1]  # the mode's tau ratio on prompts 0-5


def rows(ratios_by_batch: dict[int, list[float]], context: int = 8192) -> pd.DataFrame:
    """prompts.csv rows: dense takes 64 steps on every prompt, the mode 64 / ratio (the same new tokens)."""
    out = []
    for batch, ratios in ratios_by_batch.items():
        for prompt, ratio in enumerate(ratios):
            out += [{"context": context, "batch": batch, "mode": "dense", "prompt": prompt, "steps": 64.0},
                    {"context": context, "batch": batch, "mode": "first_window", "prompt": prompt,
                     "steps": 64.0 / ratio},
                    {"context": context, "batch": batch, "mode": "ar", "prompt": prompt, "steps": 256.0}]
    return pd.DataFrame(out)


def test_ratios_take_a_column_per_batch_and_leave_the_prompts_a_batch_did_not_run_empty():
    ratios = prompt_tau_ratios(rows({4: TEXT[:4], 16: TEXT}), "first_window")
    assert list(ratios.columns) == [4, 16] and list(ratios.index) == [(8192, k) for k in range(6)]
    assert ratios[16].tolist() == pytest.approx(TEXT) and ratios[4].isna().tolist() == [False] * 4 + [True] * 2


def test_batches_that_lose_on_the_same_prompts_agree_and_batches_that_do_not_disagree():
    same = batch_agreement(prompt_tau_ratios(rows({4: TEXT, 16: [r * 1.01 for r in TEXT]}), "first_window"))
    assert len(same) == 1 and same.loc[0, "prompts"] == 6 and same.loc[0, "correlation"] == pytest.approx(1.0)
    assert same.loc[0, "hardest_a"] == same.loc[0, "hardest_b"] == [0, 1, 2] and same.loc[0, "hardest_shared"] == 1.0
    assert same.loc[0, "mean_b"] == pytest.approx(1.01 * same.loc[0, "mean_a"])
    flipped = batch_agreement(prompt_tau_ratios(rows({4: TEXT, 16: TEXT[::-1]}), "first_window"))
    assert flipped.loc[0, "correlation"] < -0.9 and flipped.loc[0, "hardest_shared"] == 0.0
    # each context on its own; fewer than three shared prompts make no row
    both = pd.concat([rows({4: TEXT, 16: TEXT}), rows({1: TEXT[:2], 4: TEXT}, context=32768)])
    table = batch_agreement(prompt_tau_ratios(both, "first_window"))
    assert table[["context", "batch_a", "batch_b"]].values.tolist() == [[8192, 4, 16]]


def test_a_mode_the_runs_lack_is_refused_with_the_modes_they_have():
    with pytest.raises(SpecAttnError, match=r"--prompts 'window' is not a mode of these runs: choose one of "
                                            r"\['first_window'\]"):
        prompt_tau_ratios(rows({4: TEXT}), "window")
