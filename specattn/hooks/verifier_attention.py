"""The verifier's attention with per-layer KV selection, through transformers' attention interface.

The verifier runs with ``attn_implementation="specattn_verifier"``. Without a plan in the forward
kwargs it is plain SDPA. With ``specattn_verifier=VerifierPlan(...)`` (or a list of plans, one per
sequence of a batch), each query row of a verification step attends to the prefix chunks its
layer's method selected plus the step's own tail, causally (:mod:`specattn.core.visibility`); prefill
rows and dense layers attend densely. The same function serves the parallel evaluation (all
positions in one forward), the sequential one (one step per forward over a KV cache) and the
decoder (one step per sequence over a static cache whose rows start at ``plan.row_start``), and
counts KV reads as it goes.

Two ways to compute a sparse layer's rows, equal up to the input dtype's rounding: a boolean mask over
every key (:func:`selection_mask`, masked SDPA in blocks of ``query_block`` rows: any device and dtype),
or, with ``plan.kernel`` on CUDA in fp16/bf16, the decoder's chunk-list kernel
(:func:`specattn.gpu.attention.sparse.sparse_verify`), each full step a "sequence" of ``gamma + 1``
query rows over the shared keys: it reads only the selected chunks and builds no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..core.attention_probs import causal_keys
from ..core.coverage import LayerCoverage
from ..core.kv_reads import KVReads
from ..core.layout import StepLayout
from ..core.visibility import visible_keys
from ..gpu.attention import sparse as chunk_kernel
from ..methods.base import ActiveMethod
from ..methods.context import LayerView

VERIFIER_ATTENTION = "specattn_verifier"
#: the same function with no transformers-built mask, for the decoder's static cache (whose buffers
#: hold keys past each sequence's length): every forward passes plans, prefill from position 0 is causal
DECODE_VERIFIER_ATTENTION = "specattn_verifier_decode"


@dataclass
class VerifierPlan:
    """One method's sparse verification over one sequence.

    ``layout``: the verification steps among the forward's rows (``None``: every row is a prefill
    row, attending densely). ``row_start``: position of the forward's first query row, for caches
    whose buffers run past the valid keys (the decoder's static cache: keys ``[0, row_start + R)``
    are valid); ``None``: the rows are the last ``R`` of the keys (the evaluator, batch of one).
    """

    method: ActiveMethod | None  # None: no sparse layer (sparse_layers empty)
    layout: StepLayout | None
    sparse_layers: frozenset[int]
    reads: KVReads
    query_block: int = 512
    row_start: int | None = None
    coverage: LayerCoverage | None = None  # per-layer diagnostics (experiment=layer_coverage)
    kernel: bool = False  # full steps through the chunk-list kernel where it runs (module docstring)


def selection_mask(layout: StepLayout, rows: torch.Tensor, steps: torch.Tensor, selection: torch.Tensor,
                   n_keys: int) -> torch.Tensor:
    """``(H, R, K)`` bool keys visible to each row under a chunk ``selection`` ``(S, H, n_chunks)`` of
    ``steps`` (:func:`specattn.core.visibility.visible_keys`: prefill rows see their causal past)."""
    step_of_row = layout.step_of(rows.cpu()).to(rows.device)
    local = (step_of_row - steps[0].to(rows.device)).clamp(min=0)
    starts = torch.where(step_of_row >= 0, layout.step_starts.to(rows.device)[step_of_row.clamp(min=0)], 0)
    return visible_keys(rows, starts, selection[local].transpose(0, 1), layout.chunk_size, n_keys)


def causal_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rows: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    """Dense causal attention of one sequence's rows: ``query (Hq, R, D)`` at positions ``rows``
    over ``key``/``value`` ``(Hkv, K, D)`` -> ``(R, Hq, D)``."""
    keys = repeat_kv(key[None], module.num_key_value_groups)
    values = repeat_kv(value[None], module.num_key_value_groups)
    mask = causal_keys(rows, key.shape[1])[None, None]
    out = torch.nn.functional.scaled_dot_product_attention(query[None], keys, values, attn_mask=mask, scale=scaling)
    return out[0].transpose(0, 1)


def _masked_rows(module, query, keys, values, rows, steps, selection, plan, scaling) -> torch.Tensor:
    """Masked SDPA of ``query (Hq, R, D)`` at ``rows`` over ``keys``/``values`` ``(1, Hq, K, D)`` -> ``(Hq, R, D)``."""
    outputs = []
    for lo in range(0, query.shape[1], plan.query_block):
        hi = min(lo + plan.query_block, query.shape[1])
        mask = selection_mask(plan.layout, rows[lo:hi], steps, selection, keys.shape[2])
        if mask.shape[0] > 1:  # per KV head -> per query head
            mask = mask.repeat_interleave(module.num_key_value_groups, dim=0)
        outputs.append(torch.nn.functional.scaled_dot_product_attention(
            query[None, :, lo:hi], keys, values, attn_mask=mask.unsqueeze(0), scale=scaling)[0])
    return torch.cat(outputs, dim=1)


def _sparse_attention(module, query, key, value, rows, steps, selection, plan, scaling) -> torch.Tensor:
    """Masked attention of one sequence under ``selection``: ``(Hq, R, D)`` rows -> ``(R, Hq, D)``."""
    selection = selection.to(query.device)
    if plan.kernel and plan.row_start is None and chunk_kernel.kernel_runs(query[None], key[None], value[None]):
        return _kernel_attention(module, query, key, value, rows, steps, selection, plan, scaling)
    keys = repeat_kv(key[None], module.num_key_value_groups)
    values = repeat_kv(value[None], module.num_key_value_groups)
    return _masked_rows(module, query, keys, values, rows, steps, selection, plan, scaling).transpose(0, 1)


#: most (step, KV head) lists per kernel launch (each program scans every list of its launch)
LISTS_PER_LAUNCH = 256


def _kernel_attention(module, query, key, value, rows, steps, selection, plan, scaling) -> torch.Tensor:
    """:func:`_sparse_attention` with the chunk-list kernel for the full steps among ``rows`` (contiguous
    positions, the last ``R`` of the keys); prefill rows attend causally (SDPA), the rest (a shorter last
    step) through the mask."""
    layout = plan.layout
    t, n_rows, first = layout.step_len, query.shape[1], int(rows[0])
    out = query.new_empty(n_rows, query.shape[0], query.shape[2])
    n_pre = min(max(layout.prefill_len - first, 0), n_rows)
    if n_pre:
        out[:n_pre] = causal_attention(module, query[:, :n_pre], key[:, : first + n_pre], value[:, : first + n_pre],
                                       rows[:n_pre], scaling)
    starts, ends = layout.step_starts[steps], layout.step_ends[steps]  # positions = key indices
    full = steps[(starts >= first) & (ends - starts == t) & (ends <= first + n_rows)]  # consecutive: all but the last
    lo = hi = n_pre
    if full.numel():
        lo = int(layout.step_starts[full[0]]) - first
        hi = lo + full.numel() * t
        out[lo:hi] = _full_steps(query[:, lo:hi], key, value, layout.step_ends[full],
                                 selection[(full - steps[0]).to(selection.device)], layout.chunk_size, scaling)
    for a, b in ((n_pre, lo), (hi, n_rows)):  # rows of steps shorter than gamma + 1 (the last one)
        if a < b:
            out[a:b] = _masked_rows(module, query[:, a:b], repeat_kv(key[None], module.num_key_value_groups),
                                    repeat_kv(value[None], module.num_key_value_groups), rows[a:b], steps, selection,
                                    plan, scaling).transpose(0, 1)
    return out


def _full_steps(query, key, value, ends, selection, chunk_size: int, scaling: float) -> torch.Tensor:
    """Consecutive full steps through the chunk-list kernel: ``query (Hq, S*T, D)`` (S steps of T rows), their
    ``ends (S,)`` (one past each step's last row = its keys), ``selection (S, H_sel, C)`` bool ->
    ``(S*T, Hq, D)``."""
    n_steps = ends.numel()
    t = query.shape[1] // n_steps
    q = query.reshape(query.shape[0], n_steps, t, query.shape[2]).transpose(0, 1)  # (S, Hq, T, D)
    lists = chunk_kernel.chunk_lists(selection.contiguous())
    lengths = ends.to(device=query.device, dtype=torch.int32)
    per = max(1, LISTS_PER_LAUNCH // lists.ids.shape[1])
    outputs = []
    for a in range(0, n_steps, per):
        b = min(a + per, n_steps)
        outputs.append(chunk_kernel.sparse_verify(
            q[a:b], key[None].expand(b - a, -1, -1, -1), value[None].expand(b - a, -1, -1, -1), lengths[a:b],
            lists.ids[a:b], lists.n[a:b], chunk_size, scaling))
    return torch.cat(outputs).reshape(n_steps * t, query.shape[0], query.shape[2])


def _count_coverage(plan: VerifierPlan, layer: int, query, key, rows, steps, selection, scaling) -> None:
    """Per-layer coverage and reads of the decoding rows (``plan.coverage``), in blocks of rows."""
    plan.coverage.add_reads(layer, plan.layout, steps, selection.cpu(), key.shape[0])
    decoding = (plan.layout.step_of(rows.cpu()) >= 0).nonzero().squeeze(1)
    for block in decoding.split(plan.query_block):
        block_rows = rows[block.to(rows.device)]
        visible = selection_mask(plan.layout, block_rows, steps, selection.to(query.device), key.shape[1])
        plan.coverage.add_mass(layer, query[:, block.to(query.device)], key, scaling, block_rows, visible)


def _sequence(module, query, key, value, plan: VerifierPlan, scaling) -> torch.Tensor | None:
    """One sequence's attention ``(R, Hq, D)``, or None where the evaluator's plain SDPA serves."""
    layout = plan.layout
    n_rows = query.shape[1]
    if plan.row_start is not None:
        key, value = key[:, : plan.row_start + n_rows], value[:, : plan.row_start + n_rows]
    rows = torch.arange(key.shape[1] - n_rows, key.shape[1], device=query.device)
    if layout is None:
        steps = torch.zeros(0, dtype=torch.long)
    else:
        step_of_row = layout.step_of(rows.cpu())
        steps = step_of_row[step_of_row >= 0].unique()
    selection = None
    if steps.numel() and module.layer_idx in plan.sparse_layers:
        selection = plan.method.select(LayerView(module.layer_idx, rows, steps, query, key, scaling))
    if steps.numel():  # prefill rows are not counted
        plan.reads.add_layer(layout, steps, None if selection is None else selection.cpu(), key.shape[0])
    skips = selection is not None and not bool(
        (selection | ~layout.prefix_chunks[steps].to(selection.device)[:, None]).all())
    if plan.coverage is not None and selection is not None:
        _count_coverage(plan, module.layer_idx, query, key, rows, steps, selection, scaling)
    if skips:
        return _sparse_attention(module, query, key, value, rows, steps, selection, plan, scaling)
    if plan.row_start is None:
        return None  # nothing skipped: identical to the dense computation
    return causal_attention(module, query, key, value, rows, scaling)


def verifier_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                       specattn_verifier: VerifierPlan | list[VerifierPlan] | None = None, **kwargs):
    """Attention-interface function; shapes as transformers': query ``(B, Hq, R, D)``, key/value
    ``(B, Hkv, K, D)``; returns ``((B, R, Hq, D), None)``."""
    dense = lambda: sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,  # noqa: E731
                                           dropout=dropout, **kwargs)
    if specattn_verifier is None:
        return dense()
    plans = specattn_verifier if isinstance(specattn_verifier, list) else [specattn_verifier]
    outputs = [_sequence(module, query[b], key[b], value[b], plan, scaling) for b, plan in enumerate(plans)]
    if outputs[0] is None:  # the evaluator (batch of one, rows at the end of the keys) and nothing skipped
        return dense()
    return torch.stack(outputs).contiguous(), None


AttentionInterface.register(VERIFIER_ATTENTION, verifier_attention)
AttentionMaskInterface.register(VERIFIER_ATTENTION, sdpa_mask)
AttentionInterface.register(DECODE_VERIFIER_ATTENTION, verifier_attention)
