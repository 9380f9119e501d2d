"""Refuse a parallel local launch that would not fit in memory, before any job starts.

``python run.py -m hydra/launcher=joblib hydra.launcher.n_jobs=N ...`` runs up to ``N`` jobs at once on
this machine, each loading its own model pair. ``launch.peak_memory_gb`` (conf/config.yaml) holds the
measured peak resident memory of one job per ``model=`` name (GB = 10^9 bytes; a model without an entry
is not checked). The sweeper (``hydra_plugins/specattn_sweeper.py``) calls :func:`check_parallel_memory`
with the jobs it is about to launch: when the largest of them that run at once need more than the memory
available now (``MemAvailable`` of ``/proc/meminfo``), the sweep is refused in one line naming an
``n_jobs`` that fits.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from ..core.errors import SpecAttnError

JOBLIB = "JoblibLauncher"
MEMINFO = Path("/proc/meminfo")


def available_gb() -> float | None:
    """Memory available to new processes now (GB), or None where ``/proc/meminfo`` does not say."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        return None
    return None


def parallel_jobs(n_jobs, jobs: int) -> int:
    """How many of ``jobs`` joblib runs at once with ``n_jobs`` (-1: every CPU, -2: all but one, ...)."""
    if n_jobs is None:
        return min(1, jobs)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise SpecAttnError(f"hydra.launcher.n_jobs={n_jobs!r} must be a nonzero integer (-1: one job per CPU)")
    width = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return min(width, jobs)


def peak_gb(cfg: DictConfig) -> float | None:
    """The measured peak memory (GB) of one job of ``cfg``'s model pair, or None if not measured."""
    table = cfg.get("launch", {}).get("peak_memory_gb") or {}
    name = cfg.model.name
    value = table.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SpecAttnError(f"launch.peak_memory_gb.{name}={value!r} must be a number of GB > 0 (e.g. 10.6)")
    return float(value)


def check_parallel_memory(launcher: DictConfig, jobs: list[DictConfig], available: float | None = None) -> None:
    """Refuse (:class:`SpecAttnError`) launching ``jobs`` with a joblib ``launcher`` when the jobs that run at
    once would need more than ``available`` GB (default: :func:`available_gb`)."""
    if JOBLIB not in str(launcher.get("_target_", "")):
        return
    width = parallel_jobs(launcher.get("n_jobs"), len(jobs))
    peaks = sorted(((peak, cfg.model.name) for cfg in jobs if (peak := peak_gb(cfg)) is not None), reverse=True)
    if width < 2 or not peaks:
        return
    available = available_gb() if available is None else available
    together = peaks[:width]
    need = sum(peak for peak, _ in together)
    if available is None or need <= available:
        return
    fits = max([k for k in range(1, width) if sum(peak for peak, _ in peaks[:k]) <= available], default=1)
    counts = Counter(together)
    parts = ", ".join(f"{n} x model={model} at {peak:g} GB" for (peak, model), n in counts.items())
    raise SpecAttnError(
        f"hydra.launcher.n_jobs={launcher.get('n_jobs')} would run {width} jobs at once, about {need:.1f} GB "
        f"({parts}, measured: launch.peak_memory_gb), but {available:.1f} GB of memory is available: "
        f"use hydra.launcher.n_jobs={fits}"
        + (" or drop hydra/launcher=joblib (one job at a time)" if fits == 1 else ""))
