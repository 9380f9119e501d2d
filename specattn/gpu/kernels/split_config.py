"""The split-KV kernel's tile and work-split parameters (plain data: importable without Triton)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitConfig:
    """Tile and work-split parameters (defaults measured on the H200, docs/benchmarks.md).

    block_n: keys per inner iteration (a whole number of chunks, power of two); warps, stages: Triton's
    ``num_warps`` / ``num_stages``; ctas_per_sm: programs per SM of the fixed grid (``P = ctas_per_sm *
    SMs``); min_chunks: fewest chunks a program takes when there is little work.
    """

    block_n: int = 64
    warps: int = 4
    stages: int = 3
    ctas_per_sm: int = 2
    min_chunks: int = 8

    def __post_init__(self) -> None:
        if self.block_n < 1 or self.block_n & (self.block_n - 1) or min(self.warps, self.stages, self.ctas_per_sm,
                                                                         self.min_chunks) < 1:
            raise ValueError(f"{self}: block_n must be a power of two, the others >= 1")
