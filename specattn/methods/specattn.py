"""SpecAttn (arXiv 2510.27641): the draft's attention nucleus predicts the verifier's KV reads.

For verifier layer ``j`` at a step, the chunks read are those holding the top-p nucleus of the draft's
head-aggregated attention in draft layer ``layer_map[j]``, for each of the step's draft rows, OR-ed
over those rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import Method
from .draft_rows import DraftAttention
from .selectors import Nucleus


@dataclass(frozen=True)
class SpecAttn(Method):
    """The draft's top-p nucleus, per draft row, OR-ed over the step's rows.

    heads: the draft heads' aggregation for this row (``mean``, ``max``, ``kv_group``, ``union``); None: the
    run's ``head_agg``. Set, it lets one run compare aggregations on the same samples (and one dense row).
    """

    name = "specattn"
    p: float = 0.95
    heads: str | None = None

    def scorer(self) -> DraftAttention:
        return DraftAttention(heads=self.heads)

    def selector(self) -> Nucleus:
        return Nucleus(self.p)

    def keep_everything(self) -> "SpecAttn":
        return dataclasses.replace(self, p=1.0)

    def sparse_example(self) -> "SpecAttn":
        return dataclasses.replace(self, p=0.8)
