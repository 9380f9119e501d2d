"""Experiment tracking: Weights & Biases (offline by default) or nothing.

``conf/logger/wandb.yaml`` logs into ``<run folder>/wandb`` in offline mode: no account and no
network needed; ``wandb sync <run folder>/wandb/offline-run-*`` uploads later, or run with
``logger.mode=online``. ``logger=none`` skips tracking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


class Logger:
    """No-op base: the interface every logger implements."""

    def start(self, run_dir: Path, run_id: str, name: str, group: str | None, config: dict) -> None: ...

    def log_metrics(self, metrics: dict[str, Any]) -> None: ...

    def log_table(self, key: str, frame: pd.DataFrame) -> None: ...

    def log_image(self, key: str, path: Path) -> None: ...

    def finish(self) -> None: ...


class NullLogger(Logger):
    """``logger=none``."""


class WandbLogger(Logger):
    """``logger=wandb``: one W&B run per run folder, id = the run's signature (reruns resume it)."""

    def __init__(self, project: str = "specattn", mode: str = "offline", entity: str | None = None,
                 tags: list[str] | None = None):
        self.project, self.mode, self.entity, self.tags = project, mode, entity, list(tags or [])
        self.run = None

    def start(self, run_dir, run_id, name, group, config) -> None:
        import os

        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(run_dir),
                              id=run_id, name=name, group=group, config=config, tags=self.tags,
                              resume="allow", reinit="finish_previous")

    def log_metrics(self, metrics) -> None:
        self.run.log(dict(metrics))

    def log_table(self, key, frame) -> None:
        import wandb

        self.run.log({key: wandb.Table(dataframe=frame.reset_index(drop=True))})

    def log_image(self, key, path) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
