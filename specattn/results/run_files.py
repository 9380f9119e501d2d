"""Where a run's files are: in its run folder, or, for a run archived under docs/data, beside each other as flattened
files sharing one prefix (``<prefix>_modes.csv``, ``<prefix>_prompts.csv``, ``<prefix>_config.yaml``)."""

from __future__ import annotations

from pathlib import Path


def run_file(run: Path, name: str) -> Path:
    """File ``name`` (e.g. ``modes.csv``) of run folder ``run``, or of the archived run whose files share prefix
    ``run`` (``<run>_<name>``)."""
    return run / name if run.is_dir() else run.with_name(f"{run.name}_{name}")
