"""Config checks that run before any model or data loads, and the config resolvers.

Every check raises :class:`SpecAttnError` with one line naming the key, the bad value and what
is allowed; ``run.py`` prints it and exits with code 2. :func:`validate` holds every check that
needs no weights and no dataset text, so ``run.py`` refuses a bad run, and every bad job of a
multirun grid, before anything is computed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..align.similarity_metrics import METRICS
from ..core import layer_maps
from ..core.checks import built, check_p, flag, nonnegative_int, positive_int
from ..core.errors import SpecAttnError
from ..core.heads import HEAD_AGGREGATIONS
from ..data.windows import check_enough_text
from ..methods import instantiate_method
from ..models.devices import resolve_device
from ..models.layers import check_draft_layers, layer_counts
from ..models.sources import check_path
from .data_fingerprint import data_fingerprint
from .signature import result_keys, signature

DTYPES = ("auto", "float32", "bfloat16", "float16")
MAX_CHUNK = 2**16  # tokens per KV chunk
MAX_GAMMA = 64  # draft tokens per verification step
MAX_SEED = 2**32 - 1  # numpy's seed range (torch takes 64 bits: seed + sample index stays inside it)


def _signature_resolver(*, _root_: DictConfig) -> str:
    return signature(_root_)


def _method_slug_resolver(*, _root_: DictConfig) -> str:
    return instantiate_method(_root_.method, key_prefix="method.").slug


def register_resolvers() -> None:
    """Register ``${signature:}``, ``${method_slug:}`` (the configured method's label as a folder name)
    and ``${matched_budget:...}`` (idempotent)."""
    from .matching import matched_budget

    for name, resolver in (("signature", _signature_resolver), ("method_slug", _method_slug_resolver),
                           ("matched_budget", matched_budget)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def validate(cfg: DictConfig) -> None:
    """Check a composed config: settings, model paths and layers, ``layer_map``, the method,
    ``align.*``, the logger, the input files and the experiment's own keys. Cheap: no weights, no
    whole dataset text (it stats input files, reads small ones such as a ``layer_map.yaml``, the first
    64 KiB of each text file and the headers of weight files)."""
    check_p(cfg.p)
    positive_int(cfg.chunk_size, "chunk_size", "16", MAX_CHUNK, "larger chunks only pad every attention row")
    positive_int(cfg.gamma, "gamma", "4", MAX_GAMMA, "draft tokens per verification step")
    dense_layers = nonnegative_int(cfg.dense_layers, "dense_layers", "2")
    nonnegative_int(cfg.seed, "seed", "0", MAX_SEED, "the largest seed numpy takes")
    flag(cfg.rerun, "rerun")
    flag(cfg.progress, "progress")
    if cfg.head_agg not in HEAD_AGGREGATIONS:
        raise SpecAttnError(f"head_agg={cfg.head_agg!r} is unknown: allowed are {', '.join(HEAD_AGGREGATIONS)}")
    if cfg.dtype not in DTYPES:
        raise SpecAttnError(f"dtype={cfg.dtype!r} is unknown: allowed are {', '.join(DTYPES)}")
    resolve_device(cfg.device)
    dataset = cfg.dataset
    positive_int(dataset.num_samples, "dataset.num_samples", "8")
    first = nonnegative_int(dataset.get("first_sample", 0), "dataset.first_sample", "0")
    context_len = positive_int(dataset.context_len, "dataset.context_len", "2048")
    frac = dataset.prefill_frac
    if not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
        raise SpecAttnError(f"dataset.prefill_frac={frac!r} must lie in (0, 1) (e.g. dataset.prefill_frac=0.1)")
    if context_len < 2 or int(frac * context_len) >= context_len - 1:
        raise SpecAttnError(
            f"dataset.context_len={context_len} with prefill_frac={frac} leaves no token to score: raise context_len"
        )
    _check_positions(cfg, "dataset.context_len", context_len)
    n_verifier = _check_model(cfg)
    if dense_layers and n_verifier is not None and dense_layers > n_verifier:
        raise SpecAttnError(
            f"dense_layers={dense_layers} exceeds the verifier's {n_verifier} layers of model={cfg.model.name}"
        )
    _check_method(cfg)
    _check_align(cfg)
    built(cfg.logger, "logger")
    data_fingerprint(cfg)  # the input files exist, are files, are not empty and start as text
    if {"dataset.source", "dataset.context_len"} <= set(result_keys(cfg)):
        check_enough_text(built(dataset.source, "dataset.source"), context_len, dataset.num_samples, dataset.name,
                          "dataset.context_len", first)
    _check_experiment(cfg)


def _check_positions(cfg: DictConfig, key: str, length: int) -> None:
    max_positions = cfg.model.get("max_positions")
    if max_positions is not None and length > max_positions:
        raise SpecAttnError(
            f"{key}={length} exceeds what model={cfg.model.name} supports ({max_positions} tokens): "
            f"use {key}<={max_positions}"
        )


def _check_model(cfg: DictConfig) -> int | None:
    """Model paths, a self-speculative draft's layers and ``layer_map`` against the layer counts the
    config tells; returns the verifier's layer count (None: known once loaded)."""
    model = cfg.model
    for role in ("verifier", "draft"):
        spec = model[role]
        if role == "draft" and spec.get("layers") is not None:
            continue  # self-speculative: the verifier's own layers
        path = spec.get("path")
        if path is not None or spec.get("init") != "random":
            check_path(None if path is None else str(path), f"model.{role}.path", spec.get("parts"))
    n_draft, n_verifier = layer_counts(model)
    draft_layers = model.draft.get("layers")
    if draft_layers is not None:
        draft_layers = check_draft_layers(draft_layers, n_verifier)
    layer_maps.check(str(cfg.layer_map), n_draft, n_verifier, draft_layers)
    return n_verifier


def _check_align(cfg: DictConfig) -> None:
    """``align.*``: read by ``experiment=align``, ``align_study`` and ``layer_map=auto``."""
    align = cfg.align
    if align.metric not in METRICS:
        raise SpecAttnError(f"align.metric={align.metric!r} is unknown: allowed are {', '.join(METRICS)}")
    positive_int(align.num_tokens, "align.num_tokens", "16384")
    _check_positions(cfg, "align.context_len", positive_int(align.context_len, "align.context_len", "2048"))
    nonnegative_int(align.min_position, "align.min_position", "64")
    positive_int(align.query_block, "align.query_block", "128")
    if align.get("max_draft_layers") is not None:
        positive_int(align.max_draft_layers, "align.max_draft_layers", "7")


def _check_experiment(cfg: DictConfig) -> None:
    """The runner exists; its module's ``check(cfg)``, if it has one, checks the experiment's own keys."""
    runner = str(cfg.experiment.runner)
    module_name, _, function = runner.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        getattr(module, function)
    except (ImportError, AttributeError, ValueError):
        raise SpecAttnError(f"experiment.runner={runner} cannot be imported: name a function module.function") from None
    check = getattr(module, "check", None)
    if check is not None:
        check(cfg)


def _check_method(cfg: DictConfig) -> None:
    """The method's own constructor checks (budgets, ``match=``), and a token budget of at least a chunk."""
    method = instantiate_method(cfg.method, key_prefix="method.")
    budget = getattr(method, "budget", None)
    if budget is not None and budget.kv_budget_frac is None and budget.token_budget < cfg.chunk_size:
        raise SpecAttnError(f"method.budget.token_budget={budget.token_budget} is below chunk_size={cfg.chunk_size}: "
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
