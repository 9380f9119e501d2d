"""Config checks that run before any model or data loads, and the run-signature resolver.

Every check raises :class:`SpecAttnError` with one line naming the key, the bad value and what
is allowed; ``run.py`` prints it and exits with code 2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import SpecAttnError
from .heads import HEAD_AGGREGATIONS
from .methods import instantiate_method
from .select import check_p

#: top-level keys that never change results; left out of the run signature
NON_RESULT_KEYS = ("hydra", "logger", "paths", "rerun", "progress")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def signature(cfg: DictConfig, length: int = 10) -> str:
    """Short hash of the resolved config minus :data:`NON_RESULT_KEYS`: the run's identity."""
    kept = {}
    for key in cfg:
        if key in NON_RESULT_KEYS:
            continue
        value = cfg[key]  # child nodes keep their parent, so ${p} inside them resolves
        kept[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _signature_resolver(*, _root_: DictConfig) -> str:
    return signature(_root_)


def register_resolvers() -> None:
    """Register ``${signature:}`` (idempotent)."""
    if not OmegaConf.has_resolver("signature"):
        OmegaConf.register_new_resolver("signature", _signature_resolver)


def _positive_int(cfg: DictConfig, key: str, example: str) -> int:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecAttnError(f"{key}={value!r} must be a positive integer (e.g. {key}={example})")
    return value


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda`` -> a device that exists here, or a one-line error."""
    if name not in DEVICES:
        raise SpecAttnError(f"device={name!r} is unknown: allowed are {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecAttnError(
            f"device=cuda but no CUDA GPU is visible (torch {torch.__version__}): use device=cpu or device=auto"
        )
    return torch.device(name)


def validate(cfg: DictConfig) -> None:
    """Check the user-facing keys of a composed config; cheap, no model or data access."""
    check_p(cfg.p)
    _positive_int(cfg, "chunk_size", "16")
    _positive_int(cfg, "gamma", "4")
    dense_layers = cfg.dense_layers
    if not isinstance(dense_layers, int) or isinstance(dense_layers, bool) or dense_layers < 0:
        raise SpecAttnError(f"dense_layers={dense_layers!r} must be an integer >= 0 (e.g. dense_layers=2)")
    if cfg.head_agg not in HEAD_AGGREGATIONS:
        raise SpecAttnError(f"head_agg={cfg.head_agg!r} is unknown: allowed are {', '.join(HEAD_AGGREGATIONS)}")
    if cfg.dtype not in DTYPES:
        raise SpecAttnError(f"dtype={cfg.dtype!r} is unknown: allowed are {', '.join(DTYPES)}")
    resolve_device(cfg.device)
    dataset = cfg.dataset
    _positive_int(cfg, "dataset.num_samples", "8")
    context_len = _positive_int(cfg, "dataset.context_len", "2048")
    frac = dataset.prefill_frac
    if not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
        raise SpecAttnError(f"dataset.prefill_frac={frac!r} must lie in (0, 1) (e.g. dataset.prefill_frac=0.1)")
    if context_len < 2 or int(frac * context_len) >= context_len - 1:
        raise SpecAttnError(
            f"dataset.context_len={context_len} with prefill_frac={frac} leaves no token to score: raise context_len"
        )
    max_positions = cfg.model.get("max_positions")
    if max_positions is not None and context_len > max_positions:
        raise SpecAttnError(
            f"dataset.context_len={context_len} exceeds what model={cfg.model.name} supports ({max_positions} tokens): "
            f"use dataset.context_len<={max_positions}"
        )
    if dense_layers and cfg.model.get("num_layers") is not None and dense_layers > cfg.model.num_layers:
        raise SpecAttnError(
            f"dense_layers={dense_layers} exceeds the verifier's {cfg.model.num_layers} layers of model={cfg.model.name}"
        )
    _check_method(cfg)


def _check_method(cfg: DictConfig) -> None:
    """The method's own constructor checks (budgets, ``match=``), and a token budget of at least a chunk."""
    method = cfg.method
    instantiate_method(method.selector)
    budget = method.get("token_budget")
    if budget is not None and method.get("match") is None and method.get("kv_budget_frac") is None \
            and budget < cfg.chunk_size:
        raise SpecAttnError(f"method.token_budget={budget} is below chunk_size={cfg.chunk_size}: "
                            "the budget must hold at least one chunk")


def check_group_choices(overrides: list[str], conf_dir: Path) -> None:
    """Refuse ``group=option`` overrides whose option has no ``conf/<group>/<option>.yaml``.

    Hydra would refuse them too, but with a multi-line listing; this names the key, the bad value
    and the allowed options on one line. Multirun lists (``method=a,b``) are checked item by item.
    """
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        group = conf_dir / key
        if not sep or "." in key or key.startswith("hydra") or not group.is_dir() or value.startswith(("choice(", "range(", "glob(")):
            continue
        allowed = sorted(p.stem for p in group.glob("*.yaml"))
        for option in value.split(","):
            if option and option not in allowed:
                raise SpecAttnError(f"{key}={option} is unknown: allowed are {', '.join(allowed)} (conf/{key}/)")
