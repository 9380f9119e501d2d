"""The draft's attention rows as a method's evidence: :class:`DraftAttention` (the scorer's settings)
and :class:`DraftFeed` (its state on one sequence).

For sparse verifier layer ``j`` at a step, the evidence comes from draft layer ``layer_map[j]``: the
step's draft rows (the ``gamma`` rows the draft computed while proposing the step's tokens) and, with
``history = n``, the draft rows of the ``n`` steps before it that were accepted. Heads are viewed as
the run's ``head_agg`` says (:mod:`specattn.core.heads`: ``mean``, ``max``, ``kv_group``), or as
``union``: the selector's row rule applied to every draft head, OR-ed over heads.

The feed reduces rows as they stream in (nothing of a row is kept beyond its chunks): with a row
rule (:attr:`Selector.has_row_rule`), each row's kept chunks, OR-ed per step; otherwise each row's
attention mass pooled per chunk, summed per step. In the evaluators every step is scored at once and
all draft rows are accepted (teacher forcing), so a step's history is the steps before it in the same
layout; in the decoder each step has its own layout, and :meth:`DraftFeed.commit` moves the accepted
rows of the step into the history (rejected rows leave it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ..core.checks import nonnegative_int
from ..core.errors import SpecAttnError
from ..core.heads import HEAD_AGGREGATIONS, aggregate_heads, check_head_layout
from ..core.layout import StepLayout
from .context import SampleContext, Scorer

HEAD_VIEWS = (*HEAD_AGGREGATIONS, "union")


@dataclass(frozen=True)
class DraftAttention(Scorer):
    """The draft's attention rows in the layer mapped to each sparse verifier layer.

    heads: ``None`` (the run's ``head_agg``), ``mean``, ``max``, ``kv_group`` or ``union``.
    history: earlier steps whose accepted draft rows join the current step's.
    """

    heads: str | None = None
    history: int = 0

    def __post_init__(self) -> None:
        if self.heads is not None and self.heads not in HEAD_VIEWS:
            raise SpecAttnError(f"heads={self.heads!r} is unknown: allowed are {', '.join(HEAD_VIEWS)}")
        nonnegative_int(self.history, "history", "4")


def _pad(x: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """Zero-pad the last dimension of ``x`` to ``n_chunks``."""
    return torch.nn.functional.pad(x, (0, n_chunks - x.shape[-1])) if x.shape[-1] < n_chunks else x


def pooled_mass(weights: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(..., K)`` weights -> ``(..., ceil(K / chunk_size))`` float32: each chunk's summed weight."""
    n_chunks = -(-weights.shape[-1] // chunk_size)
    padded = _pad(weights.float(), n_chunks * chunk_size)
    return padded.reshape(*weights.shape[:-1], n_chunks, chunk_size).sum(dim=-1)


class DraftFeed:
    """One sequence's draft evidence for one method (see the module docstring)."""

    def __init__(self, scorer: DraftAttention, selector, context: SampleContext):
        self.heads = scorer.heads or context.head_agg
        if self.heads in HEAD_AGGREGATIONS:
            check_head_layout(self.heads, context.draft_kv_heads, context.n_kv_heads)
        self.history, self.selector, self.context = scorer.history, selector, context
        self.layers = {context.layer_map[j] for j in context.sparse_layers}
        self.past: dict[int, deque] = {layer: deque(maxlen=self.history) for layer in self.layers}

    def begin_steps(self, layout: StepLayout) -> None:
        self.layout = layout
        self.store: dict[int, torch.Tensor] = {}  # draft layer -> (n_steps, H, n_chunks) of this layout
        self.pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # rows awaiting commit

    def _evidence(self, probs: torch.Tensor) -> torch.Tensor:
        """``(Hd, R, K)`` per-head probabilities -> ``(H, R, C)``: chunks kept (bool) or chunk mass (float)."""
        size, c = self.layout.chunk_size, self.context
        if self.heads == "union":
            per = self.selector.row_chunks(probs, size) if self.selector.has_row_rule else pooled_mass(probs, size)
            return per.any(dim=0, keepdim=True) if per.dtype == torch.bool else per.sum(dim=0, keepdim=True)
        rows = aggregate_heads(probs, self.heads, c.draft_kv_heads, c.n_kv_heads)
        return self.selector.row_chunks(rows, size) if self.selector.has_row_rule else pooled_mass(rows, size)

    def observe(self, layer: int, probs: torch.Tensor, rows: torch.Tensor) -> None:
        """Draft layer ``layer``'s rows ``(Hd, R, K)`` at positions ``rows (R,)`` (draft rows of this layout)."""
        layout = self.layout
        per = _pad(self._evidence(probs), layout.n_chunks)  # (H, R, C)
        steps, local = layout.step_of(rows.cpu()).unique(return_inverse=True)
        summed = torch.zeros(len(steps), *per.shape[::2], dtype=torch.float32, device=per.device)
        summed.index_add_(0, local.to(per.device), per.transpose(0, 1).float())  # (steps here, H, C)
        store = self.store.get(layer)
        if store is None:  # a row rule without history keeps only bits
            dtype = torch.bool if self.selector.has_row_rule and not self.history else torch.float32
            store = self.store[layer] = torch.zeros(layout.n_steps, per.shape[0], layout.n_chunks, dtype=dtype,
                                                    device=per.device)
        steps = steps.to(per.device)
        store[steps] = (store[steps] | (summed > 0)) if store.dtype == torch.bool else store[steps] + summed
        if self.context.decoding and self.history:
            self.pending.setdefault(layer, []).append((rows.cpu(), per))

    def scores(self, layer: int, steps: torch.Tensor) -> torch.Tensor:
        """``(S, H, C)`` evidence for ``steps``: bool with a row rule, else float mass."""
        store = self.store[layer]
        steps = steps.to(store.device)
        if store.dtype == torch.bool:
            return store[steps]
        if self.history:  # the steps before, in this layout (evaluators)
            running = torch.cat([store.new_zeros(1, *store.shape[1:]), store.cumsum(dim=0)])
            evidence = running[steps + 1] - running[(steps - self.history).clamp(min=0)]
        else:
            evidence = store[steps]
        for earlier in self.past[layer]:  # committed steps (the decoder)
            evidence = evidence + _pad(earlier.to(evidence.device), evidence.shape[-1])
        return evidence > 0 if self.selector.has_row_rule else evidence

    def commit(self, accepted_until: int) -> None:
        """The decoder accepted every position before ``accepted_until``: this step's rows there join
        the history."""
        for layer, observed in self.pending.items():
            kept = [per[:, rows < accepted_until] for rows, per in observed]
            self.past[layer].append(torch.cat(kept, dim=1).float().sum(dim=1))  # (H, C)
        self.pending = {}
