"""The rows of table experiments (``paper_table``, ``decode_table``): methods named by their
``conf/method`` config, and the matching of a row's budget to another row's measured reduction.

A row is a ``conf/method`` name (``dense``), or ``{method: name, <field>: value, match: <label>}``: each
field overrides the method's config (``p: 0.9``, ``budget.token_budget: 512``; a list sweeps, one row
per value, several lists their product), and ``match`` names another row by its label (e.g.
``specattn p=0.95``): on each sample (or prompt) this row's budget reads the fraction of the dense KV
that the named row read there (:func:`matched`). ``experiment.extra_rows`` are appended to
``experiment.rows``. The dense reference is always evaluated and comes first.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..core.checks import fraction, fractions
from ..core.errors import SpecAttnError
from ..methods import Budget, Dense, Method, instantiate_method


@dataclass(frozen=True)
class Row:
    """One table row: its method and, for a matched row, the label of the row it matches."""

    method: Method
    match: str | None = None


def conf_dir(cfg: DictConfig) -> Path:
    """The folder of the run's primary config (``conf/``), from the composed config or the running app."""
    sources = cfg.hydra.runtime.config_sources if "hydra" in cfg else HydraConfig.get().runtime.config_sources
    main = next(source for source in sources if source.provider == "main")
    return Path(main.path.removeprefix("file://"))


def method_node(cfg: DictConfig, name: str, overrides: dict) -> DictConfig:
    """The run's config with ``method`` replaced by ``conf/method/<name>.yaml`` (its defaults applied)
    plus ``overrides``; interpolations such as ``${p}`` resolve against the run's own values."""
    folder = conf_dir(cfg)
    if not (folder / "method" / f"{name}.yaml").is_file():
        allowed = sorted(path.stem for path in (folder / "method").glob("*.yaml"))
        raise SpecAttnError(f"row method {name!r} is not a conf/method config: allowed are {', '.join(allowed)}")
    stamp = tuple(sorted((str(path), path.stat().st_mtime_ns) for path in (folder / "method").rglob("*.yaml")))
    run = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    OmegaConf.set_struct(run, False)
    run.method = _composed_method(str(folder), name, stamp)  # assigned into the config as a copy: the cache stays
    for key, value in overrides.items():
        OmegaConf.update(run, f"method.{key}", value, force_add=True)
    return run


@functools.lru_cache(maxsize=None)
def _composed_method(folder: str, name: str, stamp: tuple) -> dict:
    """``conf/method/<name>.yaml`` with its defaults applied (interpolations unresolved), composed once per version
    of the method configs (``stamp``: their paths and mtimes, ``budget/`` included): a compose takes about 0.5 s,
    and a table's rows (and every job of a sweep run in one process) would otherwise compose it once a row."""
    if GlobalHydra.instance().is_initialized():
        composed = compose("config", overrides=[f"method={name}"])
    else:
        with initialize_config_dir(config_dir=folder, version_base="1.3"):
            composed = compose("config", overrides=[f"method={name}"])
    return OmegaConf.to_container(composed.method, resolve=False)


def _expand(spec) -> list[tuple[str, dict, str | None]]:
    """A row spec -> ``(method name, field overrides, match)`` per row (lists sweep)."""
    if isinstance(spec, str):
        return [(spec, {}, None)]
    spec = dict(spec)
    name, match = spec.pop("method", None), spec.pop("match", None)
    if not isinstance(name, str):
        raise SpecAttnError(f"row {spec} names no method: write {{method: <conf/method name>, ...}}")
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    return [(name, dict(zip(keys, combo)), match) for combo in itertools.product(*values)]


def table_rows(cfg: DictConfig) -> list[Row]:
    """``experiment.rows + experiment.extra_rows`` as rows, the dense reference first; every bad row is one
    line naming it (run before any weights load)."""
    exp = cfg.experiment
    extra = exp.get("extra_rows")
    specs = OmegaConf.to_container(exp.rows, resolve=True) + (
        OmegaConf.to_container(extra, resolve=True) if extra is not None else [])
    rows: list[Row] = []
    for index, spec in enumerate(specs):
        where = f"experiment.rows.{index}" if index < len(exp.rows) else f"experiment.extra_rows.{index - len(exp.rows)}"
        for name, overrides, match in _expand(spec):
            method = instantiate_method(method_node(cfg, name, overrides).method, key_prefix=f"{where}.")
            if match is not None and not isinstance(getattr(method, "budget", None), Budget):
                raise SpecAttnError(f"{where}: {name} has no budget to match to {match!r} (only budgeted methods match)")
            rows.append(Row(method, None if match is None else str(match)))
    if not any(isinstance(row.method, Dense) for row in rows):
        rows.insert(0, Row(Dense()))
    rows.sort(key=lambda row: not isinstance(row.method, Dense))  # the reference first, the rest in order
    labels = [row.method.label for row in rows if row.match is None]
    seen = set()
    for row in rows:
        key = (row.method.label, row.match)
        if key in seen:
            raise SpecAttnError(f"experiment.rows lists {row.method.label!r} twice: drop one")
        seen.add(key)
        if row.match is not None and row.match not in labels:
            raise SpecAttnError(f"experiment.rows: {row.method.name} matches {row.match!r}, which is no unmatched row "
                                f"(rows: {', '.join(labels)})")
    return rows


def check_table_keys(cfg: DictConfig) -> list[Row]:
    """A table experiment's pre-load checks: ``experiment.p_values`` / ``match_p`` (the rows' sweeps), then
    every row."""
    exp = cfg.experiment
    if "p_values" in exp:
        fractions(OmegaConf.to_container(exp.p_values), "experiment.p_values", "[0.9,0.95,0.99]")
    if "match_p" in exp:
        fraction(exp.match_p, "experiment.match_p", "0.95")
    return table_rows(cfg)


def matched(row: Row, reduction: float) -> Method:
    """``row``'s method with a budget that reads ``1 - reduction`` of the dense KV (``reduction``: the
    sparse-layer KV reduction the matched row measured on the same sample)."""
    return dataclasses.replace(row.method, budget=Budget.matching(1.0 - reduction, row.match))


def table_label(row: Row) -> str:
    """The row's label in the table (a matched row's budget shows the setting it matches)."""
    return matched(row, 0.0).label if row.match is not None else row.method.label
