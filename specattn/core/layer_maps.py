"""Verifier-layer -> draft-layer mappings, and checks that a mapping fits a model pair.

``layer_map`` in the config is one of:

* ``proportional``: verifier layer ``j`` -> draft layer ``round(j * (n_draft - 1) / (n_verifier - 1))``;
* ``identity``: for self-speculative pairs, the draft layer that *is* verifier layer ``j``, or the
  nearest one by verifier depth (ties go to the shallower layer);
* ``auto``: computed by :mod:`specattn.align` on the dataset's calibration text with ``align.*``
  settings, cached by model pair, metric and calibration data (see ``auto_layer_map``);
* a path to a ``layer_map.yaml`` (a list with one draft layer per verifier layer, as written by
  ``experiment=align``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import SpecAttnError


def proportional(n_draft: int, n_verifier: int) -> list[int]:
    if n_verifier == 1:
        return [0]
    return [round(j * (n_draft - 1) / (n_verifier - 1)) for j in range(n_verifier)]


def identity(draft_layers: list[int] | None, n_verifier: int) -> list[int]:
    if draft_layers is None:
        raise SpecAttnError("layer_map=identity needs a self-speculative pair (model.draft.layers); use proportional")
    return [min(range(len(draft_layers)), key=lambda k: (abs(draft_layers[k] - j), draft_layers[k]))
            for j in range(n_verifier)]


def validate(mapping: list, n_draft: int | None, n_verifier: int | None, source: str) -> list[int]:
    """Return ``mapping`` if it has one non-decreasing in-range integer entry per verifier layer
    (a count that is None is not known yet: what depends on it is checked once the pair loads)."""
    if n_verifier is not None and len(mapping) != n_verifier:
        raise SpecAttnError(f"layer_map={source} has {len(mapping)} entries but the verifier has {n_verifier} layers")
    for j, i in enumerate(mapping):
        if not isinstance(i, int) or isinstance(i, bool) or i < 0 or (n_draft is not None and i >= n_draft):
            allowed = f"in [0, {n_draft})" if n_draft is not None else ">= 0"
            raise SpecAttnError(f"layer_map={source}: entry for verifier layer {j} is {i!r}, not a draft layer {allowed}")
        if j and i < mapping[j - 1]:
            raise SpecAttnError(
                f"layer_map={source}: entry for verifier layer {j} ({i}) is below the previous one ({mapping[j - 1]}); "
                "mappings must be non-decreasing"
            )
    return mapping


def load(path: str | Path) -> list:
    """Read a ``layer_map.yaml``: ``{verifier_to_draft: [...]}`` or a bare list."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecAttnError(f"layer_map={path}: no such file (expected proportional, identity, auto or a layer_map.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SpecAttnError(f"layer_map={path} is not readable YAML ({type(error).__name__}): "
                            "expected a list of draft layers or a verifier_to_draft: list") from None
    if isinstance(data, dict):
        data = data.get("verifier_to_draft")
    if not isinstance(data, list):
        raise SpecAttnError(f"layer_map={path}: expected a list of draft layers or a verifier_to_draft: list")
    return data


def resolve(spec: str, n_draft: int, n_verifier: int, draft_layers: list[int] | None) -> list[int]:
    """The mapping named by ``spec`` for a pair with these layer counts."""
    if spec == "proportional":
        mapping = proportional(n_draft, n_verifier)
    elif spec == "identity":
        mapping = identity(draft_layers, n_verifier)
    else:
        mapping = load(spec)
    return validate(mapping, n_draft, n_verifier, spec)


def check(spec: str, n_draft: int | None, n_verifier: int | None, draft_layers: list[int] | None) -> None:
    """Refuse a bad ``layer_map`` before any weights load: ``identity`` without a self-speculative
    draft, a file that does not fit the layer counts the config tells (None: known once the pair
    loads, when :func:`resolve` checks again). ``proportional`` and ``auto`` always fit."""
    if spec == "identity":
        identity(draft_layers, n_verifier or 0)
    elif spec not in ("proportional", "auto"):
        validate(load(spec), n_draft, n_verifier, spec)
