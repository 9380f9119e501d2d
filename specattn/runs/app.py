"""What ``run.py`` does with a composed config: validate, claim the run folder, skip or resume, run,
write, log, print."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from ..core.errors import specattn_cause
from .context import ExperimentResult, RunContext
from .outputs import (
    RESULTS,
    SUMMARY,
    print_table,
    read_results,
    write_config,
    write_hydra_record,
    write_table,
)
from .run_folder import Identity, claimed, run_identity
from .validate import validate

INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C


def _run_dir(cfg: DictConfig) -> Path:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.paths.outputs)


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


def _group() -> str | None:
    """The W&B group: the sweep folder's name in multirun, else None."""
    return Path(HydraConfig.get().sweep.dir).name if _multirun() else None


def _progress_bars(enabled: bool) -> None:
    """``progress=false`` silences the progress bars of transformers and the hub too."""
    if not enabled:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging

        disable_progress_bars()
        logging.disable_progress_bar()


def execute(cfg: DictConfig) -> Path:
    """Run the configured experiment and return the path of its ``results.parquet``."""
    validate(cfg)
    _progress_bars(cfg.progress)
    run_dir = _run_dir(cfg)
    results_path = run_dir / RESULTS
    title = f"{cfg.experiment.name}: {cfg.model.name} on {cfg.dataset.name}"
    identity = run_identity(cfg)
    with claimed(run_dir, identity, rerun=cfg.rerun, wait=_multirun()) as finished:
        if finished:
            read_results(run_dir)  # a damaged file is an error, not a skip
            print(f"results exist, skipping (rerun=true recomputes): {run_dir}")
            print_table(read_results(run_dir, SUMMARY), title)
            print(f"results: {results_path}")
            return results_path
        summary = _run(cfg, run_dir, identity)
    print_table(summary, title)
    print(f"results: {results_path}")
    return results_path


def _run(cfg: DictConfig, run_dir: Path, identity: Identity):
    """Run the experiment in its claimed folder, write its tables (results last: they mark it finished)
    and log them; returns the summary table."""
    write_hydra_record(cfg, run_dir)
    write_config(cfg, run_dir)
    logger = instantiate(cfg.logger)
    logger.start(run_dir, identity.tracking_id, run_dir.name, _group(), OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True))
    try:
        runner = get_method(cfg.experiment.runner)
        result: ExperimentResult = runner(RunContext(cfg, run_dir, logger))
        summary = result.summary if result.summary is not None else result.results
        write_table(summary, run_dir / SUMMARY)
        write_table(result.results, run_dir / RESULTS)  # last: its presence marks the run as finished
        logger.log_table("results", result.results)
        logger.log_table("summary", summary)
        for key, path in result.artifacts.items():
            if Path(path).suffix == ".png":
                logger.log_image(key, Path(path))
        if result.metrics:
            logger.log_metrics(result.metrics)
    finally:
        logger.finish()
    return summary


def main(cfg: DictConfig) -> None:
    """Hydra task function: user errors become one line on stderr and exit code 2; Ctrl-C one line
    saying how to resume, exit code 130."""
    try:
        execute(cfg)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished samples are kept)", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except Exception as error:
        cause = specattn_cause(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
