"""What the runners share: the run's pair (one loader for every experiment), its :class:`Settings`,
its methods and samples, evaluating samples resumably (each sample's rows go to ``parts/`` as soon as
it finishes) and the perplexity runners' result."""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd
import torch
from hydra.utils import instantiate
from tqdm.auto import tqdm

from ..core import layer_maps
from ..core.errors import SpecAttnError
from ..core.heads import check_head_layout
from ..core.settings import Settings
from ..data.windows import Sample, token_windows
from ..eval.perplexity import IMPLEMENTATIONS, prepare
from ..eval.ppl_metrics import SUMMARY_COLUMNS, summarise, summary_metrics
from ..methods import Dense, Method, instantiate_method
from ..models.devices import resolve_device, torch_dtype
from ..models.pair import ModelPair, load_pair, load_tokenizer
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import SampleParts


def check_impl(cfg) -> None:
    """``experiment.impl``: how every sample is evaluated (a pre-load check of the ppl runners)."""
    impl = cfg.experiment.get("impl", "parallel")
    if impl not in IMPLEMENTATIONS:
        raise SpecAttnError(f"experiment.impl={impl!r} is unknown: allowed are {', '.join(IMPLEMENTATIONS)}")


def configured_methods(cfg) -> list[Method]:
    """The dense reference plus the configured ``method`` (for ``ppl`` and ``decode``)."""
    method = instantiate_method(cfg.method, key_prefix="method.")
    return [Dense()] if isinstance(method, Dense) else [Dense(), method]


def check_pair(cfg, pair: ModelPair, context_len: int | None = None) -> None:
    """Checks that need the loaded pair, before any evaluation (``context_len``: positions the run needs)."""
    n_layers = pair.n_verifier_layers
    if cfg.dense_layers > n_layers:
        raise SpecAttnError(f"dense_layers={cfg.dense_layers} exceeds the verifier's {n_layers} layers")
    supported = min(pair.verifier.config.max_position_embeddings, pair.draft.config.max_position_embeddings)
    if context_len is not None and context_len > supported:
        raise SpecAttnError(
            f"dataset.context_len={context_len} exceeds what the pair supports ({supported} positions): "
            f"use dataset.context_len<={supported}"
        )
    check_head_layout(cfg.head_agg, pair.draft.config.num_key_value_heads, pair.verifier.config.num_key_value_heads)


def layer_mapping(cfg, pair: ModelPair) -> list[int]:
    """The verifier -> draft layer map of ``cfg.layer_map`` for this pair (``auto``: calibrated once, cached)."""
    spec = str(cfg.layer_map)
    if spec == "auto":
        from ..align.calibrate import auto_layer_map

        spec = str(auto_layer_map(cfg, pair, progress=cfg.progress)[1])
    return layer_maps.resolve(spec, pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)


def run_settings(cfg, mapping: list[int]) -> Settings:
    """The :class:`Settings` of a run (the evaluators' and the decoder's)."""
    d = cfg.decode
    return Settings(cfg.gamma, cfg.chunk_size, cfg.dense_layers, cfg.head_agg, tuple(mapping),
                    int(cfg.experiment.get("query_block", 512)), float(cfg.dataset.prefill_frac),
                    cfg.experiment.get("impl", "parallel"), int(d.max_new_tokens), float(d.temperature), int(d.top_k),
                    float(d.top_p), bool(d.stop_at_eos), str(d.draft_reads), float(d.draft_p), int(d.draft_refresh),
                    int(d.draft_window), int(d.draft_sinks), int(d.get("draft_refresh_below", 0)),
                    None if d.get("draft_dense_layers") is None else int(d.draft_dense_layers))


def load_pair_for(cfg, context_len: int | None = None) -> ModelPair:
    """The run's pair on its device (the one loader of every experiment), checked against the config:
    ``dense_layers``, the head layout and, if given, ``context_len`` positions."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    pair = load_pair(cfg.model, device, torch_dtype(cfg.dtype, device), cfg.seed)
    check_pair(cfg, pair, context_len)
    return pair


def load_samples(cfg) -> list[Sample]:
    """The run's evaluation samples, cut with the pair's tokenizer loaded alone: read, cut and counted before any
    weights load (a dataset offline or too short is refused first)."""
    documents = instantiate(cfg.dataset.source).documents()
    return token_windows(documents, load_tokenizer(cfg.model), cfg.dataset.context_len, cfg.dataset.num_samples,
                         cfg.dataset.name, int(cfg.dataset.get("first_sample", 0)))


def load_run(cfg) -> tuple[ModelPair, Settings, list[Sample]]:
    """The pair (switched to the evaluators' attention), the settings and the samples of a perplexity run."""
    samples = load_samples(cfg)
    pair = load_pair_for(cfg, cfg.dataset.context_len)
    prepare(pair)
    return pair, run_settings(cfg, layer_mapping(cfg, pair)), samples


def ppl_progress(last: pd.Series) -> dict[str, float]:
    """What the progress bar shows and W&B logs after each sample of a perplexity run."""
    return {"ppl": last.ppl, "dense_ppl": last.dense_ppl, "kv_reduction": last.kv_reduction}


def evaluate_samples(ctx: RunContext, samples: list[Sample], evaluate: Callable[[int, Sample], pd.DataFrame],
                     desc: str, progress: Callable[[pd.Series], dict[str, float]] = ppl_progress) -> pd.DataFrame:
    """Rows of every sample, resuming from ``parts/``.

    ``evaluate(index, sample)`` returns the sample's rows (e.g. :func:`specattn.eval.ppl_metrics.sample_rows`);
    they get ``sample_seconds`` and are written to ``parts/`` as soon as the sample finishes.
    ``progress(last row)`` gives the numbers shown on the progress bar and logged per sample.
    """
    cfg = ctx.cfg
    parts = SampleParts(ctx.run_dir)
    frames = []
    bar = tqdm(samples, desc=f"{cfg.experiment.name} {desc}", unit="sample", disable=not cfg.progress)
    for index, sample in enumerate(bar):
        frame = parts.load(index)
        if frame is None:
            start = time.perf_counter()
            frame = evaluate(index, sample)
            frame["sample_seconds"] = time.perf_counter() - start
            parts.save(index, frame)
        frames.append(frame)
        shown = progress(frame.iloc[-1])
        bar.set_postfix({key: f"{value:.4g}" for key, value in shown.items()})
        ctx.logger.log_metrics({"sample": index, **shown})
    return pd.concat(frames, ignore_index=True)


def ppl_result(results: pd.DataFrame, settings: Settings) -> ExperimentResult:
    """The results, their summary table and the summary metrics."""
    summary = summarise(results)
    metrics = summary_metrics(summary) | {"layer_map": str(list(settings.layer_map))}
    return ExperimentResult(results, summary[list(SUMMARY_COLUMNS)], metrics=metrics)
