"""Run folders: atomic result files, resumable per-sample parts, and the printed summary."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

RESULTS = "results.parquet"
SUMMARY = "summary.parquet"


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as parquet at ``path`` and as CSV beside it, each atomically."""
    atomic_write(path.with_suffix(".csv"), lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_config(cfg: DictConfig, run_dir: Path) -> Path:
    """The resolved config (without Hydra's own node) as ``config.yaml``."""
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(text))


def read_results(run_dir: Path) -> pd.DataFrame | None:
    """The finished results of a run folder, or None if the run has not finished."""
    path = run_dir / RESULTS
    return pd.read_parquet(path) if path.is_file() else None


class SampleParts:
    """Per-sample partial results under ``<run>/parts/``, so a killed run resumes where it stopped."""

    def __init__(self, run_dir: Path, fresh: bool):
        self.folder = run_dir / "parts"
        if fresh and self.folder.is_dir():
            for part in self.folder.glob("*.parquet"):
                part.unlink()

    def path(self, index: int) -> Path:
        return self.folder / f"sample-{index:05d}.parquet"

    def load(self, index: int) -> pd.DataFrame | None:
        path = self.path(index)
        return pd.read_parquet(path) if path.is_file() else None

    def save(self, index: int, frame: pd.DataFrame) -> None:
        atomic_write(self.path(index), lambda tmp: frame.to_parquet(tmp, index=False))


def print_table(frame: pd.DataFrame, title: str) -> None:
    """Print a summary table with rich (percentages for relative columns)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for _, row in frame.iterrows():
        table.add_row(*[_format(column, value) for column, value in row.items()])
    Console(width=200).print(table)


def _format(column: str, value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if "reduction" in column or "increase" in column or column.endswith("_frac"):
            return f"{100 * value:+.2f}%" if "increase" in column else f"{100 * value:.2f}%"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
