"""Unknown config keys on the command line: refused in one line naming the closest known key.

Hydra refuses ``chunksize=8`` (no such key) with a message suggesting ``+chunksize=8``, which it
then accepts as a new key that nothing reads. Here a value override is accepted only if its key
exists in the config its group choices compose, or, added with ``+``/``++``, if it is a parameter
of the ``_target_`` its node is built with (``+dataset.source.max_documents=5``) or sits in a node
handed on as keyword arguments (:data:`OPEN_NODES`). Hydra's own keys (``hydra.*``) are checked against
Hydra's config the same way (``+hydra.run.dirr=...``, the form Hydra's own error suggests, would be
ignored); its plain dict nodes (``hydra.job.env_set``) take any key.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import is_dataclass
from pathlib import Path
from typing import Callable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from ..core.errors import SpecAttnError

#: nodes whose keys are passed on as keyword arguments (a random model's transformers config)
OPEN_NODES = ("model.verifier.config", "model.draft.config", "experiment.layer_maps")  # any key: a name decode_real
#                                                                                       checks itself
#: keys that code reads from nodes without a ``_target_`` (``specattn.models.pair.load_pair``): a yaml
#: may leave them out (a self-speculative draft has no ``path``; a separate one is added with ``+``)
READ_BY_CODE = {"model.verifier": ("path", "init", "config", "parts"),
                "model.draft": ("path", "layers", "init", "config", "parts")}


def dotted_keys(node, prefix: str = "") -> list[str]:
    """Every key of a config, dotted (``dataset.source.paths``), values unresolved."""
    keys = []
    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else []:
        keys.append(f"{prefix}{key}")
        keys += dotted_keys(value, f"{prefix}{key}.")
    return keys


def closest(key: str, known: list[str]) -> list[str]:
    """Known keys the user probably meant: the same last part under another node, else close spellings."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[:3]
    return difflib.get_close_matches(key, known, n=1, cutoff=0.6)


def _parameters(base: DictConfig, parent: str) -> list[str] | None:
    """Parameter names of the ``_target_`` the node at ``parent`` is built with (``**`` for any), or None."""
    node = OmegaConf.select(base, parent) if parent else None
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        parameters = inspect.signature(get_object(str(node._target_))).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    return [("**" if p.kind is inspect.Parameter.VAR_KEYWORD else p.name) for p in parameters]


def _open_hydra_node(base: DictConfig, parent: str) -> bool:
    """A node of Hydra's config that takes any key: a plain dict (``hydra.job.env_set``, the logging
    configs), not one of Hydra's dataclasses (``hydra.run``) nor a node built from a ``_target_``."""
    node = OmegaConf.select(base, parent) if parent.startswith("hydra") else None
    return isinstance(node, DictConfig) and "_target_" not in node and not is_dataclass(OmegaConf.get_type(node))


def _takes(base: DictConfig, key: str) -> bool:
    """Whether an added ``key`` is read: a parameter of its node's ``_target_``, a key code reads, or
    under an open node."""
    parent, _, leaf = key.rpartition(".")
    if any(parent == node or parent.startswith(node + ".") for node in OPEN_NODES) or leaf in READ_BY_CODE.get(parent, ()):
        return True
    if _open_hydra_node(base, parent):
        return True
    parameters = _parameters(base, parent) or []
    return leaf in parameters or "**" in parameters


def parse(overrides: list[str]) -> list[Override]:
    """Hydra's parse of the overrides; a malformed one is a one-line error naming it."""
    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except OverrideParseException as error:
            raise SpecAttnError(f"{line}: {str(error).splitlines()[0]} (Hydra's override syntax: "
                                "https://hydra.cc/docs/advanced/override_grammar/basic)") from None
    return parsed


def is_group(override: Override, conf_dir: Path) -> bool:
    """``model=llama``, ``hydra/launcher=joblib``: a config group choice, not a value."""
    key = override.key_or_group
    return "/" in key or override.package is not None or (conf_dir / key).is_dir()


def check_keys(overrides: list[str], conf_dir: Path, compose: Callable[[list[str]], DictConfig]) -> None:
    """Refuse value overrides of keys the config does not have (``compose(group overrides)``
    composes the config they apply to, with Hydra's node: ``hydra.*`` keys are checked too)."""
    parsed = parse(overrides)
    values = [o for o in parsed if not is_group(o, conf_dir) and not o.is_delete()]
    if not values:
        return
    base = compose([o.input_line for o in parsed if is_group(o, conf_dir)])
    known = dotted_keys(base)
    for override in values:
        key = override.key_or_group
        if key in known or ((override.is_add() or override.is_force_add()) and _takes(base, key)):
            continue
        parent = key.rpartition(".")[0]
        takes = [f"{parent}.{name}" for name in _parameters(base, parent) or [] if name != "**"]
        hydra = key.startswith("hydra.")  # suggest Hydra's keys for Hydra's, the config's for the rest
        suggestions = closest(key, [k for k in known + [k for k in takes if k not in known]
                                    if k.startswith("hydra.") == hydra])
        value = override.input_line.split("=", 1)[1] if "=" in override.input_line else ""
        hint = f": did you mean {' or '.join(f'{k}={value}' for k in suggestions)}?" if suggestions else ""
        where = "Hydra's keys: python run.py --cfg hydra" if hydra else "keys: conf/config.yaml and conf/<group>/<option>.yaml"
        raise SpecAttnError(f"{override.input_line}: the config has no key {key}{hint} ({where})")
