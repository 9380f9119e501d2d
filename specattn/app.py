"""What ``run.py`` does with a composed config: validate, skip or resume, run, write, log, print."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from .config import validate
from .errors import SpecAttnError
from .experiments.base import ExperimentResult, RunContext
from .identity import signature
from .outputs import RESULTS, SUMMARY, print_table, read_results, write_config, write_table


def _run_dir(cfg: DictConfig) -> Path:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.paths.outputs)


def _group() -> str | None:
    """The W&B group: the sweep folder's name in multirun, else None."""
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir).name
    return None


def execute(cfg: DictConfig) -> Path:
    """Run the configured experiment and return the path of its ``results.parquet``."""
    validate(cfg)
    run_dir = _run_dir(cfg)
    results_path = run_dir / RESULTS
    title = f"{cfg.experiment.name}: {cfg.model.name} on {cfg.dataset.name}"
    if read_results(run_dir) is not None and not cfg.rerun:
        print(f"results exist, skipping (rerun=true recomputes): {run_dir}")
        print_table(pd.read_parquet(run_dir / SUMMARY), title)
        print(f"results: {results_path}")
        return results_path
    write_config(cfg, run_dir)
    logger = instantiate(cfg.logger)
    run_id = signature(cfg)
    logger.start(run_dir, run_id, run_dir.name, _group(), OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True))
    try:
        runner = get_method(cfg.experiment.runner)
        result: ExperimentResult = runner(RunContext(cfg, run_dir, logger))
        summary = result.summary if result.summary is not None else result.results
        write_table(summary, run_dir / SUMMARY)
        write_table(result.results, results_path)  # last: its presence marks the run as finished
        logger.log_table("results", result.results)
        logger.log_table("summary", summary)
        for key, path in result.artifacts.items():
            if Path(path).suffix == ".png":
                logger.log_image(key, Path(path))
        if result.metrics:
            logger.log_metrics(result.metrics)
    finally:
        logger.finish()
    print_table(summary, title)
    print(f"results: {results_path}")
    return results_path


def main(cfg: DictConfig) -> None:
    """Hydra task function: user errors become one line on stderr and exit code 2."""
    try:
        execute(cfg)
    except SpecAttnError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
