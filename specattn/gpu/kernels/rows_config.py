"""The draft-row kernel's launch parameters (plain data: importable without Triton)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowsConfig:
    """A launch of :mod:`specattn.gpu.kernels.draft_rows`: ``block_n`` keys per block (a power of two >= 16),
    ``blocks`` consecutive blocks per program, ``warps`` warps, ``stages`` pipeline stages of the block loop.

    :func:`default_rows_config` picks the launch a call without one gets."""

    block_n: int = 64
    blocks: int = 1
    warps: int = 4
    stages: int = 1

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1) or min(self.blocks, self.warps, self.stages) < 1:
            raise ValueError(f"{self}: block_n must be a power of two >= 16, the others >= 1")


ONE_BLOCK = RowsConfig()  # one 64-key block per program: the launch until the tenth session
PIPELINED = RowsConfig(blocks=8, stages=3)


def default_rows_config(num_kv_heads: int, masked: bool = False) -> RowsConfig:
    """The launch for a draft with ``num_kv_heads`` KV heads: 8 blocks of 64 keys per program pipelined over 3
    stages for 1-2 KV heads (4-22% less time than one block per program at every shape
    ``scripts/gpu/profile_rows.py`` timed at the real pair's draft, 2 KV heads, on the H200: docs/benchmarks.md,
    tenth session); one block per program for more KV heads, where the pipelined launch spills registers (sm_90
    compile report: 428 bytes at 8 KV heads) and was not timed. ``masked`` (a read policy's mask, whose skipped
    blocks break the pipeline): one block per program, the fastest launch at every masked shape timed (eleventh
    session: first_window's rows 1.. 230 us against 262, window's 226 against 328, all four first_window rows 683
    against 901)."""
    return PIPELINED if num_kv_heads <= 2 and not masked else ONE_BLOCK
