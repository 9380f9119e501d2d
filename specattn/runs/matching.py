"""``method.budget.match=<run>``: a budget equal to what a finished run measured, read when the config is
resolved (before any method is built, and into the run's signature as a number, not a path).

``conf/method/budget/default.yaml`` sets a budget's ``matched`` to
``${matched_budget:${.match},${.match_setting}}``: with ``match`` set, ``1 - kv_reduction_sparse_layers``
of the run's one sparse setting (or of ``match_setting``) and that setting's label, which the
:class:`~specattn.methods.budget.Budget` takes over its ``kv_budget_frac``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.errors import SpecAttnError
from ..eval.ppl_metrics import summarise
from .outputs import RESULTS


def matched_reduction(match: str, setting: str | None = None) -> tuple[float, str]:
    """``(kv_reduction_sparse_layers, setting)`` measured by a finished run (folder or results file)."""
    path = Path(match).expanduser()
    results = path / RESULTS if path.is_dir() else path
    if not results.is_file():
        raise SpecAttnError(f"method.budget.match={match}: no {RESULTS} there (give a finished run folder or its {RESULTS})")
    summary = summarise(pd.read_parquet(results))
    sparse = summary[summary.method != "dense"]
    listed = ", ".join(sparse.setting) or "none"
    chosen = sparse if setting is None else sparse[sparse.setting == setting]
    if setting is not None and chosen.empty:
        raise SpecAttnError(f"method.budget.match_setting={setting!r} is not a setting of {results} (it has: {listed})")
    if len(chosen) != 1:
        raise SpecAttnError(f"method.budget.match={match} has {len(chosen)} sparse settings ({listed}): "
                            "pick one with method.budget.match_setting=...")
    row = chosen.iloc[0]
    return float(row.kv_reduction_sparse_layers), str(row.setting)


def matched_budget(match: str | None, setting: str | None) -> list | None:
    """``[fraction of the dense reads, setting label]`` a budgeted method gets from a finished run
    (``1 - kv_reduction_sparse_layers`` of its one sparse setting, or of ``setting``); None without ``match``."""
    if match is None:
        return None
    reduction, label = matched_reduction(str(match), setting)
    return [round(1.0 - reduction, 12), label]
