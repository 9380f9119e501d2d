"""Draft SnapKV: SnapKV's observation window (Li et al., 2024), on the draft's rows.

SnapKV keeps the keys that the last few queries (its observation window) attended to most. Here the
window is the draft's rows of the current step and of the ``history`` steps before it that were
accepted; each prefix chunk scores the attention mass those rows put on it (in the draft layer mapped
to the verifier layer, heads as the run's ``head_agg``), and a step reads the best chunks that fill
the budget. It is the worked example of docs/architecture.md ("add a method in 15 minutes").
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method
from .budget import Budget, Budgeted
from .draft_rows import DraftAttention
from .selectors import TopChunks


@dataclass(frozen=True)
class DraftSnapKV(Budgeted, Method):
    """The chunks with the most draft attention mass over an observation window of steps, within a budget."""

    name = "draft_snapkv"
    budget: Budget
    history: int = 4

    def scorer(self) -> DraftAttention:
        return DraftAttention(history=self.history)

    def selector(self) -> TopChunks:
        return TopChunks(self.budget)
