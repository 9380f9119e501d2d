"""Stream draft/verifier attention over calibration text into (n_draft, n_verifier) similarity matrices.

Memory: the models' post-RoPE queries and keys of one sample are recorded once per layer (a few
MB per layer at 8K tokens for SmolLM2); attention probabilities are then rebuilt one block of
``query_block`` rows at a time: all draft layers for the block, then one verifier layer at a time.
No full ``L x L`` attention matrix of any layer is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..core.attention_probs import causal_keys, causal_probs
from ..core.heads import aggregate_heads
from ..models.pair import ModelPair
from .similarity_metrics import METRICS, build_metric, prepare_block, score_block

RECORD_ATTENTION = "specattn_record"


@dataclass(frozen=True)
class AlignSettings:
    """How similarities are computed (``align.*`` in the config)."""

    metrics: tuple[str, ...] = tuple(METRICS)
    head_agg: str = "mean"
    p: float = 0.95  # nucleus mass of topp_recall
    eps: float = 1e-6  # KL smoothing per key
    min_position: int = 64  # rows before this position are skipped (too few keys to compare)
    query_block: int = 128


def record_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                     specattn_record: dict | None = None, **kwargs):
    """SDPA that also stores this layer's ``(query (Hq, N, D), key (Hkv, N, D), scaling)``."""
    if specattn_record is not None:
        specattn_record[module.layer_idx] = (query[0], key[0], scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


AttentionInterface.register(RECORD_ATTENTION, record_attention)
AttentionMaskInterface.register(RECORD_ATTENTION, sdpa_mask)


def record_queries_keys(model, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Per layer ``(queries, keys, scaling)`` of ``model`` on ``ids`` ``(N,)``."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(RECORD_ATTENTION)
    store: dict[int, tuple] = {}
    try:
        with torch.inference_mode():
            model.base_model(ids[None].to(model.device), specattn_record=store)
    finally:
        model.set_attn_implementation(previous)
    return [store[i] for i in range(model.config.num_hidden_layers)]


@dataclass
class SimilarityTotals:
    """Running sums of row similarities per metric, and the number of rows summed."""

    sums: dict[str, torch.Tensor]
    rows: int = 0

    def mean(self, metric: str) -> torch.Tensor:
        return self.sums[metric] / max(self.rows, 1)


def accumulate(pair: ModelPair, ids: torch.Tensor, settings: AlignSettings, totals: SimilarityTotals | None = None,
               progress: bool = False) -> SimilarityTotals:
    """Add one calibration sample ``ids`` ``(N,)`` to the similarity sums of every metric."""
    n_draft, n_verifier = pair.n_draft_layers, pair.n_verifier_layers
    if totals is None:
        totals = SimilarityTotals({m: torch.zeros(n_draft, n_verifier, dtype=torch.float64) for m in settings.metrics})
    draft_qk = record_queries_keys(pair.draft, ids)
    verifier_qk = record_queries_keys(pair.verifier, ids)
    draft_kv = pair.draft.config.num_key_value_heads
    verifier_kv = pair.verifier.config.num_key_value_heads
    rows_all = torch.arange(min(settings.min_position, ids.numel() - 1), ids.numel(), device=pair.verifier.device)
    blocks = list(torch.split(rows_all, settings.query_block))
    metrics = {name: build_metric(name, settings.eps, settings.p) for name in settings.metrics}
    with torch.inference_mode():
        for rows in tqdm(blocks, desc="align", leave=False, disable=not progress):
            valid = causal_keys(rows, int(rows[-1]) + 1)
            draft = torch.stack([
                aggregate_heads(causal_probs(q[:, rows], k, s, rows), settings.head_agg, draft_kv, verifier_kv)
                for q, k, s in draft_qk])  # (n_draft, H, b, K)
            prepared = prepare_block(metrics, draft, valid)
            for j, (q, k, s) in enumerate(verifier_qk):
                probs = causal_probs(q[:, rows], k, s, rows)
                v = aggregate_heads(probs, settings.head_agg, verifier_kv, verifier_kv)
                for metric, scores in score_block(metrics, v, prepared).items():
                    totals.sums[metric][:, j] += scores.cpu()
            totals.rows += draft.shape[1] * len(rows)
    return totals
