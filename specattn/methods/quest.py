"""Quest (Tang et al., ICML 2024): query-aware page selection from per-page key bounds.

A page is a chunk. For each page the element-wise ``min`` and ``max`` of its keys (over the keys
that exist in the step's prefix: the last prefix page may be partial) bound any key in it, and

    u(q, page) = sum_d max(q_d * min_d, q_d * max_d)

bounds ``q . k`` over the page. Quest reads the pages with the largest bounds that fill the budget
(:mod:`specattn.methods.budget`), at least 3, as Quest's ``max(3, token_budget // chunk_size)``;
prefill and the first ``dense_layers`` layers are dense (the evaluation loop's rule for every method).

Verification steps and GQA: Quest scores one query head of one decoded token. Here a step has
``gamma + 1`` query rows and each KV head serves ``Hq / Hkv`` query heads, and a page is loaded once
per step and KV head for all of them. So each (query head, row) turns its bounds into a
distribution over the step's prefix pages (softmax of ``u * scaling``, which keeps that head's
ranking), a page's score for a KV head is the max of that distribution over the group's query heads
and the step's rows, and each KV head reads its top pages within the budget (``H`` = KV heads).
With one query head per KV head and one row this is exactly Quest's ranking.
"""

from __future__ import annotations

import torch

from ..layout import StepLayout
from .base import LayerView
from .budget import BudgetedMethod

QUEST_MIN_PAGES = 3


def row_page_bounds(queries: torch.Tensor, keys: torch.Tensor, layout: StepLayout, rows: torch.Tensor) -> torch.Tensor:
    """Quest's bound ``sum_d max(q_d * min_d, q_d * max_d)`` of each row's query on each page.

    ``min``/``max`` are per channel over the page's keys in the row's step prefix (the last prefix
    page may be partial).

    Args:
        queries: ``(Hq, R, D)`` the rows' queries; ``Hq`` a multiple of ``Hkv``.
        keys: ``(Hkv, K, D)`` keys of positions ``[0, K)``, covering every row's step prefix.
        rows: ``(R,)`` positions of decoding rows (not prefill rows).
    Returns:
        ``(Hq, R, n_chunks)`` float; ``-inf`` for pages outside the row's step prefix.
    """
    hkv, n_keys, dim = keys.shape
    size, n_chunks = layout.chunk_size, layout.n_chunks
    pages = torch.nn.functional.pad(keys, (0, 0, 0, n_chunks * size - n_keys)).reshape(hkv, n_chunks, size, dim)
    run_lo, run_hi = pages.cummin(dim=2).values, pages.cummax(dim=2).values  # bounds of each page's first keys
    group = queries.shape[0] // hkv
    pos, neg = queries.clamp(min=0), queries.clamp(max=0)  # max(q*lo, q*hi) = relu(q)*hi + min(q,0)*lo
    full_lo = run_lo[:, :, -1].repeat_interleave(group, dim=0)  # (Hq, C, D), right for whole prefix pages
    full_hi = run_hi[:, :, -1].repeat_interleave(group, dim=0)
    scores = pos @ full_hi.transpose(1, 2) + neg @ full_lo.transpose(1, 2)  # (Hq, R, C)
    start = layout.step_starts[layout.step_of(rows.cpu())].to(keys.device)  # (R,) each row's prefix end
    page, filled = torch.div(start, size, rounding_mode="floor"), start % size
    partial = filled > 0  # the row's last prefix page holds `filled` keys only
    if partial.any():
        at = page[partial]
        lo = run_lo[:, at, filled[partial] - 1].repeat_interleave(group, dim=0)  # (Hq, r, D)
        hi = run_hi[:, at, filled[partial] - 1].repeat_interleave(group, dim=0)
        rows_partial = partial.nonzero().squeeze(1)
        scores[:, rows_partial, at] = (pos[:, partial] * hi + neg[:, partial] * lo).sum(dim=-1)
    n_prefix = page + partial.long()
    outside = torch.arange(n_chunks, device=keys.device)[None, :] >= n_prefix[:, None]
    return scores.masked_fill(outside[None], -torch.inf)


class Quest(BudgetedMethod):
    name = "quest"

    def select(self, view: LayerView) -> torch.Tensor:
        layout = self.context.layout
        step_of_row = layout.step_of(view.rows.cpu())
        decoding = step_of_row >= 0
        rows = view.rows[decoding.to(view.rows.device)]
        queries = view.queries[:, decoding.to(view.queries.device)].float()
        bounds = row_page_bounds(queries, view.keys.float(), layout, rows) * view.scaling  # (Hq, R, C)
        hkv = view.keys.shape[0]
        estimate = torch.softmax(bounds, dim=-1).reshape(hkv, -1, *bounds.shape[1:]).amax(dim=1)  # (Hkv, R, C)
        local = (step_of_row[decoding] - view.steps[0].cpu()).to(estimate.device)
        scores = torch.zeros(hkv, len(view.steps), layout.n_chunks, device=estimate.device)
        scores.scatter_reduce_(1, local[None, :, None].expand_as(estimate), estimate, "amax")
        return self.take(scores.transpose(0, 1), view.steps, QUEST_MIN_PAGES)
