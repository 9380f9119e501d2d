"""The project's Hydra sweeper (``hydra/sweeper=checked``, conf/hydra/sweeper/checked.yaml, the default
in conf/config.yaml): Hydra's basic sweeper that, before it creates the sweep folder or launches
anything, composes every job of the grid and

- drops the jobs whose run folder already holds finished, readable results of the same config, input
  data and code (``specattn.runs.run_folder.finished``), printing one line per skipped run, unless the
  job says ``rerun=true`` (a damaged results table is launched: the job refuses it in one line);
- launches one job per run folder: jobs that differ only in keys their results do not depend on
  (e.g. ``p`` for ``method=quest``) share a folder, named by the same signature, and run once.

The grid was validated as a whole before Hydra started (``run.py`` -> ``specattn.runs.preflight``: one bad
job refuses the sweep in one line). Every launcher (basic, joblib, submitit_local, slurm) gets only
the jobs left; with none left it launches nothing. A job's run folder is the one Hydra's ``run_job``
gives it (``hydra.sweep.dir`` / ``hydra.sweep.subdir`` resolved in the job's own config), so it must
follow from the job's config (here: its signature), not from its place in the grid (``hydra.job.num``).

It lives in ``hydra_plugins`` because Hydra instantiates sweepers from that namespace package only.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class CheckedSweeper(BasicSweeper):
    """:class:`BasicSweeper` whose grid is stripped of finished runs and of repeats of one run."""

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's jobs that still have to run, in batches of ``max_batch_size``.

        ``BasicSweeper.sweep`` calls this through ``self`` (it is a static method there) before it
        creates the sweep folder or launches any batch.
        """
        from specattn.runs.outputs import readable
        from specattn.runs.preflight import run_dir
        from specattn.runs.run_folder import finished, run_identity

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        todo, folders = [], {}
        for index, job in enumerate(jobs):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            folder = run_dir(cfg, multirun=True)
            if folder is None:  # a folder that cannot be told before the job runs: launch it
                todo.append(job)
                continue
            if folder in folders:
                print(f"job #{index} is the same run as job #{folders[folder]} (same signature): {folder}")
                continue
            folders[folder] = index
            if not cfg.rerun and finished(folder, run_identity(cfg)) and readable(folder):
                print(f"results exist, skipping (rerun=true recomputes): {folder}")
                continue
            todo.append(job)
        if not todo:
            print(f"nothing to launch: all {len(jobs)} runs of the sweep have results")
            return []
        return list(BasicSweeper.split_overrides_to_chunks(todo, max_batch_size))
