"""A run's identity: the signature that names its folder, from the config keys its results depend on.

Each experiment lists, as ``experiment.depends_on``, the config keys its results can depend on
(dotted paths; a node counts with everything under it, resolved). A node that builds an object with
an ``identity()`` (a method: :meth:`specattn.methods.base.Method.identity`) counts by that identity:
its settings as the method reads them, so a method that reads no ``p`` does not fork runs over it and
a budget matched to a finished run counts by the fraction it read, not the run's path. With
``layer_map=auto`` the mapping is calibrated from ``align.*`` and ``dataset.calibration``, so those
count too. Keys not listed (logging, paths, progress bars, memory knobs such as
``experiment.query_block``, display labels) never fork a run. An experiment without
``depends_on`` is identified by its whole config but Hydra's node, the logger, the paths,
``rerun``, ``progress`` and ``launch`` (the safe default for a new experiment).
"""

from __future__ import annotations

import hashlib
import json

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..core.errors import SpecAttnError

#: top-level keys that never change results (used when an experiment lists no ``depends_on``; ``launch``:
#: the parallel-launch memory table)
NON_RESULT_KEYS = ("hydra", "logger", "paths", "rerun", "progress", "launch")
_MISSING = object()


def result_keys(cfg: DictConfig) -> list[str]:
    """The dotted config keys the run's results depend on (``experiment.depends_on`` + the auto rule)."""
    listed = cfg.experiment.get("depends_on")
    if listed is None:
        return [str(key) for key in cfg if key not in NON_RESULT_KEYS]
    keys = [str(key) for key in listed]
    if "layer_map" in keys and cfg.get("layer_map") == "auto":
        keys += [key for key in ("align", "dataset.calibration") if key not in keys]
    return keys


def _resolved(cfg: DictConfig, key: str):
    node = OmegaConf.select(cfg, key, default=_MISSING)
    if node is _MISSING:
        raise SpecAttnError(f"experiment.depends_on lists {key!r}, which is not a key of this config")
    if OmegaConf.is_dict(node) and "_target_" in node:
        try:
            built = instantiate(node)
        except Exception:  # noqa: BLE001 - an unbuildable node (refused by validation) counts by its values
            built = None
        if hasattr(built, "identity"):
            return built.identity()
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def result_view(cfg: DictConfig) -> dict:
    """``{dotted key: resolved value}`` of :func:`result_keys` (what the signature hashes)."""
    return {key: _resolved(cfg, key) for key in result_keys(cfg)}


def signature(cfg: DictConfig, length: int = 10) -> str:
    """Short hash of :func:`result_view`: the run's identity and the suffix of its folder name."""
    text = json.dumps(result_view(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
