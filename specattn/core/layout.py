"""Geometry of one evaluated sample: dense prefill, verification steps, chunks and KV accounting.

A sample of ``seq_len`` tokens is fed as ``n_positions = seq_len - 1`` input positions (position
``t`` predicts token ``t + 1``). Positions ``[0, prefill_len)`` are prefilled densely; the scored
positions ``[prefill_len, n_positions)`` are split into verification steps of ``gamma + 1`` rows,
as in speculative decoding where the verifier checks ``gamma`` drafted tokens plus the last
accepted one. Step ``s`` covers rows ``[start_s, end_s)``:

* its *prefix* is the keys ``[0, start_s)`` (the KV cache before the step): sparse layers read
  only the selected chunks of it;
* its *tail* is the keys ``[start_s, end_s)`` (the step's own tokens): always read, causally;
* its *draft rows* are ``[start_s, start_s + min(gamma, end_s - start_s))``: the query positions
  at which the draft computed attention while proposing the step's tokens.

Chunks are ``chunk_size`` consecutive keys, ``chunk c = [c * chunk_size, (c + 1) * chunk_size)``;
the prefix's last chunk may be partial (only keys < start_s of it exist for the step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from .errors import SpecAttnError


@dataclass(frozen=True)
class StepLayout:
    """Step and chunk geometry of one sample (all positions are token indices)."""

    seq_len: int
    prefill_len: int
    gamma: int
    chunk_size: int

    def __post_init__(self) -> None:
        if self.gamma < 1:
            raise SpecAttnError(f"gamma={self.gamma} must be a positive integer (e.g. gamma=4)")
        if self.chunk_size < 1:
            raise SpecAttnError(f"chunk_size={self.chunk_size} must be a positive integer (e.g. chunk_size=16)")
        if not 1 <= self.prefill_len < self.n_positions:
            raise SpecAttnError(
                f"prefill of {self.prefill_len} tokens leaves no scored position in a {self.seq_len}-token sample: "
                "use a prefill_frac in (0, 1) and a context_len of at least a few tokens"
            )

    @classmethod
    def for_sample(cls, seq_len: int, prefill_frac: float, gamma: int, chunk_size: int) -> "StepLayout":
        """Layout with ``prefill_len = max(1, floor(prefill_frac * seq_len))``."""
        return cls(seq_len, max(1, int(prefill_frac * seq_len)), gamma, chunk_size)

    @property
    def n_positions(self) -> int:
        """Input positions fed to the models (the last token is only a target)."""
        return self.seq_len - 1

    @property
    def step_len(self) -> int:
        """Verifier rows per step: gamma drafted tokens + the last accepted one."""
        return self.gamma + 1

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_positions / self.chunk_size)

    @property
    def n_scored(self) -> int:
        return self.n_positions - self.prefill_len

    @property
    def n_steps(self) -> int:
        return math.ceil(self.n_scored / self.step_len)

    @cached_property
    def step_starts(self) -> torch.Tensor:
        """``(n_steps,)`` first row of each step."""
        return torch.arange(self.n_steps) * self.step_len + self.prefill_len

    @cached_property
    def step_ends(self) -> torch.Tensor:
        """``(n_steps,)`` one past the last row of each step."""
        return (self.step_starts + self.step_len).clamp(max=self.n_positions)

    def step_of(self, rows: torch.Tensor) -> torch.Tensor:
        """Step index of each row position, ``-1`` for prefill rows. ``rows``: ``(R,)`` long."""
        steps = torch.div(rows - self.prefill_len, self.step_len, rounding_mode="floor")
        return torch.where(rows >= self.prefill_len, steps, torch.full_like(rows, -1))

    def is_draft_row(self, rows: torch.Tensor) -> torch.Tensor:
        """``(R,)`` bool: the row is one of its step's first ``gamma`` rows (the draft computed it)."""
        offset = (rows - self.prefill_len) % self.step_len
        return (rows >= self.prefill_len) & (rows < self.n_positions) & (offset < self.gamma)

    @cached_property
    def draft_rows(self) -> torch.Tensor:
        """``(n_draft_rows,)`` all draft row positions in order; consecutive groups of gamma form steps."""
        rows = torch.arange(self.prefill_len, self.n_positions)
        return rows[self.is_draft_row(rows)]

    def step_rows(self, step: int) -> tuple[int, int]:
        """``(start, end)`` rows of one step."""
        return int(self.step_starts[step]), int(self.step_ends[step])

    @cached_property
    def prefix_keys_per_chunk(self) -> torch.Tensor:
        """``(n_steps, n_chunks)`` long: how many keys of each chunk lie in each step's prefix."""
        chunk_lo = torch.arange(self.n_chunks) * self.chunk_size
        in_prefix = self.step_starts[:, None] - chunk_lo[None, :]
        return in_prefix.clamp(min=0, max=self.chunk_size)

    @cached_property
    def prefix_chunks(self) -> torch.Tensor:
        """``(n_steps, n_chunks)`` bool: the chunk holds at least one prefix key of the step."""
        return self.prefix_keys_per_chunk > 0
