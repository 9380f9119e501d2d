"""The draft-row kernel's launch parameters (plain data: importable without Triton)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowsConfig:
    """A launch of :mod:`specattn.gpu.kernels.draft_rows`: ``block_n`` keys per block (a power of two >= 16),
    ``blocks`` consecutive blocks per program, ``warps`` warps, ``stages`` pipeline stages of the block loop."""

    block_n: int = 64
    blocks: int = 1
    warps: int = 4
    stages: int = 1

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1) or min(self.blocks, self.warps, self.stages) < 1:
            raise ValueError(f"{self}: block_n must be a power of two >= 16, the others >= 1")
