"""Compute a layer mapping from calibration text, and the ``layer_map=auto`` cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..core.atomic_files import atomic_write
from ..core.cache_dir import cache_root
from ..core.errors import SpecAttnError
from ..data.windows import token_windows
from ..models.pair import ModelPair
from .dp import monotonic_alignment
from .similarity import AlignSettings, accumulate


def align_settings(cfg: DictConfig, metrics: tuple[str, ...] | None = None) -> AlignSettings:
    align = cfg.align
    return AlignSettings(metrics=tuple(metrics or (align.metric,)), head_agg=cfg.head_agg, p=float(align.p),
                         eps=float(align.eps), min_position=int(align.min_position),
                         query_block=int(align.query_block))


def calibration_samples(cfg: DictConfig, pair: ModelPair):
    """``align.num_tokens`` calibration tokens as windows of ``align.context_len``."""
    context_len, num_tokens = int(cfg.align.context_len), int(cfg.align.num_tokens)
    if context_len > pair.verifier.config.max_position_embeddings:
        raise SpecAttnError(f"align.context_len={context_len} exceeds the verifier's "
                            f"{pair.verifier.config.max_position_embeddings} positions")
    count = max(1, -(-num_tokens // context_len))
    source = instantiate(cfg.dataset.calibration)
    return token_windows(source.documents(), pair.tokenizer, context_len, count, f"{source.name} calibration",
                         length_key="align.context_len", asked=f"the {count} that align.num_tokens={num_tokens} takes",
                         fix="lower align.num_tokens")


def similarity_matrices(cfg: DictConfig, pair: ModelPair, metrics: tuple[str, ...] | None = None,
                        progress: bool = False, on_window=None) -> dict[str, np.ndarray]:
    """Mean row similarity ``(n_draft, n_verifier)`` per metric over the calibration samples.

    ``on_window(tokens_so_far, {metric: matrix})``, if given, sees the running means after each window.
    """
    settings = align_settings(cfg, metrics)
    totals, tokens = None, 0
    for sample in calibration_samples(cfg, pair):
        totals = accumulate(pair, sample.input_ids, settings, totals, progress=progress)
        tokens += sample.input_ids.numel()
        if on_window is not None:
            on_window(tokens, {m: totals.mean(m).numpy() for m in settings.metrics})
    return {m: totals.mean(m).numpy() for m in settings.metrics}


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Atomically write ``array`` as a ``.npy`` file."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, array)

    return atomic_write(path, write)


def write_layer_map(path: Path, mapping: list[int], info: dict) -> Path:
    """``layer_map.yaml``: ``verifier_to_draft`` (one entry per verifier layer) plus provenance."""
    text = yaml.safe_dump({**info, "verifier_to_draft": [int(i) for i in mapping]}, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def auto_cache_key(cfg: DictConfig) -> str:
    """Identity of an automatic mapping's similarity: model pair, metric, calibration data and align settings (not
    ``align.max_draft_layers``: every bound's map comes from the same similarity)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "align")}
    parts["align"].pop("max_draft_layers", None)
    parts["calibration"] = OmegaConf.to_container(cfg.dataset.calibration, resolve=True)
    parts.update(head_agg=cfg.head_agg, dtype=cfg.dtype)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def bounded_alignment(cfg: DictConfig, similarity: np.ndarray) -> tuple[list[int], dict]:
    """The monotone map of ``similarity`` under ``align.max_draft_layers`` (counted over the verifier layers from
    ``dense_layers`` on), and the settings to record beside it."""
    bound = cfg.align.get("max_draft_layers")
    if bound is None:
        return monotonic_alignment(similarity), {}
    info = {"max_draft_layers": int(bound), "dense_layers": int(cfg.dense_layers)}
    return monotonic_alignment(similarity, int(bound), int(cfg.dense_layers)), info


def auto_layer_map(cfg: DictConfig, pair: ModelPair, progress: bool = False) -> tuple[list[int], Path]:
    """The ``layer_map=auto`` mapping: read from the cache, or calibrated once and cached (the similarity once per
    calibration; each ``align.max_draft_layers`` bound's map from it)."""
    folder = cache_root() / "layer_maps" / f"{cfg.model.name}-{cfg.align.metric}-{auto_cache_key(cfg)}"
    bound = cfg.align.get("max_draft_layers")
    name = "layer_map" if bound is None else f"layer_map_max{int(bound)}_dense{int(cfg.dense_layers)}"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        if (folder / "similarity.npy").is_file():
            similarity = np.load(folder / "similarity.npy")
        else:
            print(f"layer_map=auto: calibrating with align.metric={cfg.align.metric} (cached at {folder})", flush=True)
            similarity = similarity_matrices(cfg, pair, progress=progress)[cfg.align.metric]
            save_npy(folder / "similarity.npy", similarity)
        mapping, info = bounded_alignment(cfg, similarity)
        write_layer_map(path, mapping, {"metric": cfg.align.metric, "model": cfg.model.name, **info})
    return yaml.safe_load(path.read_text())["verifier_to_draft"], path
