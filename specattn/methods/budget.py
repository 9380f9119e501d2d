"""KV budgets of the budgeted baselines (quest, streaming, random): how many prefix keys a sparse
layer may read at each verification step, and the best-scored chunks that fill it.

Budgets count keys, the unit of the KV accounting (:mod:`specattn.core.kv_reads`), so a partial last
prefix chunk counts for the keys it holds. A budget is one of, in this order of precedence:

* ``match`` (config only): a finished run (its folder or its ``results.parquet``) whose measured
  ``1 - kv_reduction_sparse_layers`` becomes ``kv_budget_frac`` below; it is read when the config is
  resolved (:func:`specattn.runs.matching.matched_budget`), before any method is built, so the run's
  signature holds the fraction, not the path;
* ``kv_budget_frac`` in (0, 1]: step ``s`` may read ``frac * end_s - tail_s`` prefix keys, so that
  prefix + tail reads are ``frac`` of the dense reads ``end_s``;
* ``token_budget`` (Quest-style): ``token_budget`` prefix keys per step.

Chunks are taken best first while they fit, to the nearest chunk (a chunk is taken when its
middle key is within the budget); methods may ask for a minimum number of chunks (Quest keeps at
least 3 pages, StreamingLLM its sink chunks) and never get more than the step's prefix holds.
"""

from __future__ import annotations

import math

import torch

from ..core.checks import fraction, positive_int
from ..core.errors import SpecAttnError
from ..core.layout import StepLayout
from .base import SelectionMethod


class Budget:
    """Prefix keys each step may read; see the module docstring for the three ways to set it."""

    def __init__(self, token_budget: int | None = None, kv_budget_frac: float | None = None,
                 matched_label: str | None = None):
        """``matched_label``: the setting whose measured reduction ``kv_budget_frac`` matches (for labels)."""
        self.token_budget, self.kv_budget_frac, self.matched_label = None, None, matched_label
        if kv_budget_frac is not None:
            self.kv_budget_frac = fraction(kv_budget_frac, "kv_budget_frac", "0.25")
        elif token_budget is not None:
            self.token_budget = positive_int(token_budget, "token_budget", "256")
        else:
            raise SpecAttnError("a budgeted method needs one of token_budget, kv_budget_frac or match")

    def params(self) -> dict:
        """What identifies the budget in results tables."""
        if self.matched_label is not None:
            return {"match": self.matched_label}
        if self.kv_budget_frac is not None:
            return {"kv_budget_frac": round(self.kv_budget_frac, 4)}
        return {"token_budget": self.token_budget}

    def prefix_keys(self, layout: StepLayout) -> torch.Tensor:
        """``(n_steps,)`` float64: prefix keys each step may read."""
        ends = layout.step_ends.double()
        if self.kv_budget_frac is not None:
            return self.kv_budget_frac * ends - (ends - layout.step_starts)
        return torch.full_like(ends, float(self.token_budget))


def top_chunks(scores: torch.Tensor, prefix_keys: torch.Tensor, budget: torch.Tensor, min_chunks: int = 0) -> torch.Tensor:
    """The best-scored prefix chunks of each step and head that fill its key budget.

    Args:
        scores: ``(S, H, n_chunks)`` float, higher is better (ties go to the lower chunk index).
        prefix_keys: ``(S, n_chunks)`` long, keys of each chunk in each step's prefix
            (:attr:`StepLayout.prefix_keys_per_chunk`); chunks with none are never taken.
        budget: ``(S,)`` prefix keys each step may read.
        min_chunks: chunks taken whatever the budget (when the prefix has them).
    Returns:
        ``(S, H, n_chunks)`` bool.
    """
    keys = prefix_keys[:, None, :].expand_as(scores)
    order = scores.masked_fill(keys == 0, -math.inf).argsort(dim=-1, descending=True, stable=True)
    taken = keys.gather(-1, order)  # keys of the chunks in rank order
    before = taken.cumsum(dim=-1) - taken
    rank = torch.arange(scores.shape[-1], device=scores.device)
    keep = ((before + taken / 2 <= budget[:, None, None]) | (rank < min_chunks)) & (taken > 0)
    return torch.zeros_like(keep).scatter_(-1, order, keep)


class BudgetedMethod(SelectionMethod):
    """A method that ranks prefix chunks and reads the best ones that fill a :class:`Budget`."""

    def __init__(self, budget: Budget):
        self.budget = budget

    def params(self) -> dict:
        return self.budget.params()

    def begin_steps(self, layout) -> None:
        super().begin_steps(layout)
        self.budget_keys = self.budget.prefix_keys(layout)

    def take(self, scores: torch.Tensor, steps: torch.Tensor, min_chunks: int = 0) -> torch.Tensor:
        """:func:`top_chunks` of ``scores`` ``(S, H, n_chunks)`` for ``steps`` ``(S,)``, on ``scores``' device."""
        steps = steps.cpu()
        prefix_keys = self.layout.prefix_keys_per_chunk[steps].to(scores.device)
        return top_chunks(scores, prefix_keys, self.budget_keys[steps].to(scores.device), min_chunks)
