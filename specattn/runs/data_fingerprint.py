"""The fingerprint of a run's input data: what decides, with the signature, whether a run folder's
results are this run's (:mod:`specattn.runs.run_folder`).

The signature hashes config values; a path in the config says nothing of what the file holds. The
fingerprint stamps what the run reads behind its result keys (:func:`specattn.runs.signature.result_keys`):
the text sources (``dataset.source``, ``dataset.calibration``, ``experiment.haystacks.*``: each
source's ``fingerprint()``), layer map files (``layer_map``, decode_real's ``experiment.layer_maps.*``) and
local weights (``model.verifier.path``, ``model.draft.path``). It does not enter the signature, so folder
names stay stable when a file changes; the run recomputes instead.
Computing it needs no model and reads only small files (:mod:`specattn.core.stamps`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core.checks import built
from ..core.stamps import file_stamp
from ..models.sources import weights_stamp
from .signature import result_keys

SOURCES = ("dataset.source", "dataset.calibration")
BUILTIN_MAPS = ("proportional", "identity", "auto")


def data_fingerprint(cfg: DictConfig) -> dict[str, str]:
    """``{config key: stamp}`` of the input data behind the run's result keys."""
    keys = result_keys(cfg)

    def read(key: str) -> bool:
        return any(key == listed or key.startswith(listed + ".") for listed in keys)

    stamps = {}
    haystacks = OmegaConf.select(cfg, "experiment.haystacks")  # experiment=retrieval's text sources
    for key in (*SOURCES, *(f"experiment.haystacks.{name}" for name in haystacks or {})):
        node = OmegaConf.select(cfg, key)
        if read(key) and node is not None:
            stamps[key] = built(node, key).fingerprint()
    maps = {"layer_map": cfg.get("layer_map")}
    maps.update({f"experiment.layer_maps.{name}": spec  # decode_real's other maps
                 for name, spec in (OmegaConf.select(cfg, "experiment.layer_maps") or {}).items()})
    for key, spec in maps.items():  # a missing file: refused by layer_maps.check under its own key, not here
        path = Path(str(spec)).expanduser()
        if read(key) and str(spec) not in BUILTIN_MAPS and path.is_file():
            stamps[key] = file_stamp(path)
    for key in ("model.verifier.path", "model.draft.path"):
        stamp = weights_stamp(OmegaConf.select(cfg, key)) if read(key) else None
        if stamp is not None:
            stamps[key] = stamp
    return stamps
