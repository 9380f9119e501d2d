"""Layer counts of a pair known from its config before any weights load, and the check of a
self-speculative draft's layer list (run by ``specattn.runs.validate.validate`` and again once loaded)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from ..core.errors import SpecAttnError


def _saved_layers(path) -> int | None:
    """``num_hidden_layers`` of a local ``save_pretrained`` folder, or None."""
    config = Path(str(path)).expanduser() / "config.json" if path else None
    if config is None or not config.is_file():
        return None
    try:
        return int(json.loads(config.read_text())["num_hidden_layers"])
    except (ValueError, KeyError, TypeError):
        return None


def _side_layers(spec: DictConfig) -> int | None:
    """Layers of one side given by a path or a random model's config."""
    if spec.get("path") is None and spec.get("init") == "random":
        return spec.config.get("num_hidden_layers")
    return _saved_layers(spec.get("path"))


def layer_counts(model: DictConfig) -> tuple[int | None, int | None]:
    """``(draft layers, verifier layers)`` as far as the config tells (None: known once loaded): a local
    folder's ``config.json``, a random model's config, a self-speculative draft's layer list, else the
    counts a pinned pair's yaml states (``model.num_layers``, ``model.draft_num_layers``)."""
    verifier = _side_layers(model.verifier) or model.get("num_layers")
    if model.draft.get("layers") is not None:
        return len(model.draft.layers), verifier
    return _side_layers(model.draft) or model.get("draft_num_layers"), verifier


def check_draft_layers(layers, n_verifier: int | None) -> list[int]:
    """``layers`` if it is a non-empty increasing list of verifier layers (in ``[0, n_verifier)`` if known)."""
    values = list(layers)
    integers = all(isinstance(i, int) and not isinstance(i, bool) for i in values)
    in_range = integers and all(i >= 0 and (n_verifier is None or i < n_verifier) for i in values)
    if not values or not in_range or sorted(set(values)) != values:
        bound = f"in [0, {n_verifier})" if n_verifier is not None else "counted from 0"
        raise SpecAttnError(f"model.draft.layers={values} must be a non-empty increasing list of verifier layers {bound} "
                            "(integers, e.g. model.draft.layers=[0,2,4])")
    return values
