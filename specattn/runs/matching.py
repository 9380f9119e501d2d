"""``method.match=<run>``: a budget equal to what a finished run measured, read when the config is
resolved (before any method is built, and into the run's signature as a number, not a path).

``conf/method/budget/shared.yaml`` sets a budgeted method's ``kv_budget_frac`` to
``${matched_frac:${method.match},${method.match_setting},${method.kv_budget_frac}}``: with ``match``
set, ``1 - kv_reduction_sparse_layers`` of the run's one sparse setting (or of ``match_setting``);
without, ``kv_budget_frac`` itself.
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
        raise SpecAttnError(f"method.match={match}: no {RESULTS} there (give a finished run folder or its {RESULTS})")
    summary = summarise(pd.read_parquet(results))
    sparse = summary[summary.method != "dense"]
    listed = ", ".join(sparse.setting) or "none"
    chosen = sparse if setting is None else sparse[sparse.setting == setting]
    if setting is not None and chosen.empty:
        raise SpecAttnError(f"method.match_setting={setting!r} is not a setting of {results} (it has: {listed})")
    if len(chosen) != 1:
        raise SpecAttnError(f"method.match={match} has {len(chosen)} sparse settings ({listed}): "
                            "pick one with method.match_setting=...")
    row = chosen.iloc[0]
    return float(row.kv_reduction_sparse_layers), str(row.setting)


def matched_frac(match: str | None, setting: str | None, kv_budget_frac: float | None) -> float | None:
    """The budget fraction a budgeted method gets: matched to ``match`` if set, else ``kv_budget_frac``."""
    if match is None:
        return kv_budget_frac
    return round(1.0 - matched_reduction(str(match), setting)[0], 12)


def matched_label(match: str | None, setting: str | None) -> str | None:
    """The setting ``match`` points at (e.g. ``specattn p=0.95``), or None."""
    return None if match is None else matched_reduction(str(match), setting)[1]
