"""The contract between ``run.py`` and an experiment runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from omegaconf import DictConfig

if TYPE_CHECKING:
    from .tracking import Logger


@dataclass
class RunContext:
    """What a runner gets: the resolved config, its run folder and the experiment logger."""

    cfg: DictConfig
    run_dir: Path
    logger: "Logger"


@dataclass
class ExperimentResult:
    """What a runner returns.

    ``results`` is the full table (one row per sample and method setting, or per benchmark case);
    ``run.py`` writes it atomically as ``results.parquet`` + ``results.csv`` in the run folder and
    logs it. ``summary`` is the short table printed at the end (defaults to ``results``).
    ``artifacts`` maps names to extra files the runner wrote in the run folder (plots, maps).
    """

    results: pd.DataFrame
    summary: pd.DataFrame | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
