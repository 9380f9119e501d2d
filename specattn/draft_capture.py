"""Capture the draft's attention probabilities through transformers' attention interface.

The draft runs with ``attn_implementation="specattn_draft"``. Without an observer in the forward
kwargs it is plain SDPA. With ``specattn_draft=DraftObserver(...)``, each layer the observer
wants computes its attention explicitly in blocks of query rows (never holding more than
``query_block`` rows of probabilities), hands the head-aggregated probabilities of the steps'
draft rows to the observer, and uses the same probabilities for its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .heads import aggregate_heads
from .layout import StepLayout
from .probs import causal_probs, weighted_values

DRAFT_ATTENTION = "specattn_draft"


@dataclass
class DraftObserver:
    """Routes draft attention rows to the methods that asked for them.

    ``sinks`` maps a draft layer to callbacks ``f(draft_layer, attention (H, R, K), rows (R,))``.
    """

    layout: StepLayout
    head_agg: str
    verifier_kv_heads: int
    sinks: dict[int, list[Callable]] = field(default_factory=dict)
    query_block: int = 256


def draft_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                    specattn_draft: DraftObserver | None = None, **kwargs):
    """Attention-interface function; shapes as transformers': query ``(1, Hq, R, D)``, key/value
    ``(1, Hkv, K, D)``; returns ``((1, R, Hq, D), None)``."""
    observer = specattn_draft
    sinks = None if observer is None else observer.sinks.get(module.layer_idx)
    if not sinks:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    n_rows, n_keys = query.shape[2], key.shape[2]
    rows = torch.arange(n_keys - n_rows, n_keys, device=query.device)  # batch of one, no padding
    outputs = []
    for lo in range(0, n_rows, observer.query_block):
        block_rows = rows[lo : lo + observer.query_block]
        probs = causal_probs(query[0, :, lo : lo + observer.query_block], key[0], scaling, block_rows)  # (Hq, r, n)
        outputs.append(weighted_values(probs, value[0]))
        is_draft = observer.layout.is_draft_row(block_rows.cpu()).to(block_rows.device)
        if is_draft.any():
            aggregated = aggregate_heads(probs[:, is_draft], observer.head_agg,
                                         module.config.num_key_value_heads, observer.verifier_kv_heads)
            for sink in sinks:
                sink(module.layer_idx, aggregated, block_rows[is_draft])
    output = torch.cat(outputs, dim=1).to(query.dtype)  # (Hq, R, D)
    return output.transpose(0, 1).unsqueeze(0).contiguous(), None


AttentionInterface.register(DRAFT_ATTENTION, draft_attention)
AttentionMaskInterface.register(DRAFT_ATTENTION, sdpa_mask)
