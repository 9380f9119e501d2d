"""What a method's parts see: the sequence (:class:`SampleContext`), one sparse layer's forward
(:class:`LayerView`), and the scorer interfaces (:class:`Scorer`, :class:`ChunkScorer`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..core.layout import StepLayout


@dataclass
class SampleContext:
    """What a method may know about the sequence and the model pair before it starts."""

    layer_map: list[int]  # verifier layer -> draft layer
    sparse_layers: list[int]  # verifier layers that get a sparse selection
    n_kv_heads: int  # verifier KV heads
    generator: torch.Generator  # seeded per sequence, for randomised methods
    device: torch.device
    head_agg: str = "mean"  # the run's draft head aggregation (a method's scorer may ask for another)
    draft_kv_heads: int = 1
    decoding: bool = False  # the driver commits each step's accepted positions (the decoder)

    @classmethod
    def for_pair(cls, pair, settings, seed: int, decoding: bool = False) -> "SampleContext":
        """One sequence of ``pair`` (a :class:`~specattn.models.pair.ModelPair`) under ``settings``
        (:class:`~specattn.core.settings.Settings`), its generator seeded with ``seed``."""
        return cls(list(settings.layer_map), list(range(settings.dense_layers, pair.n_verifier_layers)),
                   pair.verifier.config.num_key_value_heads, torch.Generator().manual_seed(seed),
                   pair.verifier.device, settings.head_agg, pair.draft.config.num_key_value_heads, decoding)


@dataclass
class LayerView:
    """One sparse verifier layer inside one forward pass (all steps at once, or a single step).

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


class Scorer:
    """Where a method's evidence comes from (see the module docstring); built per sequence."""


class ChunkScorer(Scorer, ABC):
    """Scores the chunks of each step's prefix from the layer's own queries and keys (or nothing)."""

    def start(self, context: SampleContext) -> None:
        """Called once per sequence."""
        self.context = context

    def begin_steps(self, layout: StepLayout) -> None:
        """Called before the forwards covering ``layout``'s steps."""
        self.layout = layout

    @abstractmethod
    def score(self, view: LayerView) -> torch.Tensor:
        """``(S, H, n_chunks)`` float scores of ``view.steps`` (``H`` = 1 or the verifier's KV heads),
        higher is better; chunks outside a step's prefix are ignored."""
