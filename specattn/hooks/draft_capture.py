"""Capture the draft's attention probabilities through transformers' attention interface.

The draft runs with ``attn_implementation="specattn_draft"``. Without an observer in the forward
kwargs it is plain SDPA. With ``specattn_draft=DraftObserver(...)`` (or a list, one per sequence of
a batch), each layer the observer wants computes its attention explicitly in blocks of query rows
(never holding more than ``query_block`` rows of probabilities), hands the per-head
probabilities of the steps' draft rows to the observer, and uses the same probabilities for its
output. ``row_start`` places the rows in a static cache whose buffers run past the valid keys (the
decoder); without it the rows are the last ones of the keys (the evaluator, batch of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..core.attention_probs import causal_probs, weighted_values
from ..core.layout import StepLayout
from .verifier_attention import causal_attention

DRAFT_ATTENTION = "specattn_draft"
#: the same function with no transformers-built mask (the decoder's static cache; see verifier_attention)
DECODE_DRAFT_ATTENTION = "specattn_draft_decode"


@dataclass
class DraftObserver:
    """Routes one sequence's draft attention rows to the methods that asked for them.

    ``sinks`` maps a draft layer to callbacks ``f(draft_layer, probs (Hq, R, K), rows (R,))`` (per-head
    probabilities of the layout's draft rows; each method views the heads as it needs).
    """

    layout: StepLayout
    sinks: dict[int, list[Callable]] = field(default_factory=dict)
    query_block: int = 256
    row_start: int | None = None


def _observed(module, query, key, value, observer: DraftObserver, sinks, scaling) -> torch.Tensor:
    """One sequence's attention ``(R, Hq, D)`` from explicit probabilities, feeding the draft rows to ``sinks``."""
    n_rows, n_keys = query.shape[1], key.shape[1]
    rows = torch.arange(n_keys - n_rows, n_keys, device=query.device)
    outputs = []
    for lo in range(0, n_rows, observer.query_block):
        block_rows = rows[lo : lo + observer.query_block]
        probs = causal_probs(query[:, lo : lo + observer.query_block], key, scaling, block_rows)  # (Hq, r, n)
        outputs.append(weighted_values(probs, value))
        is_draft = observer.layout.is_draft_row(block_rows.cpu()).to(block_rows.device)
        if is_draft.any():
            for sink in sinks:
                sink(module.layer_idx, probs[:, is_draft], block_rows[is_draft])
    return torch.cat(outputs, dim=1).to(query.dtype).transpose(0, 1)  # (R, Hq, D)


def draft_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                    specattn_draft: DraftObserver | list[DraftObserver] | None = None, **kwargs):
    """Attention-interface function; shapes as transformers': query ``(B, Hq, R, D)``, key/value
    ``(B, Hkv, K, D)``; returns ``((B, R, Hq, D), None)``."""
    observers = specattn_draft if isinstance(specattn_draft, list) else [specattn_draft]
    if all(o is None or (o.row_start is None and not o.sinks.get(module.layer_idx)) for o in observers):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    outputs = []
    for b, observer in enumerate(observers):
        q, k, v = query[b], key[b], value[b]
        if observer.row_start is not None:
            k, v = k[:, : observer.row_start + q.shape[1]], v[:, : observer.row_start + q.shape[1]]
        sinks = observer.sinks.get(module.layer_idx)
        if sinks:
            outputs.append(_observed(module, q, k, v, observer, sinks, scaling))
        else:
            rows = torch.arange(k.shape[1] - q.shape[1], k.shape[1], device=q.device)
            outputs.append(causal_attention(module, q, k, v, rows, scaling))
    return torch.stack(outputs).contiguous(), None


AttentionInterface.register(DRAFT_ATTENTION, draft_attention)
AttentionMaskInterface.register(DRAFT_ATTENTION, sdpa_mask)
AttentionInterface.register(DECODE_DRAFT_ATTENTION, draft_attention)
