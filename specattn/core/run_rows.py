"""A run's per-sample rows, read from its folder (finished: ``results.parquet``; cut by a time limit: its
``parts/`` so far) or from a file of such rows: what the table reports of ``specattn.results`` and
``specattn.retrieval.report`` read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import SpecAttnError


def read_samples(run: Path, kind: str = "table") -> tuple[pd.DataFrame, bool]:
    """The per-sample rows of a run (``kind`` names it in the error) and whether it finished (else: its parts so
    far); ``run`` may also be a file of such rows (``.csv`` or ``.parquet``, e.g. ``docs/data/*_samples.csv``),
    counted as finished."""
    if run.is_file():
        return (pd.read_parquet(run) if run.suffix == ".parquet" else pd.read_csv(run)), True
    if not run.is_dir():
        raise SpecAttnError(f"{run}: no such file or folder")
    if (run / "results.parquet").is_file():
        return pd.read_parquet(run / "results.parquet"), True
    parts = sorted((run / "parts").glob("*.parquet"))
    if not parts:
        raise SpecAttnError(f"{run}: neither results.parquet nor parts/*.parquet (not a {kind} run's folder)")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True), False
