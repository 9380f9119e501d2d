"""KV-cache read accounting: what fraction of the dense reads a selection skips.

A *read* is one (verifier layer, KV head, verification step, key) triple: the step's attention
kernel loads that key's K and V entries once for all of the step's query rows. Dense attention
at step ``s`` reads every key in ``[0, end_s)``; a sparse layer reads the keys of the prefix
chunks it selected plus the step's own tail. Prefill is not counted (it is dense for every
method). ``kv_reduction = 1 - reads / dense_reads`` over all verifier layers (dense layers count
as full reads) and over the sparse layers alone. The step's own tokens count on both sides: a
verification kernel loads them whatever it selects, so the reduction is what a kernel saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import StepLayout


@dataclass
class KVReads:
    """Summed read counts of one evaluated sample (or of many, added together)."""

    reads: int = 0
    dense_reads: int = 0
    sparse_layer_reads: int = 0
    sparse_layer_dense_reads: int = 0

    def add_layer(self, layout: StepLayout, steps: torch.Tensor, selection: torch.Tensor | None,
                  n_kv_heads: int) -> None:
        """Count one verifier layer over some steps.

        Args:
            steps: ``(S,)`` step indices covered.
            selection: ``(S, H, n_chunks)`` bool chunk selection with ``H`` = 1 (shared by all KV
                heads) or ``n_kv_heads``; ``None`` for a dense layer.
        """
        starts, ends = layout.step_starts[steps], layout.step_ends[steps]
        dense = int(ends.sum()) * n_kv_heads
        self.dense_reads += dense
        if selection is None:
            self.reads += dense
            return
        per_chunk = layout.prefix_keys_per_chunk[steps].unsqueeze(1)  # (S, 1, n_chunks)
        prefix = (selection.long() * per_chunk).sum(dim=(1, 2))  # (S,) summed over heads
        prefix = prefix * (n_kv_heads // selection.shape[1])
        tail = (ends - starts) * n_kv_heads
        read = int(prefix.sum() + tail.sum())
        self.reads += read
        self.sparse_layer_reads += read
        self.sparse_layer_dense_reads += dense

    def __iadd__(self, other: "KVReads") -> "KVReads":
        self.reads += other.reads
        self.dense_reads += other.dense_reads
        self.sparse_layer_reads += other.sparse_layer_reads
        self.sparse_layer_dense_reads += other.sparse_layer_dense_reads
        return self

    @property
    def reduction(self) -> float:
        """Fraction of reads skipped over all layers."""
        return 1.0 - self.reads / self.dense_reads if self.dense_reads else 0.0

    @property
    def sparse_layer_reduction(self) -> float:
        """Fraction of reads skipped over the sparse layers only."""
        if not self.sparse_layer_dense_reads:
            return 0.0
        return 1.0 - self.sparse_layer_reads / self.sparse_layer_dense_reads
