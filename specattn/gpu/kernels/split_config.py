"""The split-KV kernel's tile and work-split parameters (plain data: importable without Triton)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_MERGE_TILE = 32  # sm_90: the merge at 8 rows a program and tile 32 uses 193 registers, at 64 it spills (aot_check)
MERGE_REGISTERS = (0, 128)  # the merge's register caps compiled, spills checked (aot_check); 0: no cap


@dataclass(frozen=True)
class SplitConfig:
    """Tile and work-split parameters (defaults measured on the H200, docs/benchmarks.md).

    block_n: keys per inner iteration (a whole number of chunks, power of two); warps, stages: Triton's
    ``num_warps`` / ``num_stages``; ctas_per_sm: programs per SM of the fixed grid (``P = ctas_per_sm *
    SMs``); min_chunks: fewest chunks a program takes when there is little work; merge_tile: (partial slot, query
    row) pairs the merge kernel combines per iteration (power of two; a merge program of RB rows takes
    ``max(1, merge_tile // RB)`` partial slots at a time, so a list covered by many split programs takes fewer
    dependent rounds of loads at a larger tile; at most ``MAX_MERGE_TILE``); fused_merge: no merge launch, the last
    split program to finish a list merges it (its partials read back from L2; a list of no chunks merged by program
    ``list % P``), saving the merge kernel's launch and its own dependent loads at the cost of one program merging a
    whole list; merge_registers: the merge kernel's register cap per thread (Triton's ``maxnreg``; 0: the compiler's
    choice). At 8 rows a program and tile 16 the merge takes 135-164 registers on sm_90 (3 programs of 4 warps an
    SM); at 128 4 fit, spilling 40 bytes at 8 rows (own keys one at a time), none at fewer (aot_check). Measured on
    an H100 (docs/benchmarks.md, twentieth session, own keys as a tile then): no faster at batch 16, where it was meant
    to save a wave; 0.5-1.3 us faster at Llama-3.1-8B batch 1 and the real pair's dense shapes; within 0.4 us
    elsewhere, never slower by more than 0.1. Not the default (untimed end to end).
    """

    block_n: int = 64
    warps: int = 4
    stages: int = 3
    ctas_per_sm: int = 2
    min_chunks: int = 8
    merge_tile: int = 16
    fused_merge: bool = False
    merge_registers: int = 0

    def __post_init__(self) -> None:
        if self.fused_merge not in (0, 1):
            raise ValueError(f"{self}: fused_merge is true or false")
        object.__setattr__(self, "fused_merge", bool(self.fused_merge))  # 0/1 from configs' integer fields
        if any(x < 1 or x & (x - 1) for x in (self.block_n, self.merge_tile)) or min(
                self.warps, self.stages, self.ctas_per_sm, self.min_chunks) < 1:
            raise ValueError(f"{self}: block_n and merge_tile must be powers of two, the others >= 1")
        if self.merge_tile > MAX_MERGE_TILE:
            raise ValueError(f"{self}: merge_tile at most {MAX_MERGE_TILE} (larger tiles spill registers)")
        if self.merge_registers not in MERGE_REGISTERS:
            raise ValueError(f"{self}: merge_registers is one of {MERGE_REGISTERS} (the caps checked for spills; "
                             "0: no cap)")
