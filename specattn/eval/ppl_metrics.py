"""The perplexity experiments' metrics, in one place: the per-sample row of each method setting
(raw sums kept so any summary aggregates exactly), the token-weighted summary, its columns and the
names logged to W&B. A new metric is added here and where it is measured (:mod:`specattn.eval.perplexity`).

Definitions (README, "What is measured"): ``ppl`` is token-weighted over all scored positions and
``ppl_rel_increase = ppl / dense_ppl - 1``; ``kv_reduction = 1 - reads / dense_reads`` over all
verifier layers (dense layers count as full reads) and ``kv_reduction_sparse_layers`` over the
sparse layers only (:mod:`specattn.core.kv_reads`).
"""

from __future__ import annotations

import math

import pandas as pd

#: per-sample sums a summary adds up
SUM_COLUMNS = ("tokens", "nll", "dense_nll", "kv_reads", "kv_dense_reads", "kv_reads_sparse_layers",
               "kv_dense_reads_sparse_layers")
#: the printed summary table
SUMMARY_COLUMNS = ("method", "setting", "samples", "tokens", "ppl", "ppl_rel_increase", "kv_reduction",
                   "kv_reduction_sparse_layers")
#: summary columns logged as ``summary/<setting>/<name>``
LOGGED = ("ppl", "ppl_rel_increase", "kv_reduction", "kv_reduction_sparse_layers")


def sample_rows(cfg, index: int, sample, methods, scores, **extra) -> pd.DataFrame:
    """One row per method for one sample (the dense reference first in ``scores``); ``extra``
    columns are added to every row."""
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
            "layer_map": str(cfg.layer_map), "dense_layers": cfg.dense_layers, "impl": cfg.experiment.get("impl"),
            "method_params": str(method.params()), **extra,
        })
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame, by: tuple[str, ...] = ("setting",)) -> pd.DataFrame:
    """Token-weighted perplexity and summed KV reads per group of ``by`` (first-seen order)."""
    rows = []
    for key, group in results.groupby(list(by), sort=False):
        tokens = group["tokens"].sum()
        ppl = math.exp(group["nll"].sum() / tokens)
        dense_ppl = math.exp(group["dense_nll"].sum() / tokens)
        sparse_dense = group["kv_dense_reads_sparse_layers"].sum()
        keys = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        rows.append({
            "method": group["method"].iloc[0], **keys,
            "samples": len(group),
            "tokens": int(tokens),
            "ppl": ppl,
            "dense_ppl": dense_ppl,
            "ppl_rel_increase": ppl / dense_ppl - 1.0,
            "kv_reduction": 1.0 - group["kv_reads"].sum() / group["kv_dense_reads"].sum(),
            "kv_reduction_sparse_layers": (1.0 - group["kv_reads_sparse_layers"].sum() / sparse_dense)
            if sparse_dense else 0.0,
        })
    return pd.DataFrame(rows)


def summary_metrics(summary: pd.DataFrame, by: str = "setting") -> dict[str, float]:
    """``{"summary/<setting>/<metric>": value}`` for the :data:`LOGGED` metrics."""
    return {f"summary/{row[by]}/{key}": row[key] for _, row in summary.iterrows() for key in LOGGED}
