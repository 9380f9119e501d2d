"""The project's Hydra sweeper (``hydra/sweeper=checked``, conf/hydra/sweeper/checked.yaml, the default
in conf/config.yaml): Hydra's basic sweeper that, before it creates the sweep folder or launches
anything, composes every job of the grid and

- refuses the whole grid if one job's config fails ``specattn.config.validate``: the usual one-line
  ``error: ...`` naming the job, on stderr, exit code 2;
- drops the jobs whose run folder already holds finished results of the same config and input data
  (``specattn.run_folder.finished``),
  printing one line per skipped run, unless the job says ``rerun=true``;
- launches one job per run folder: jobs that differ only in keys their results do not depend on
  (e.g. ``p`` for ``method=quest``) share a folder, named by the same signature, and run once.

Every launcher (basic, joblib, submitit_local, slurm) gets only the jobs left; with none left it
launches nothing. A job's run folder is the one Hydra's ``run_job`` gives it (``hydra.sweep.dir`` /
``hydra.sweep.subdir`` resolved in the job's own config), so it must follow from the job's config
(here: its signature), not from its place in the grid (``hydra.job.num``).

It lives in ``hydra_plugins`` because Hydra instantiates sweepers from that namespace package only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Override
from hydra.core.utils import filter_overrides
from omegaconf import DictConfig


class CheckedSweeper(BasicSweeper):
    """:class:`BasicSweeper` whose grid is validated as a whole and stripped of finished runs."""

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's jobs that still have to run, in batches of ``max_batch_size``.

        ``BasicSweeper.sweep`` calls this through ``self`` (it is a static method there) before it
        creates the sweep folder or launches any batch; an invalid job ends the process here.
        """
        from specattn.config import validate
        from specattn.errors import SpecAttnError

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        swept = {override.get_key_element() for override in overrides if override.is_sweep_override()}
        configs = []
        for index, job in enumerate(jobs):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            try:
                validate(cfg)
            except SpecAttnError as error:
                label = " ".join(o for o in job if o.split("=", 1)[0] in swept) or " ".join(filter_overrides(job))
                print(f"error: job #{index} ({label}) of the sweep: {error}", file=sys.stderr)
                sys.exit(2)
            configs.append(cfg)
        todo, folders = [], {}
        for index, (job, cfg) in enumerate(zip(jobs, configs)):
            run_dir = _run_dir(cfg)
            if run_dir in folders:
                print(f"job #{index} is the same run as job #{folders[run_dir]} (same signature): {run_dir}")
            elif cfg.rerun or not self._finished(cfg):
                todo.append(job)
            folders.setdefault(run_dir, index)
        if not todo:
            print(f"nothing to launch: all {len(jobs)} runs of the sweep have results")
            return []
        return list(BasicSweeper.split_overrides_to_chunks(todo, max_batch_size))

    @staticmethod
    def _finished(cfg: DictConfig) -> bool:
        """Whether the job's run folder holds this config's finished, up-to-date results (same
        signature, same input data), printing the skip line if so."""
        from specattn.run_folder import finished, run_identity

        run_dir = _run_dir(cfg)
        if not finished(run_dir, run_identity(cfg)):
            return False
        print(f"results exist, skipping (rerun=true recomputes): {run_dir}")
        return True


def _run_dir(cfg: DictConfig) -> Path:
    """The output folder Hydra's ``run_job`` gives the job composed as ``cfg`` (with ``HydraConfig``
    set to it, as there, so ``${hydra:...}`` interpolations resolve for this job)."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        return Path(os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))))
    finally:
        hydra_config.cfg = previous
