"""Per sparse verifier layer: how much of the verifier's own attention mass a selection keeps, and
what the layer reads (``experiment=layer_coverage``).

At a sparse layer, each (query head, decoding row) pair's *coverage* is the mass its dense softmax
(the layer's queries against every causal key, in the forward being evaluated) puts on the keys the
selection lets the row see (:mod:`specattn.core.visibility`). Coverage 1 means the sparse attention equals
the dense one at that layer; the output error of a row is bounded by ``1 - coverage`` times the
largest value norm. Next to it, the layer's own KV reduction (:mod:`specattn.core.kv_reads`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from .attention_probs import causal_probs
from .kv_reads import KVReads
from .layout import StepLayout


@dataclass
class LayerCoverage:
    """Summed coverage, counted (head, row) pairs and KV reads, per verifier layer."""

    mass: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    pairs: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    reads: dict[int, KVReads] = field(default_factory=lambda: defaultdict(KVReads))

    def add_mass(self, layer: int, queries: torch.Tensor, keys: torch.Tensor, scaling: float, rows: torch.Tensor,
                 visible: torch.Tensor) -> None:
        """Count the coverage of some decoding rows of one layer.

        Args:
            queries: ``(Hq, R, D)`` the rows' queries at positions ``rows (R,)``.
            keys: ``(Hkv, K, D)``.
            visible: ``(H, R, K)`` bool, the keys each row may see (H = 1 or Hkv).
        """
        probs = causal_probs(queries, keys, scaling, rows)  # (Hq, R, n)
        group = queries.shape[0] // visible.shape[0]
        seen = visible[..., : probs.shape[-1]].repeat_interleave(group, dim=0)
        kept = (probs * seen).sum(dim=-1)  # (Hq, R)
        self.mass[layer] += float(kept.double().sum())
        self.pairs[layer] += kept.numel()

    def add_reads(self, layer: int, layout: StepLayout, steps: torch.Tensor, selection: torch.Tensor,
                  n_kv_heads: int) -> None:
        """Count one layer's KV reads over ``steps`` (as :meth:`KVReads.add_layer`)."""
        self.reads[layer].add_layer(layout, steps, selection, n_kv_heads)

    def table(self) -> list[dict]:
        """One record per layer: ``layer, coverage, coverage_mass, coverage_pairs`` and the read sums."""
        return [{"layer": layer, "coverage": self.mass[layer] / self.pairs[layer], "coverage_mass": self.mass[layer],
                 "coverage_pairs": self.pairs[layer], "kv_reads": self.reads[layer].reads,
                 "kv_dense_reads": self.reads[layer].dense_reads,
                 "layer_kv_reduction": self.reads[layer].reduction} for layer in sorted(self.pairs)]
