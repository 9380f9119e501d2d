"""Capture the draft's attention probabilities through transformers' attention interface.

The draft runs with ``attn_implementation="specattn_draft"``. Without an observer in the forward
kwargs it is plain SDPA. With ``specattn_draft=DraftObserver(...)`` (or a list, one per sequence of
a batch), each layer the observer wants computes its attention explicitly in blocks of query rows
(never holding more than ``query_block`` rows of probabilities), hands the per-head
probabilities of the steps' draft rows to the observer, and uses the same probabilities for its
output. ``row_start`` places the rows in a static cache whose buffers run past the valid keys (the
decoder); without it the rows are the last ones of the keys (the evaluator, batch of one).

The decoder's draft read policies (:mod:`specattn.decode.draft_reads`) add two things per forward:
``reads`` (the prefix chunks each draft layer reads; the layer's attention, and the probabilities it
hands on, are masked to them: :func:`specattn.core.visibility.draft_visible_keys`) and ``row_sinks``
(callbacks that also want a layer's draft rows, without changing how the layer computes its output).
A layer whose reads cover every prefix chunk computes exactly what it computes without a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..core.attention_probs import causal_probs, weighted_values
from ..core.layout import StepLayout
from ..core.visibility import draft_visible_keys
from .verifier_attention import causal_attention

DRAFT_ATTENTION = "specattn_draft"
#: the same function with no transformers-built mask (the decoder's static cache; see verifier_attention)
DECODE_DRAFT_ATTENTION = "specattn_draft_decode"


@dataclass
class DraftObserver:
    """Routes one sequence's draft attention rows to the methods that asked for them.

    ``sinks`` maps a draft layer to callbacks ``f(draft_layer, probs (Hq, R, K), rows (R,))`` (per-head
    probabilities of the layout's draft rows; each method views the heads as it needs); such a layer
    computes its output from those probabilities. ``row_sinks``: the same callbacks for the draft's own
    read policy (the layer's output is computed as without them). ``reads``: draft layer -> ``(C,)`` bool,
    the prefix chunks (prefix ``[0, layout.prefill_len)``) this forward reads in that layer; layers not
    in it (or ``reads=None``) read densely.
    """

    layout: StepLayout
    sinks: dict[int, list[Callable]] = field(default_factory=dict)
    query_block: int = 256
    row_start: int | None = None
    reads: dict[int, torch.Tensor] | None = None
    row_sinks: dict[int, list[Callable]] = field(default_factory=dict)

    def visible(self, layer: int, rows: torch.Tensor, n_keys: int) -> torch.Tensor | None:
        """``(R, n_keys)`` bool keys ``layer``'s rows at ``rows`` see, or None where the layer reads densely."""
        chunks = None if self.reads is None else self.reads.get(layer)
        prefix, size = self.layout.prefill_len, self.layout.chunk_size
        n_prefix = -(-prefix // size)
        if chunks is None or (chunks.numel() >= n_prefix and bool(chunks[:n_prefix].all())):
            return None
        return draft_visible_keys(rows, prefix, chunks, size, n_keys)


def _observed(module, query, key, value, observer: DraftObserver, sinks, scaling, rows, visible) -> torch.Tensor:
    """One sequence's attention ``(R, Hq, D)`` from explicit probabilities (under ``visible (R, K)``, None:
    causal), feeding the draft rows to ``sinks``."""
    outputs = []
    for lo in range(0, query.shape[1], observer.query_block):
        block_rows = rows[lo : lo + observer.query_block]
        block_visible = None if visible is None else visible[lo : lo + observer.query_block]
        probs = causal_probs(query[:, lo : lo + observer.query_block], key, scaling, block_rows,
                             block_visible)  # (Hq, r, n)
        outputs.append(weighted_values(probs, value))
        is_draft = observer.layout.is_draft_row(block_rows.cpu()).to(block_rows.device)
        if is_draft.any():
            for sink in sinks:
                sink(module.layer_idx, probs[:, is_draft], block_rows[is_draft])
    return torch.cat(outputs, dim=1).to(query.dtype).transpose(0, 1)  # (R, Hq, D)


def _masked_attention(module, query, key, value, visible: torch.Tensor, scaling: float) -> torch.Tensor:
    """One sequence's attention under ``visible (R, K)``: ``query (Hq, R, D)`` -> ``(R, Hq, D)``."""
    keys = repeat_kv(key[None], module.num_key_value_groups)
    values = repeat_kv(value[None], module.num_key_value_groups)
    out = torch.nn.functional.scaled_dot_product_attention(query[None], keys, values, attn_mask=visible[None, None],
                                                           scale=scaling)
    return out[0].transpose(0, 1)


def _hand_rows(module, query, key, observer: DraftObserver, sinks, scaling, rows, visible) -> None:
    """Hand the probabilities of the forward's draft rows (under ``visible``) to ``sinks``."""
    is_draft = observer.layout.is_draft_row(rows.cpu()).to(rows.device)
    if not is_draft.any():
        return
    probs = causal_probs(query[:, is_draft], key, scaling, rows[is_draft],
                         None if visible is None else visible[is_draft])
    for sink in sinks:
        sink(module.layer_idx, probs, rows[is_draft])


def draft_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                    specattn_draft: DraftObserver | list[DraftObserver] | None = None, **kwargs):
    """Attention-interface function; shapes as transformers': query ``(B, Hq, R, D)``, key/value
    ``(B, Hkv, K, D)``; returns ``((B, R, Hq, D), None)``."""
    observers = specattn_draft if isinstance(specattn_draft, list) else [specattn_draft]
    layer = module.layer_idx
    if all(o is None or (o.row_start is None and not o.sinks.get(layer) and not o.row_sinks.get(layer)
                         and o.reads is None) for o in observers):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    outputs = []
    for b, observer in enumerate(observers):
        q, k, v = query[b], key[b], value[b]
        if observer.row_start is not None:
            k, v = k[:, : observer.row_start + q.shape[1]], v[:, : observer.row_start + q.shape[1]]
        rows = torch.arange(k.shape[1] - q.shape[1], k.shape[1], device=q.device)
        visible = observer.visible(layer, rows, k.shape[1])
        sinks, row_sinks = observer.sinks.get(layer, []), observer.row_sinks.get(layer, [])
        if sinks:
            outputs.append(_observed(module, q, k, v, observer, sinks + row_sinks, scaling, rows, visible))
            continue
        if visible is None:
            outputs.append(causal_attention(module, q, k, v, rows, scaling))
        else:
            outputs.append(_masked_attention(module, q, k, v, visible, scaling))
        if row_sinks:
            _hand_rows(module, q, k, observer, row_sinks, scaling, rows, visible)
    return torch.stack(outputs).contiguous(), None


AttentionInterface.register(DRAFT_ATTENTION, draft_attention)
AttentionMaskInterface.register(DRAFT_ATTENTION, sdpa_mask)
AttentionInterface.register(DECODE_DRAFT_ATTENTION, draft_attention)
