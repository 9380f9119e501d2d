"""``experiment=ppl``: perplexity and KV reduction of a method against dense attention.

Per sample it evaluates the dense reference and the configured method (one draft forward shared
by the methods that use the draft), writes that sample's rows under ``parts/`` (so a killed run
resumes), and finally returns one row per sample and method setting.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import torch
from hydra.utils import instantiate
from tqdm.auto import tqdm

from .. import layer_map as layer_maps
from ..config import resolve_device
from ..data.windows import Sample, token_windows
from ..errors import SpecAttnError
from ..heads import check_head_layout
from ..methods import Dense, SelectionMethod, instantiate_method
from ..models.pair import ModelPair, load_pair, torch_dtype
from ..outputs import SampleParts, summarise_ppl
from ..perplexity import IMPLEMENTATIONS, EvalSettings, evaluate_sample, prepare
from .base import ExperimentResult, RunContext


def build_methods(cfg) -> list[SelectionMethod]:
    """The dense reference plus the configured method(s) (``method.selector`` is instantiated)."""
    method = instantiate_method(cfg.method.selector)
    return [Dense()] if isinstance(method, Dense) else [Dense(), method]


def check_pair(cfg, pair: ModelPair) -> None:
    """Checks that need the loaded pair, before any evaluation."""
    n_layers = pair.n_verifier_layers
    if cfg.dense_layers > n_layers:
        raise SpecAttnError(f"dense_layers={cfg.dense_layers} exceeds the verifier's {n_layers} layers")
    supported = min(pair.verifier.config.max_position_embeddings, pair.draft.config.max_position_embeddings)
    if cfg.dataset.context_len > supported:
        raise SpecAttnError(
            f"dataset.context_len={cfg.dataset.context_len} exceeds what the pair supports ({supported} positions): "
            f"use dataset.context_len<={supported}"
        )
    check_head_layout(cfg.head_agg, pair.draft.config.num_key_value_heads, pair.verifier.config.num_key_value_heads)


def settings_for(cfg, pair: ModelPair) -> EvalSettings:
    impl = cfg.experiment.impl
    if impl not in IMPLEMENTATIONS:
        raise SpecAttnError(f"experiment.impl={impl!r} is unknown: allowed are {', '.join(IMPLEMENTATIONS)}")
    spec = str(cfg.layer_map)
    if spec == "auto":
        from ..align.calibrate import auto_layer_map

        spec = str(auto_layer_map(cfg, pair, progress=cfg.progress)[1])
    mapping = layer_maps.resolve(spec, pair.n_draft_layers, pair.n_verifier_layers, pair.draft_layers)
    return EvalSettings(cfg.dataset.prefill_frac, cfg.gamma, cfg.chunk_size, cfg.dense_layers, cfg.head_agg,
                        tuple(mapping), impl, cfg.experiment.query_block)


def sample_rows(cfg, index, sample, methods, scores, seconds) -> pd.DataFrame:
    """One row per method for one sample; raw sums are kept so summaries aggregate exactly."""
    dense = scores[0]
    rows = []
    for method, score in zip(methods, scores):
        reads = score.reads
        rows.append({
            "method": method.name, "setting": method.label, "p": method.params().get("p", math.nan),
            "chunk_size": cfg.chunk_size, "gamma": cfg.gamma, "context_len": cfg.dataset.context_len,
            "sample": index, "sample_id": sample.sample_id, "tokens": score.tokens,
            "nll": score.nll_sum, "dense_nll": dense.nll_sum,
            "ppl": math.exp(score.nll_sum / score.tokens), "dense_ppl": math.exp(dense.nll_sum / dense.tokens),
            "ppl_rel_increase": math.exp((score.nll_sum - dense.nll_sum) / score.tokens) - 1.0,
            "kv_reduction": reads.reduction, "kv_reduction_sparse_layers": reads.sparse_layer_reduction,
            "kv_reads": reads.reads, "kv_dense_reads": reads.dense_reads,
            "kv_reads_sparse_layers": reads.sparse_layer_reads,
            "kv_dense_reads_sparse_layers": reads.sparse_layer_dense_reads,
            "model": cfg.model.name, "dataset": cfg.dataset.name, "head_agg": cfg.head_agg,
            "layer_map": str(cfg.layer_map), "dense_layers": cfg.dense_layers, "impl": cfg.experiment.impl,
            "method_params": str(method.params()), "sample_seconds": seconds,
        })
    return pd.DataFrame(rows)


def load_run(cfg) -> tuple[ModelPair, EvalSettings, list[Sample]]:
    """The pair (ready for evaluation), the evaluation settings and the samples of a run."""
    device = resolve_device(cfg.device)
    source = instantiate(cfg.dataset.source)
    documents = source.documents()  # fails fast (e.g. hub dataset offline) before loading weights
    torch.manual_seed(cfg.seed)
    pair = load_pair(cfg.model, device, torch_dtype(cfg.dtype, device), cfg.seed)
    check_pair(cfg, pair)
    settings = settings_for(cfg, pair)
    prepare(pair)
    samples = token_windows(documents, pair.tokenizer, cfg.dataset.context_len, cfg.dataset.num_samples,
                            cfg.dataset.name)
    return pair, settings, samples


def evaluate_samples(ctx: RunContext, samples: list[Sample], evaluate, desc: str) -> pd.DataFrame:
    """Rows of every sample, resuming from ``parts/``.

    ``evaluate(index, sample) -> (methods, scores)`` scores one sample (the dense reference first);
    its rows are written to ``parts/`` as soon as it finishes.
    """
    cfg = ctx.cfg
    parts = SampleParts(ctx.run_dir, fresh=bool(cfg.rerun))
    frames = []
    bar = tqdm(samples, desc=f"{cfg.experiment.name} {desc}", unit="sample", disable=not cfg.progress)
    for index, sample in enumerate(bar):
        frame = parts.load(index)
        if frame is None:
            start = time.perf_counter()
            methods, scores = evaluate(index, sample)
            frame = sample_rows(cfg, index, sample, methods, scores, time.perf_counter() - start)
            parts.save(index, frame)
        frames.append(frame)
        last = frame.iloc[-1]
        bar.set_postfix(ppl=f"{last.ppl:.3f}", dense=f"{last.dense_ppl:.3f}", kv_red=f"{last.kv_reduction:.1%}")
        ctx.logger.log_metrics({"sample": index, "ppl": last.ppl, "dense_ppl": last.dense_ppl,
                                "kv_reduction": last.kv_reduction})
    return pd.concat(frames, ignore_index=True)


def ppl_result(results: pd.DataFrame, settings: EvalSettings) -> ExperimentResult:
    """The results, their summary table and the summary metrics."""
    summary = summarise_ppl(results)
    metrics = {f"summary/{row.setting}/{key}": getattr(row, key) for row in summary.itertuples()
               for key in ("ppl", "ppl_rel_increase", "kv_reduction", "kv_reduction_sparse_layers")}
    metrics["layer_map"] = str(list(settings.layer_map))
    return ExperimentResult(results, summary[["method", "setting", "samples", "tokens", "ppl", "ppl_rel_increase",
                                              "kv_reduction", "kv_reduction_sparse_layers"]], metrics=metrics)


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    methods = build_methods(cfg)
    pair, settings, samples = load_run(cfg)

    def evaluate(index, sample):
        return methods, evaluate_sample(pair, sample.input_ids, methods, settings, seed=cfg.seed + index,
                                        progress=cfg.progress)

    return ppl_result(evaluate_samples(ctx, samples, evaluate, methods[-1].label), settings)
