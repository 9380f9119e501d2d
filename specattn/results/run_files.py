"""Where a run's files are: in its run folder, or, for a run archived under docs/data, beside each other as flattened
files sharing one prefix (``<prefix>_modes.csv``, ``<prefix>_prompts.csv``, ``<prefix>_config.yaml``); reading a run's
prompts by the windows they are (:func:`read_prompts`); and archiving a run that way (:func:`archive_run`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import yaml

from ..core.errors import SpecAttnError

#: an archived ``experiment=decode_real`` run's files, those the run has: what ``python -m specattn.results decoding``
#: reads and the run's own tables (not its parquet copies, figures, parts or logs)
ARCHIVED = ("agreement.csv", "config.yaml", "lossless.csv", "modes.csv", "prompts.csv", "summary.csv", "summary.md",
            "timings.csv")


def run_file(run: Path, name: str) -> Path:
    """File ``name`` (e.g. ``modes.csv``) of run folder ``run``, or of the archived run whose files share prefix
    ``run`` (``<run>_<name>``)."""
    return run / name if run.is_dir() else run.with_name(f"{run.name}_{name}")


def run_config(run: Path) -> dict:
    """Run ``run``'s resolved ``config.yaml`` (:func:`run_file`) as a dict; ``{}`` for a run without one."""
    path = run_file(run, "config.yaml")
    return (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}


def read_prompts(run: Path) -> pd.DataFrame:
    """Run ``run``'s ``prompts.csv`` with ``prompt`` as the dataset's window index: the run's ``dataset.first_sample``
    (:func:`run_config`; 0 without one) added to the run's own prompt index, and kept as column ``first_sample`` (a
    prompt's group in its run is ``(prompt - first_sample) // batch``). Runs over other windows of the same text then
    pool and pair by the window each prompt decoded, never by position alone."""
    first = int(((run_config(run).get("dataset") or {}).get("first_sample")) or 0)
    prompts = pd.read_csv(run_file(run, "prompts.csv"))
    return prompts.assign(prompt=prompts["prompt"] + first, first_sample=first)


def archive_run(run: Path, prefix: Path) -> list[Path]:
    """Copy run folder ``run``'s files of :data:`ARCHIVED` to ``<prefix>_<name>`` (the layout :func:`run_file` reads;
    the prefix's folder is made). Refuses, before writing anything, a folder without ``modes.csv`` (not a decode_real
    run) and a prefix that already has any of those files (nothing archived is overwritten). Returns the paths
    written."""
    if not (run / "modes.csv").is_file():
        raise SpecAttnError(f"{run} has no modes.csv: name a finished experiment=decode_real run folder")
    targets = {name: run_file(prefix, name) for name in ARCHIVED if (run / name).is_file()}
    taken = [str(target) for target in targets.values() if target.exists()]
    if taken:
        raise SpecAttnError(f"{len(taken)} files of prefix {prefix} exist already (first: {taken[0]}): choose "
                            "another prefix (an archived run is never overwritten)")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(run / name, target)) for name, target in targets.items()]
