"""Selectors: from a scorer's evidence to the chunks each verification step reads.

A selector works at one or both granularities:

* a **row rule** (:meth:`Selector.row_chunks`) keeps keys of each attention row (a draft row, or a
  verifier query head's row) and pools them to chunks; a step reads the union over its rows. A row
  covers every key the row attends, the step's own earlier tokens included (a draft row at position
  ``r`` attends ``[0, r]``): the nucleus is the top-p of the row's whole distribution, which is what
  the model computed, and chunks past the step's prefix are dropped later (those keys are read as
  the step's tail anyway);
* a **chunk choice** (:meth:`Selector.choose`) picks chunks of each step's prefix from ``(S, H, C)``
  scores: a chunk scorer's, or a row scorer's attention mass pooled per chunk and summed over the
  step's rows (and history) when the selector has no row rule.

:meth:`Selector.finish` may add chunks every step reads whatever the scores (:class:`Visible`: sinks
and a recent window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.checks import check_p, nonnegative_int, positive_int
from ..core.errors import SpecAttnError
from ..core.layout import StepLayout
from .budget import Budget, top_chunks
from .nucleus import nucleus_chunk_mask, nucleus_mask, pool_chunks


class Selector:
    """Turns scores into the chunks each step reads (see the module docstring)."""

    #: whether :meth:`row_chunks` is defined (a rule applied to each attention row)
    has_row_rule: bool = False

    def begin_steps(self, layout: StepLayout) -> None:
        """Called before the forwards covering ``layout``'s steps."""
        self.layout = layout

    def row_chunks(self, weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """``(..., R, K)`` attention weights -> ``(..., R, ceil(K / chunk_size))`` bool."""
        raise SpecAttnError(f"{type(self).__name__} has no rule for single attention rows: it chooses among "
                            "a step's chunk scores")

    def choose(self, scores: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``(S, H, C)`` float scores of ``steps`` ``(S,)`` (of the current layout) -> ``(S, H, C)`` bool."""
        raise NotImplementedError

    def finish(self, selection: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The final ``(S, H, C)`` selection of ``steps`` (default: ``selection`` itself)."""
        return selection

    def _prefix(self, steps: torch.Tensor, device) -> torch.Tensor:
        """``(S, 1, C)`` bool: the chunk holds keys of the step's prefix."""
        return self.layout.prefix_chunks[steps.cpu()].to(device)[:, None, :]


@dataclass
class Nucleus(Selector):
    """The top-p nucleus (:mod:`specattn.methods.nucleus` semantics): of each row's keys (row rule), or
    of a step's chunk masses (chunk choice: the smallest set of prefix chunks, largest first, whose
    mass reaches ``p`` of the step's prefix mass)."""

    p: float
    has_row_rule = True

    def __post_init__(self) -> None:
        self.p = check_p(self.p)

    def row_chunks(self, weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
        return nucleus_chunk_mask(weights, self.p, chunk_size)

    def choose(self, scores: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        prefix = self._prefix(steps, scores.device)
        return nucleus_mask(scores.clamp(min=0) * prefix, self.p) & prefix


@dataclass
class TopKeys(Selector):
    """The ``k`` highest-weight keys of each row (row rule; all keys of rows shorter than ``k``), or
    the best ``ceil(k / chunk_size)`` prefix chunks of a step (chunk choice)."""

    k: int
    has_row_rule = True

    def __post_init__(self) -> None:
        self.k = positive_int(self.k, "top_k", "64")

    def row_chunks(self, weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
        k = min(self.k, weights.shape[-1])
        keys = torch.zeros(weights.shape, dtype=torch.bool, device=weights.device)
        return pool_chunks(keys.scatter_(-1, weights.topk(k, dim=-1).indices, True), chunk_size)

    def choose(self, scores: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        prefix = self._prefix(steps, scores.device)
        k = min(math.ceil(self.k / self.layout.chunk_size), scores.shape[-1])
        ranked = scores.masked_fill(~prefix, -math.inf).topk(k, dim=-1).indices
        return torch.zeros_like(prefix.expand_as(scores)).scatter_(-1, ranked, True) & prefix


@dataclass
class TopChunks(Selector):
    """The best-scored prefix chunks that fill a :class:`~specattn.methods.budget.Budget` (taken best
    first while they fit, to the nearest chunk), at least ``min_chunks`` chunks and the chunks of the
    first ``min_keys`` keys' worth (e.g. StreamingLLM's sinks), never more than the prefix holds."""

    budget: Budget
    min_chunks: int = 0
    min_keys: int = 0

    def begin_steps(self, layout: StepLayout) -> None:
        super().begin_steps(layout)
        self.budget_keys = self.budget.prefix_keys(layout)
        self.least = max(self.min_chunks, math.ceil(self.min_keys / layout.chunk_size))

    def choose(self, scores: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        steps = steps.cpu()
        prefix_keys = self.layout.prefix_keys_per_chunk[steps].to(scores.device)
        return top_chunks(scores, prefix_keys, self.budget_keys[steps].to(scores.device), self.least)


@dataclass
class Visible(Selector):
    """``inner``'s selection plus, at every step, the chunks of the first ``sinks`` keys and of the
    ``window`` keys just before the step (the step's own tokens are read anyway)."""

    inner: Selector
    sinks: int = 0
    window: int = 0
    has_row_rule: bool = field(init=False)

    def __post_init__(self) -> None:
        nonnegative_int(self.sinks, "sinks", "4")
        nonnegative_int(self.window, "window", "64")
        self.has_row_rule = self.inner.has_row_rule

    def begin_steps(self, layout: StepLayout) -> None:
        super().begin_steps(layout)
        self.inner.begin_steps(layout)

    def row_chunks(self, weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
        return self.inner.row_chunks(weights, chunk_size)

    def choose(self, scores: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return self.inner.choose(scores, steps)

    def finish(self, selection: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        selection = self.inner.finish(selection, steps)
        size = self.layout.chunk_size
        lo = torch.arange(self.layout.n_chunks) * size  # first key of each chunk
        starts = self.layout.step_starts[steps.cpu()][:, None]
        always = (lo[None, :] < self.sinks).expand(len(starts), -1)
        if self.window:
            always = always | ((lo[None, :] + size > starts - self.window) & (lo[None, :] < starts))
        return selection | always[:, None, :].to(selection.device)
