"""Experiment tracking: Weights & Biases (offline by default) or nothing.

``conf/logger/wandb.yaml`` logs into ``<run folder>/wandb`` in offline mode: no account and no
network needed; ``wandb sync <run folder>/wandb/offline-run-*`` uploads later, or run with
``logger.mode=online``. Online, W&B gets ``logger.init_timeout`` seconds to start; if it cannot
(no network, no login), the run logs offline and says how to upload later. A run folder keeps one
offline W&B run: a resumed or repeated run replaces the earlier attempt's (it logs every sample
again), so ``wandb sync`` never uploads two. ``logger=none`` skips tracking.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.checks import SettingError

MODES = ("offline", "online", "disabled")


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
    """``logger=wandb``: one W&B run per run folder, id = the run's signature and a hash of its input data and
    code (:attr:`specattn.runs.run_folder.Identity.tracking_id`: a resumed run continues it)."""

    def __init__(self, project: str = "specattn", mode: str = "offline", entity: str | None = None,
                 tags: list[str] | None = None, init_timeout: float = 15.0):
        if mode not in MODES:
            raise SettingError("mode", mode, f"is unknown: allowed are {', '.join(MODES)}", "offline")
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)) or init_timeout <= 0:
            raise SettingError("init_timeout", init_timeout, "must be a positive number of seconds", "15")
        self.project, self.mode, self.entity, self.tags = project, mode, entity, list(tags or [])
        self.init_timeout = float(init_timeout)
        self.run = None

    def start(self, run_dir, run_id, name, group, config) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        for earlier in (run_dir / "wandb").glob(f"offline-run-*-{run_id}"):
            shutil.rmtree(earlier)  # an earlier attempt of this run: this one logs everything again

        def init(mode: str):
            return wandb.init(project=self.project, entity=self.entity, mode=mode, dir=str(run_dir), id=run_id,
                              name=name, group=group, config=config, tags=self.tags, resume="allow",
                              reinit="finish_previous", settings=wandb.Settings(init_timeout=self.init_timeout))

        online_runs = set((run_dir / "wandb").glob(f"run-*-{run_id}"))
        try:
            self.run = init(self.mode)
        except Exception as error:  # W&B raises CommError, UsageError, ... when it cannot reach or log in
            if self.mode != "online":
                raise
            wandb.teardown()
            for failed in set((run_dir / "wandb").glob(f"run-*-{run_id}")) - online_runs:
                shutil.rmtree(failed)  # the attempt that never reached W&B: nothing there to upload
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            print(f"warning: W&B could not start online (logger.init_timeout={self.init_timeout:g}s: {reason}); "
                  f"logging offline instead: upload later with `wandb sync {run_dir}/wandb/offline-run-*`",
                  file=sys.stderr, flush=True)
            self.run = init("offline")

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
