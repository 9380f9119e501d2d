"""The verifier's attention with per-layer KV selection, through transformers' attention interface.

The verifier runs with ``attn_implementation="specattn_verifier"``. Without a plan in the forward
kwargs it is plain SDPA. With ``specattn_verifier=VerifierPlan(...)``, each query row of a
verification step attends to the prefix chunks its layer's method selected plus the step's own
tail (causally); prefill rows and dense layers attend densely. The same function serves the
parallel evaluation (all positions in one forward) and the sequential one (one step per forward
over a KV cache), and counts KV reads as it goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .accounting import KVReads
from .layout import StepLayout
from .methods.base import LayerView, SelectionMethod
from .visibility import visible_keys

VERIFIER_ATTENTION = "specattn_verifier"


@dataclass
class VerifierPlan:
    """One method's sparse verification over one sample."""

    method: SelectionMethod
    layout: StepLayout
    sparse_layers: frozenset[int]
    reads: KVReads
    query_block: int = 512


def selection_mask(layout: StepLayout, rows: torch.Tensor, steps: torch.Tensor, selection: torch.Tensor,
                   n_keys: int) -> torch.Tensor:
    """``(H, R, K)`` bool keys visible to each row under a chunk ``selection`` ``(S, H, n_chunks)`` of
    ``steps`` (:func:`specattn.visibility.visible_keys`: prefill rows see their causal past)."""
    step_of_row = layout.step_of(rows.cpu()).to(rows.device)
    local = (step_of_row - steps[0].to(rows.device)).clamp(min=0)
    starts = torch.where(step_of_row >= 0, layout.step_starts.to(rows.device)[step_of_row.clamp(min=0)], 0)
    return visible_keys(rows, starts, selection[local].transpose(0, 1), layout.chunk_size, n_keys)


def verifier_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                       specattn_verifier: VerifierPlan | None = None, **kwargs):
    """Attention-interface function; shapes as transformers': query ``(1, Hq, R, D)``, key/value
    ``(1, Hkv, K, D)``; returns ``((1, R, Hq, D), None)``."""
    plan = specattn_verifier
    dense = lambda: sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,  # noqa: E731
                                           dropout=dropout, **kwargs)
    if plan is None:
        return dense()
    layout = plan.layout
    n_rows, n_keys = query.shape[2], key.shape[2]
    rows = torch.arange(n_keys - n_rows, n_keys, device=query.device)  # batch of one, no padding
    step_of_row = layout.step_of(rows.cpu())
    steps = step_of_row[step_of_row >= 0].unique()
    if steps.numel() == 0:  # prefill: dense, not counted
        return dense()
    selection = None
    if module.layer_idx in plan.sparse_layers:
        view = LayerView(module.layer_idx, rows, steps, query[0], key[0], scaling)
        selection = plan.method.select(view)
    plan.reads.add_layer(layout, steps, None if selection is None else selection.cpu(), key.shape[1])
    if selection is None or bool((selection | ~layout.prefix_chunks[steps].to(selection.device)[:, None]).all()):
        return dense()  # nothing skipped: identical to the dense computation
    keys = repeat_kv(key, module.num_key_value_groups)
    values = repeat_kv(value, module.num_key_value_groups)
    selection = selection.to(query.device)
    outputs = []
    for lo in range(0, n_rows, plan.query_block):
        hi = min(lo + plan.query_block, n_rows)
        mask = selection_mask(layout, rows[lo:hi], steps, selection, n_keys)
        if mask.shape[0] > 1:  # per KV head -> per query head
            mask = mask.repeat_interleave(module.num_key_value_groups, dim=0)
        outputs.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, lo:hi], keys, values, attn_mask=mask.unsqueeze(0), scale=scaling))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(VERIFIER_ATTENTION, verifier_attention)
AttentionMaskInterface.register(VERIFIER_ATTENTION, sdpa_mask)
