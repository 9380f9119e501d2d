"""The interface every KV-selection method implements.

At each verification step, for each *sparse* verifier layer (the first ``dense_layers`` stay
dense and never reach a method), a method returns which chunks of the step's prefix the layer
reads. The loops that drive methods (the perplexity evaluator, :mod:`specattn.eval.perplexity`, and
the decoder, :mod:`specattn.decode`) own everything else: the step geometry, the tail (always
read, causally), the attention masks and the KV accounting, so a new method is one small class
plus one ``conf/method/<name>.yaml``.

Call order: :meth:`SelectionMethod.begin_sample` once per sequence; then, for each group of
verification steps that one forward covers (all steps of a sample in the parallel evaluator,
one step in the sequential evaluator's walk and in the decoder), :meth:`~SelectionMethod.begin_steps`
with their :class:`~specattn.core.layout.StepLayout`, :meth:`~SelectionMethod.observe_draft` with the
draft rows of those steps (draft-based methods), and :meth:`~SelectionMethod.select` from inside
each sparse verifier layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core.checks import built
from ..core.layout import StepLayout


@dataclass
class SampleContext:
    """What a method may know about the sequence and the model pair before it starts."""

    layer_map: list[int]  # verifier layer -> draft layer
    sparse_layers: list[int]  # verifier layers that get a sparse selection
    n_kv_heads: int  # verifier KV heads
    generator: torch.Generator  # seeded per sample, for randomised methods
    device: torch.device


@dataclass
class LayerView:
    """One verifier layer inside one forward pass (all steps at once, or a single step).

    Attributes:
        layer: verifier layer index.
        rows: ``(R,)`` absolute positions of the forward's query rows.
        steps: ``(S,)`` indices (into the current layout) of the verification steps among ``rows``
            (consecutive, ascending).
        queries: ``(Hq, R, D)`` the layer's post-RoPE queries.
        keys: ``(Hkv, K, D)`` the layer's post-RoPE keys for positions ``[0, K)``.
        scaling: softmax scale.
    """

    layer: int
    rows: torch.Tensor
    steps: torch.Tensor
    queries: torch.Tensor
    keys: torch.Tensor
    scaling: float


class SelectionMethod(ABC):
    """Chooses the prefix KV chunks each sparse verifier layer reads at each step."""

    name: ClassVar[str]
    uses_draft: ClassVar[bool] = False

    def begin_sample(self, context: SampleContext) -> None:
        """Called once per sequence (a sample, a prompt) before any forward pass."""
        self.context = context

    def begin_steps(self, layout: StepLayout) -> None:
        """Called before the forwards that cover the verification steps of ``layout``; selections
        and draft observations until the next call refer to its steps."""
        self.layout = layout

    def draft_layers_needed(self) -> set[int]:
        """Draft layers whose attention :meth:`observe_draft` must see."""
        if not self.uses_draft:
            return set()
        return {self.context.layer_map[j] for j in self.context.sparse_layers}

    def observe_draft(self, draft_layer: int, attention: torch.Tensor, rows: torch.Tensor) -> None:
        """Receive draft attention rows (only draft rows of the current layout's steps, ascending).

        Args:
            attention: ``(H, R, K)`` head-aggregated probabilities over keys ``[0, K)``.
            rows: ``(R,)`` their absolute positions.
        """

    @abstractmethod
    def select(self, view: LayerView) -> torch.Tensor | None:
        """``(S, H, n_chunks)`` bool chunks read per step of ``view.steps`` (``H`` = 1 or the
        verifier's KV heads); chunks outside a step's prefix are ignored. ``None``: read all."""

    def params(self) -> dict[str, Any]:
        """Parameters that identify this setting in results tables (e.g. ``{"p": 0.95}``)."""
        return {}

    @property
    def label(self) -> str:
        """Short display name, e.g. ``specattn p=0.95``."""
        parts = [f"{k}={v}" for k, v in self.params().items() if v is not None]
        return " ".join([self.name, *parts])


def empty_selection(steps: int, heads: int, n_chunks: int, device: torch.device) -> torch.Tensor:
    """An all-False ``(steps, heads, n_chunks)`` selection."""
    return torch.zeros(steps, heads, n_chunks, dtype=torch.bool, device=device)


def rows_to_steps(row_masks: torch.Tensor, steps: torch.Tensor, n_steps: int) -> torch.Tensor:
    """OR per-row masks into per-step masks.

    Args:
        row_masks: ``(R, ...)`` bool, one mask per row.
        steps: ``(R,)`` the step of each row (``-1`` rows are dropped).
    Returns:
        ``(n_steps, ...)`` bool; steps with no row are all False.
    """
    keep = steps >= 0
    counts = torch.zeros((n_steps, *row_masks.shape[1:]), dtype=torch.int32, device=row_masks.device)
    counts.index_add_(0, steps[keep].to(row_masks.device), row_masks[keep].to(torch.int32))
    return counts > 0


def instantiate_method(spec, key_prefix: str = "", **kwargs) -> SelectionMethod:
    """Build a method from its ``selector`` config (:func:`specattn.core.checks.built`): a bad setting is one
    line naming its full config key, ``key_prefix`` + the constructor's name for it."""
    return built(spec, key_prefix.rstrip("."), **kwargs)
