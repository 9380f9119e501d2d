"""Config checks that run before any model or data loads, and the config resolvers.

Every check raises :class:`SpecAttnError` with one line naming the key, the bad value and what
is allowed; ``run.py`` prints it and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from .checks import check_p, nonnegative_int, positive_int
from .errors import SpecAttnError
from .heads import HEAD_AGGREGATIONS
from .identity import signature
from .methods import instantiate_method

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _signature_resolver(*, _root_: DictConfig) -> str:
    return signature(_root_)


def register_resolvers() -> None:
    """Register ``${signature:}``, ``${matched_frac:...}`` and ``${matched_label:...}`` (idempotent)."""
    from .matching import matched_frac, matched_label

    for name, resolver in (("signature", _signature_resolver), ("matched_frac", matched_frac),
                           ("matched_label", matched_label)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


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
    positive_int(cfg.chunk_size, "chunk_size", "16")
    positive_int(cfg.gamma, "gamma", "4")
    dense_layers = nonnegative_int(cfg.dense_layers, "dense_layers", "2")
    if cfg.head_agg not in HEAD_AGGREGATIONS:
        raise SpecAttnError(f"head_agg={cfg.head_agg!r} is unknown: allowed are {', '.join(HEAD_AGGREGATIONS)}")
    if cfg.dtype not in DTYPES:
        raise SpecAttnError(f"dtype={cfg.dtype!r} is unknown: allowed are {', '.join(DTYPES)}")
    resolve_device(cfg.device)
    dataset = cfg.dataset
    positive_int(dataset.num_samples, "dataset.num_samples", "8")
    context_len = positive_int(dataset.context_len, "dataset.context_len", "2048")
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
    checks = cfg.experiment.get("checks")
    if checks:  # the experiment's own keys (e.g. decode.*)
        get_method(checks)(cfg)


def _check_method(cfg: DictConfig) -> None:
    """The method's own constructor checks (budgets, ``match=``), and a token budget of at least a chunk."""
    method = cfg.method
    instantiate_method(method.selector, key_prefix="method.")
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
