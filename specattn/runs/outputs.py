"""Run folders: atomic result files, resumable per-sample parts (and per-group parts within a sample), and the
printed summary."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..core.atomic_files import atomic_write
from ..core.errors import SpecAttnError

RESULTS = "results.parquet"
SUMMARY = "summary.parquet"


def read_table(path: Path, fix: str) -> pd.DataFrame:
    """Read a parquet file the run wrote; a damaged one is a one-line error saying ``fix``."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        detail = (str(error).splitlines() or [""])[0].replace(f"'{path}'", "it").replace(str(path), "it")[:200]
        raise SpecAttnError(f"{path} is unreadable ({type(error).__name__}: {detail}): {fix}") from None


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as parquet at ``path`` and as CSV beside it, each atomically."""
    atomic_write(path.with_suffix(".csv"), lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_config(cfg: DictConfig, run_dir: Path) -> Path:
    """The resolved config (without Hydra's own node) as ``config.yaml``."""
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(text))


def read_results(run_dir: Path, name: str = RESULTS) -> pd.DataFrame | None:
    """A finished run's ``results.parquet`` (or ``name``), or None if it has none."""
    path = run_dir / name
    return read_table(path, "rerun=true recomputes the run") if path.is_file() else None


def readable(run_dir: Path) -> bool:
    """Whether a finished run's ``results.parquet`` and ``summary.parquet`` can be read (what a skip shows)."""
    try:
        read_results(run_dir)
        read_results(run_dir, SUMMARY)
    except SpecAttnError:
        return False
    return True


def write_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra's record of the job in ``.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``, as
    Hydra writes them), once the run holds its folder: ``hydra.output_subdir: null`` keeps Hydra from
    writing them earlier, over the record of the run whose results the folder holds, for a run then
    refused. ``cfg``: the job's config (without Hydra's node)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.instance().cfg  # {"hydra": ...}
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra), ("overrides.yaml", hydra.hydra.overrides.task)):
        text = OmegaConf.to_yaml(node)
        atomic_write(run_dir / ".hydra" / name, lambda tmp: tmp.write_text(text))


class SampleParts:
    """Per-sample partial results under ``<run>/parts/``, so a killed run resumes where it stopped.
    The run folder is this run's (:mod:`specattn.runs.run_folder`): parts of another config or of other
    input data were cleared before the run started."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "parts"

    def path(self, index: int) -> Path:
        return self.folder / f"sample-{index:05d}.parquet"

    def load(self, index: int) -> pd.DataFrame | None:
        path = self.path(index)
        fix = "delete it to recompute that sample, or rerun=true to recompute the run"
        return read_table(path, fix) if path.is_file() else None

    def save(self, index: int, frame: pd.DataFrame) -> None:
        atomic_write(self.path(index), lambda tmp: frame.to_parquet(tmp, index=False))


class GroupParts:
    """The finished prompt groups of one sample (e.g. one decode_real point) under ``<run>/parts/<name>/``: a JSON
    file of ``{mode: result}`` per pass and group, so a killed run resumes at the next group, not the next sample.
    :meth:`clear` once the sample's own part is saved. The run folder's identity covers these as it covers
    :class:`SampleParts` (cleared with the folder)."""

    def __init__(self, run_dir: Path, name: str):
        self.folder = run_dir / "parts" / name

    def path(self, pass_index: int, group: int) -> Path:
        return self.folder / f"pass{pass_index}-group{group:04d}.json"

    def load(self, pass_index: int, group: int) -> dict | None:
        path = self.path(pass_index, group)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SpecAttnError(f"{path} is unreadable ({error}): delete it to recompute that group, or rerun=true "
                                "to recompute the run") from None

    def save(self, pass_index: int, group: int, results: dict) -> None:
        text = json.dumps(results, default=_plain)
        atomic_write(self.path(pass_index, group), lambda tmp: tmp.write_text(text))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _plain(value):
    """JSON for numpy / torch values (scalars and arrays: their Python lists and numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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
