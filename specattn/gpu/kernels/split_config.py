"""The split-KV kernel's tile and work-split parameters (plain data: importable without Triton)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_MERGE_TILE = 32  # sm_90, one row a merge program: 32 slots a round use 168 registers, 64 spill 152 bytes (aot_check)


@dataclass(frozen=True)
class SplitConfig:
    """Tile and work-split parameters (defaults measured on the H200, docs/benchmarks.md).

    block_n: keys per inner iteration (a whole number of chunks, power of two); warps, stages: Triton's
    ``num_warps`` / ``num_stages``; ctas_per_sm: programs per SM of the fixed grid (``P = ctas_per_sm *
    SMs``); min_chunks: fewest chunks a program takes when there is little work; merge_tile: partial slots the merge
    kernel combines a round at most (power of two, at most ``MAX_MERGE_TILE``): a round takes the partials a list has
    when the work is even, ``P / lists + 1`` to a power of two, up to this (``sparse_attn.merge_slots``: one round
    where a list is covered by many split programs, no masked slots where by one or two); fused_merge: no merge
    launch, the last split program to finish a list merges it (its partials read back from L2; a list of no chunks
    merged by program ``list % P``), saving the merge kernel's launch and its own dependent loads at the cost of one
    program merging a whole list; pdl: the merge kernel launched as a programmatic dependent of the split kernel
    (Hopper or later; ignored elsewhere and with fused_merge): its programs take SM room as split programs leave,
    attend the step's own keys, then wait for the split's partials (the launch gap and the split's tail overlap the
    merge's start); steal: the percent of the units (blocks of a list's chunks) left to run time, in ranges (up to
    ``steal_ranges`` a program on average), each taken by the next split program to finish its last (program p first
    takes its static range of the rest): the programs of one launch take 40-53 us for equal shares (Llama-3.1-8B
    batch 4, 25% kept, scripts/gpu/split_timeline.py), the slowest setting the kernel's end; 0: every share fixed;
    steal_ranges: dynamic ranges a program takes on average at most (a range is ``ceil(pool / (steal_ranges * P))``
    units, the tail's grain: at 2, 2 units of about 6 us each at that shape, where steal=25 lost 2.8 us; twenty-sixth
    session).
    """

    block_n: int = 64
    warps: int = 4
    stages: int = 3
    ctas_per_sm: int = 2
    min_chunks: int = 8
    merge_tile: int = 32
    fused_merge: bool = False
    pdl: bool = True
    steal: int = 0
    steal_ranges: int = 2

    def __post_init__(self) -> None:
        for flag in ("fused_merge", "pdl"):
            if getattr(self, flag) not in (0, 1):
                raise ValueError(f"{self}: {flag} is true or false")
            object.__setattr__(self, flag, bool(getattr(self, flag)))  # 0/1 from configs' integer fields
        if any(x < 1 or x & (x - 1) for x in (self.block_n, self.merge_tile)) or min(
                self.warps, self.stages, self.ctas_per_sm, self.min_chunks) < 1:
            raise ValueError(f"{self}: block_n and merge_tile must be powers of two, the others >= 1")
        if not 0 <= self.steal <= 90:
            raise ValueError(f"{self}: steal is a percent of the work in 0..90 (0: every program's share fixed)")
        if not 1 <= self.steal_ranges <= 64:
            raise ValueError(f"{self}: steal_ranges is the dynamic ranges a program takes on average, 1..64")
        if self.steal and self.fused_merge:
            raise ValueError(f"{self}: steal needs the merge launch (fused_merge=false)")
        if self.merge_tile > MAX_MERGE_TILE:
            raise ValueError(f"{self}: merge_tile at most {MAX_MERGE_TILE} (larger tiles spill registers)")
