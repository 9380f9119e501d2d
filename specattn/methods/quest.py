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

from dataclasses import dataclass

import torch

from ..core.layout import StepLayout
from .base import Method
from .budget import Budget, Budgeted
from .context import ChunkScorer, LayerView
from .selectors import TopChunks

QUEST_MIN_PAGES = 3


class PageBounds:
    """Per-channel min/max of the keys of each *full* page of one layer, kept as the prefix grows.

    A full page of a sequence's prefix never changes (keys are only appended, and a decoder only
    rolls back keys past the prefix), so each page's bounds are computed once, when it first lies
    whole in a step's prefix.
    """

    def __init__(self) -> None:
        self.lo: torch.Tensor | None = None  # (Hkv, pages, D)
        self.hi: torch.Tensor | None = None

    def full_pages(self, keys: torch.Tensor, n_pages: int, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)`` ``(Hkv, n_pages, D)`` of pages ``[0, n_pages)``, extending the cache from ``keys``."""
        have = 0 if self.lo is None else self.lo.shape[1]
        if have < n_pages:
            hkv, _, dim = keys.shape
            new = keys[:, have * page_size : n_pages * page_size].reshape(hkv, n_pages - have, page_size, dim)
            lo, hi = new.amin(dim=2), new.amax(dim=2)
            self.lo = lo if self.lo is None else torch.cat([self.lo, lo], dim=1)
            self.hi = hi if self.hi is None else torch.cat([self.hi, hi], dim=1)
        if n_pages == 0:
            empty = keys.new_zeros(keys.shape[0], 0, keys.shape[2])
            return empty, empty
        return self.lo[:, :n_pages], self.hi[:, :n_pages]


def row_page_bounds(queries: torch.Tensor, keys: torch.Tensor, layout: StepLayout, rows: torch.Tensor,
                    pages: PageBounds | None = None) -> torch.Tensor:
    """Quest's bound ``sum_d max(q_d * min_d, q_d * max_d)`` of each row's query on each page.

    ``min``/``max`` are per channel over the page's keys in the row's step prefix (the last prefix
    page may be partial).

    Args:
        queries: ``(Hq, R, D)`` the rows' queries; ``Hq`` a multiple of ``Hkv``.
        keys: ``(Hkv, K, D)`` keys of positions ``[0, K)``, covering every row's step prefix.
        rows: ``(R,)`` positions of decoding rows (not prefill rows).
        pages: the full pages' bounds kept across calls (a fresh cache when None).
    Returns:
        ``(Hq, R, n_chunks)`` float; ``-inf`` for pages outside the row's step prefix.
    """
    hkv, _, dim = keys.shape
    size, n_chunks = layout.chunk_size, layout.n_chunks
    group = queries.shape[0] // hkv
    step_of_row = layout.step_of(rows.cpu())
    steps, local = step_of_row.unique(return_inverse=True)
    starts = layout.step_starts[steps].to(keys.device)  # (S,) each step's prefix length
    local = local.to(keys.device)
    page, filled = torch.div(starts, size, rounding_mode="floor"), starts % size  # (S,)
    lo, hi = (pages or PageBounds()).full_pages(keys, int(page.max()), size)  # (Hkv, P, D)
    pos, neg = queries.clamp(min=0), queries.clamp(max=0)  # max(q*lo, q*hi) = relu(q)*hi + min(q,0)*lo
    scores = torch.full((queries.shape[0], len(rows), n_chunks), -torch.inf, dtype=queries.dtype, device=keys.device)
    n_full = lo.shape[1]
    if n_full:
        full = pos @ hi.repeat_interleave(group, dim=0).transpose(1, 2) + neg @ lo.repeat_interleave(group, dim=0).transpose(1, 2)
        scores[:, :, :n_full] = full.masked_fill(torch.arange(n_full, device=keys.device)[None, :] >= page[local][:, None], -torch.inf)
    if bool((filled > 0).any()):  # each step's partial last page: bounds over its `filled` prefix keys
        offsets = torch.arange(size, device=keys.device)
        index = (page[:, None] * size + offsets[None, :]).clamp(max=keys.shape[1] - 1)  # (S, size)
        inside = (offsets[None, :] < filled[:, None])[None, :, :, None]  # (1, S, size, 1)
        gathered = keys[:, index]  # (Hkv, S, size, D)
        part_lo = gathered.masked_fill(~inside, torch.inf).amin(dim=2).repeat_interleave(group, dim=0)  # (Hq, S, D)
        part_hi = gathered.masked_fill(~inside, -torch.inf).amax(dim=2).repeat_interleave(group, dim=0)
        bound = (pos * part_hi[:, local] + neg * part_lo[:, local]).sum(dim=-1)  # (Hq, R)
        partial = filled[local] > 0
        rows_partial = partial.nonzero().squeeze(1)
        scores[:, rows_partial, page[local][partial]] = bound[:, partial]
    return scores


class QuestBounds(ChunkScorer):
    """Quest's page scores for a step and KV head: the max over the group's query heads and the step's
    rows of ``softmax(u * scaling)`` over the step's prefix pages (module docstring)."""

    def start(self, context) -> None:
        super().start(context)
        self.pages: dict[int, PageBounds] = {}  # verifier layer -> its full pages' bounds

    def score(self, view: LayerView) -> torch.Tensor:
        layout = self.layout
        step_of_row = layout.step_of(view.rows.cpu())
        decoding = step_of_row >= 0
        rows = view.rows[decoding.to(view.rows.device)]
        queries = view.queries[:, decoding.to(view.queries.device)].float()
        pages = self.pages.setdefault(view.layer, PageBounds())
        bounds = row_page_bounds(queries, view.keys.float(), layout, rows, pages) * view.scaling  # (Hq, R, C)
        hkv = view.keys.shape[0]
        estimate = torch.softmax(bounds, dim=-1).reshape(hkv, -1, *bounds.shape[1:]).amax(dim=1)  # (Hkv, R, C)
        local = (step_of_row[decoding] - view.steps[0].cpu()).to(estimate.device)
        scores = torch.zeros(hkv, len(view.steps), layout.n_chunks, device=estimate.device)
        scores.scatter_reduce_(1, local[None, :, None].expand_as(estimate), estimate, "amax")
        return scores.transpose(0, 1)


@dataclass(frozen=True)
class Quest(Budgeted, Method):
    """Quest's page bounds, the best pages within the budget, at least 3."""

    name = "quest"
    budget: Budget

    def scorer(self) -> QuestBounds:
        return QuestBounds()

    def selector(self) -> TopChunks:
        return TopChunks(self.budget, min_chunks=QUEST_MIN_PAGES)
