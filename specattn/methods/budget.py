"""KV budgets of the budgeted baselines (quest, streaming, random): how many prefix keys a sparse
layer may read at each verification step, and the best-scored chunks that fill it.

Budgets count keys, the unit of the KV accounting (:mod:`specattn.core.kv_reads`), so a partial last
prefix chunk counts for the keys it holds. A budget is one of, in this order of precedence:

* ``match``: a finished run (its folder or its ``results.parquet``) whose measured
  ``1 - kv_reduction_sparse_layers`` becomes ``kv_budget_frac`` below; it is read when the config is
  resolved (:func:`specattn.runs.matching.matched_budget`), before any method is built, so the run's
  signature holds the fraction, not the path (tables match rows per sample: :meth:`Budget.matching`);
* ``kv_budget_frac`` in (0, 1]: step ``s`` may read ``frac * end_s - tail_s`` prefix keys, so that
  prefix + tail reads are ``frac`` of the dense reads ``end_s``;
* ``token_budget`` (Quest-style): ``token_budget`` prefix keys per step.

Chunks are taken best first while they fit, to the nearest chunk (a chunk is taken when its
middle key is within the budget); methods may ask for a minimum number of chunks (Quest keeps at
least 3 pages, StreamingLLM its sink chunks) and never get more than the step's prefix holds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..core.checks import fraction, positive_int
from ..core.errors import SpecAttnError
from ..core.layout import StepLayout


@dataclass(frozen=True)
class Budget:
    """Prefix keys each step may read; see the module docstring for the three ways to set it.

    ``match`` / ``match_setting`` name the run a matched budget came from (config keys, shown in
    ``config.yaml``); ``matched`` is what the config resolved from them (``[fraction, setting label]``:
    :func:`specattn.runs.matching.matched_budget`), and it takes precedence. Identity and labels use
    the resolved numbers, never the path.
    """

    token_budget: int | None = None
    kv_budget_frac: float | None = None
    match: str | None = None
    match_setting: str | None = None
    matched: tuple | list | None = None

    def __post_init__(self) -> None:
        if self.matched is not None:
            frac, label = self.matched
            object.__setattr__(self, "kv_budget_frac", fraction(frac, "budget.kv_budget_frac", "0.25"))
            object.__setattr__(self, "matched", (self.kv_budget_frac, str(label)))
        elif self.kv_budget_frac is not None:
            object.__setattr__(self, "kv_budget_frac", fraction(self.kv_budget_frac, "budget.kv_budget_frac", "0.25"))
        elif self.token_budget is not None:
            positive_int(self.token_budget, "budget.token_budget", "256")
        else:
            raise SpecAttnError("a budgeted method needs one of budget.token_budget, budget.kv_budget_frac or "
                                "budget.match")

    @classmethod
    def matching(cls, fraction_read: float, label: str) -> "Budget":
        """A budget that reads ``fraction_read`` of each step's dense KV, matched to setting ``label``."""
        return cls(matched=(fraction_read, label))

    def params(self) -> dict:
        """What identifies the budget in results tables."""
        if self.matched is not None:
            return {"match": self.matched[1]}
        if self.kv_budget_frac is not None:
            return {"kv_budget_frac": round(self.kv_budget_frac, 4)}
        return {"token_budget": self.token_budget}

    def identity(self) -> dict:
        """What results depend on: the resolved fraction (a matched one to 12 digits), not the run path."""
        if self.kv_budget_frac is not None:
            return {"kv_budget_frac": round(self.kv_budget_frac, 12)}
        return {"token_budget": self.token_budget}

    def prefix_keys(self, layout: StepLayout) -> torch.Tensor:
        """``(n_steps,)`` float64: prefix keys each step may read."""
        ends = layout.step_ends.double()
        if self.kv_budget_frac is not None:
            return self.kv_budget_frac * ends - (ends - layout.step_starts)
        return torch.full_like(ends, float(self.token_budget))


SORT_KERNEL_MAX_CHUNKS = 1536
"""Rows of at most this many chunks (<= ``kernels.budget_top.MAX_CHUNKS``) take ``kernels/budget_top.py`` (one program
sorting a row), longer ones the torch version: in a graph of 28 selections at Qwen2.5-Coder-1.5B's shapes, batch 16,
budget_top took 2.18 / 3.97 / 7.26 ms at 8K / 16K / 32K (~530 / 1,040 / 2,070 chunks of 16 keys), torch 3.64 / 4.55 /
6.11 (H200, ``scripts/gpu/profile_quest.py``, fifteenth session)."""


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

    Where the GPU kernels run (CUDA, or the Triton interpreter), float32 scores of at most
    :data:`SORT_KERNEL_MAX_CHUNKS` chunks take one launch (:mod:`specattn.gpu.kernels.budget_top`, no host
    synchronisation) that gives the same masks; longer rows and elsewhere :func:`top_chunks_torch` (also
    graph-capturable: no host synchronisation either).
    """
    from ..gpu.kernels import available

    s, h, nc = scores.shape
    if prefix_keys.shape != (s, nc) or budget.shape != (s,):
        raise SpecAttnError(f"top_chunks: prefix_keys {tuple(prefix_keys.shape)} and budget {tuple(budget.shape)} do "
                            f"not fit scores {tuple(scores.shape)}: need ({s}, {nc}) and ({s},)")
    if available(scores.device) and scores.dtype == torch.float32:
        from ..gpu.kernels import budget_top

        if nc <= SORT_KERNEL_MAX_CHUNKS:
            dev = scores.device
            return budget_top.launch(scores.contiguous(), prefix_keys.to(dev).contiguous(),
                                     budget.to(dev, torch.float64).contiguous(), min_chunks,
                                     torch.empty((s, h, nc), dtype=torch.bool, device=dev))
    return top_chunks_torch(scores, prefix_keys, budget, min_chunks)


def top_chunks_torch(scores: torch.Tensor, prefix_keys: torch.Tensor, budget: torch.Tensor,
                     min_chunks: int = 0) -> torch.Tensor:
    """:func:`top_chunks` in torch (any device and dtype): a stable sort, the keys' running sum, a scatter back."""
    keys = prefix_keys[:, None, :].expand_as(scores)
    order = scores.masked_fill(keys == 0, -math.inf).argsort(dim=-1, descending=True, stable=True)
    taken = keys.gather(-1, order)  # keys of the chunks in rank order
    before = taken.cumsum(dim=-1) - taken
    rank = torch.arange(scores.shape[-1], device=scores.device)
    keep = ((before + taken / 2 <= budget[:, None, None]) | (rank < min_chunks)) & (taken > 0)
    return torch.zeros_like(keep).scatter_(-1, order, keep)


class Budgeted:
    """Mixin of methods whose ``budget`` field is their knob (the contract tests' two settings)."""

    def keep_everything(self):
        return dataclasses.replace(self, budget=Budget(kv_budget_frac=1.0))

    def sparse_example(self):
        return dataclasses.replace(self, budget=Budget(kv_budget_frac=0.4))
