"""Oracle top-p: the verifier's own attention nucleus, what SpecAttn tries to predict.

Every query head of every row of the step keeps the top-p nucleus of its own attention
(:mod:`specattn.methods.verifier_rows`), pooled to chunks and OR-ed over the step's rows and the query
heads of each KV group: every head keeps at least ``p`` of its attention mass at every row, an upper
bound on the quality of a top-p selection at that ``p``, at the KV reduction it measures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .base import Method
from .selectors import Nucleus
from .verifier_rows import VerifierAttention


@dataclass(frozen=True)
class OracleTopP(Method):
    """The verifier's own top-p nucleus per query head and row (``query_block``: memory, not results)."""

    name = "oracle_topp"
    p: float = 0.95
    query_block: int = field(default=64, metadata={"setting": False})

    def scorer(self) -> VerifierAttention:
        return VerifierAttention(self.query_block)

    def selector(self) -> Nucleus:
        return Nucleus(self.p)

    def keep_everything(self) -> "OracleTopP":
        return dataclasses.replace(self, p=1.0)

    def sparse_example(self) -> "OracleTopP":
        return dataclasses.replace(self, p=0.8)
