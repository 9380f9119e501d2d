"""The draft's own KV reads in speculative decoding (``decode.draft_reads``): which prefix chunks each
draft forward reads, the selections that decide it, and the draft's read accounting.

A step of a sequence whose last accepted token is at ``P`` (prefix ``[0, P)``) runs ``gamma`` draft
forwards: forward 0 feeds positions ``P - 1, P`` (only the row at ``P`` is a draft row of the step),
forward ``f >= 1`` feeds ``P + f``. Chunks are ``chunk_size`` keys; the prefix chunks are those holding
keys ``< P`` (``ceil(P / chunk_size)`` of them, the last one possibly partial). Draft layers
``i < draft_dense_layers`` (default: the run's ``dense_layers``) always read densely; in every other draft layer (a *policy layer*) a forward reads
the chunks of its read set ``R_i``, restricted to keys ``< P``, plus the step's own keys causally
(:func:`specattn.core.visibility.draft_visible_keys`: the row at ``r`` sees key ``j`` iff ``j <= r`` and
``j >= P``, ``j``'s chunk is in ``R_i``, or ``j == r``). Per policy:

* ``dense``: ``R_i`` = every prefix chunk (today's decoder);
* ``first_dense``: forward 0 reads densely; its row at ``P`` in layer ``i``, head-aggregated as the run's
  ``head_agg`` (``mean`` | ``max``), gives ``S_i`` = the prefix chunks holding the row's nucleus at mass
  ``draft_p`` (:func:`specattn.methods.nucleus.nucleus_chunk_mask` over keys ``[0, P]``); forwards
  ``1 .. gamma - 1`` read ``R_i = S_i`` and the chunk holding key ``P - 1`` (the last accepted token's: the
  graph decoder's kernels read a forward's own keys by whole chunks, and this makes the two decoders read
  the same keys);
* ``reuse``: steps are counted per sequence from its first decoding step (step 0); step ``s`` with
  ``s % draft_refresh == 0`` is a refresh step (every forward dense); any other step's forwards all read
  ``R_i = S_i^prev`` plus the chunks holding keys ``[P_prev, P)`` (the tokens accepted since). After every
  step, ``S_i`` = the union over the step's ``gamma`` draft rows (positions ``P .. P + gamma - 1``, as the
  draft computed them under its reads, rejected ones included) of their nucleus chunks, restricted to
  the prefix chunks ``[0, P)``; ``S_i^prev``, ``P_prev`` are those of the previous step;
* ``window`` (MagicDec's StreamingLLM draft): every forward reads the chunks holding keys
  ``[0, draft_sinks)`` and ``[max(0, P - draft_window), P)``;
* ``first_window``: forward 0 reads densely, so its row at ``P`` sees the whole prefix; forwards
  ``1 .. gamma - 1`` read ``window``'s chunks. The draft's cost is nearly ``window``'s, while the verifier's
  selection keeps one fully informed draft row per step (``window`` collapses it to the window).

The verifier's selection (SpecAttn and every draft-row method) is unchanged: each row's nucleus in the
mapped draft layer, from the draft rows as the draft computed them (probabilities are zero on keys the
row did not read), OR-ed over the step's rows. So under ``first_dense`` and ``first_window`` the row at ``P``
brings a nucleus over the whole prefix and the others add chunks of their read sets only; under ``window``
every row's nucleus lies in the window; under ``reuse`` the rows see the previous step's selection.

Accounting (:class:`DraftKVReads`, the draft's counterpart of :class:`~specattn.core.kv_reads.KVReads`):
per draft forward, draft layer and draft KV head, a forward's reads are those of its last query row
(at ``r = P + f``): densely ``r + 1`` keys; in a policy layer reading ``R_i``, the prefix keys of ``R_i``
(a partial last chunk by its prefix keys) plus the forward's ``f + 1`` own keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.checks import SettingError, fraction, nonnegative_int, positive_int
from ..core.heads import aggregate_heads
from ..core.kv_reads import KVReads
from ..core.layout import StepLayout
from ..core.settings import Settings
from ..methods.nucleus import nucleus_chunk_mask

DRAFT_READS = ("dense", "first_dense", "reuse", "window", "first_window")
DENSE_FIRST = ("first_dense", "first_window")  # forward 0 reads densely
WINDOWED = ("window", "first_window")  # the read sets are the sinks and the recent window
SELECTION_HEADS = ("mean", "max")  # head aggregations of the draft's own selection


def check_draft_reads(reads, p, refresh, window, sinks, head_agg, refresh_below=0, dense_layers=None) -> None:
    """Raise a one-line :class:`SettingError` (``decode.*`` keys) for bad draft-read settings."""
    if reads not in DRAFT_READS:
        raise SettingError("decode.draft_reads", reads, f"is unknown: allowed are {', '.join(DRAFT_READS)}",
                           "first_dense")
    fraction(p, "decode.draft_p", "0.95")
    positive_int(refresh, "decode.draft_refresh", "8")
    positive_int(window, "decode.draft_window", "1024")
    nonnegative_int(sinks, "decode.draft_sinks", "16")
    nonnegative_int(refresh_below, "decode.draft_refresh_below", "2")
    if dense_layers is not None:
        nonnegative_int(dense_layers, "decode.draft_dense_layers", "0")
    if reads != "dense" and head_agg not in SELECTION_HEADS:
        raise SettingError("head_agg", head_agg, f"cannot aggregate the draft's own rows under "
                           f"decode.draft_reads={reads}: use {' or '.join(SELECTION_HEADS)}", "mean")


def chunks_holding(lo: int, hi: int, n_chunks: int, chunk_size: int) -> torch.Tensor:
    """``(n_chunks,)`` bool: the chunks holding at least one key of ``[lo, hi)``."""
    first = torch.arange(n_chunks) * chunk_size
    return (first < hi) & (first + chunk_size > lo)


def window_chunks(prefix: int, sinks: int, window: int, chunk_size: int) -> torch.Tensor:
    """``(ceil(prefix / chunk_size),)`` bool: the chunks holding the sinks ``[0, sinks)`` or the recent
    window ``[max(0, prefix - window), prefix)``."""
    n = math.ceil(prefix / chunk_size)
    return chunks_holding(0, sinks, n, chunk_size) | chunks_holding(max(0, prefix - window), prefix, n, chunk_size)


def prefix_keys(chunks: torch.Tensor, prefix: int, chunk_size: int) -> int:
    """Keys of ``[0, prefix)`` that the ``chunks (C,)`` hold (a partial last chunk by its prefix keys)."""
    first = torch.arange(chunks.numel()) * chunk_size
    per_chunk = (prefix - first).clamp(min=0, max=chunk_size)
    return int((per_chunk * chunks.cpu().long()).sum())


def _fit(chunks: torch.Tensor, n: int) -> torch.Tensor:
    """``chunks`` cut or zero-padded to ``n`` entries."""
    return torch.nn.functional.pad(chunks[:n], (0, max(0, n - chunks.numel())), value=False)


@dataclass
class DraftKVReads(KVReads):
    """The draft's reads (module docstring) in :class:`KVReads`' fields (``sparse_layer_*``: the policy
    layers ``i >= dense_layers``), plus the prefix keys read and held by the forwards that read a policy
    layer sparsely: ``kept`` is the draft's measured kept fraction of the prefix there (the roofline's
    ``draft_kept``)."""

    sparse_forward_reads: int = 0
    sparse_forward_prefix: int = 0

    def __iadd__(self, other: "DraftKVReads") -> "DraftKVReads":
        super().__iadd__(other)
        self.sparse_forward_reads += other.sparse_forward_reads
        self.sparse_forward_prefix += other.sparse_forward_prefix
        return self

    @property
    def kept(self) -> float:
        """Read share of the prefix keys in sparse forwards (NaN when none read sparsely)."""
        return self.sparse_forward_reads / self.sparse_forward_prefix if self.sparse_forward_prefix else math.nan


class DraftReadPolicy:
    """One sequence's draft reads under ``settings.draft_reads`` (module docstring).

    Per step: :meth:`begin_step`, then for each forward :meth:`reads` and :meth:`row_sinks` (for the
    draft's :class:`~specattn.hooks.draft_capture.DraftObserver`), then :meth:`end_step`.
    """

    def __init__(self, settings: Settings, n_draft_layers: int, draft_kv_heads: int):
        s = settings
        check_draft_reads(s.draft_reads, s.draft_p, s.draft_refresh, s.draft_window, s.draft_sinks, s.head_agg,
                          s.draft_refresh_below, s.draft_dense_layers)
        self.settings, self.n_layers, self.kv_heads = settings, n_draft_layers, draft_kv_heads
        self.layers = range(min(s.draft_dense, n_draft_layers), n_draft_layers)  # the policy layers
        self.step = 0  # steps taken (reuse's refresh schedule)
        self.low_acceptance = False  # the last step accepted fewer than draft_refresh_below drafted tokens
        self.selection: dict[int, torch.Tensor] = {}  # layer -> S_i (bool over the prefix chunks it was made for)
        self.last_prefix: int | None = None

    @classmethod
    def for_pair(cls, pair, settings: Settings) -> "DraftReadPolicy":
        return cls(settings, pair.n_draft_layers, pair.draft.config.num_key_value_heads)

    @property
    def refresh(self) -> bool:
        """This step reads densely throughout (reuse's every ``draft_refresh``-th step, from step 0, and, with
        ``draft_refresh_below``, the step after one that accepted fewer drafted tokens than that)."""
        return self.step % self.settings.draft_refresh == 0 or self.low_acceptance

    def accepted(self, kept: int) -> None:
        """The verifier accepted ``kept`` of the step's drafted tokens (after :meth:`end_step`)."""
        self.low_acceptance = kept < self.settings.draft_refresh_below

    def begin_step(self, layout: StepLayout) -> None:
        """A step whose prefix is ``[0, layout.prefill_len)``."""
        s = self.settings
        self.prefix, self.size = layout.prefill_len, layout.chunk_size
        self.n_chunks = math.ceil(self.prefix / self.size)
        self.observed: dict[int, torch.Tensor] = {}  # layer -> nucleus chunks of the step's draft rows so far
        self.read_log: list[dict[int, torch.Tensor] | None] = []  # each forward's reads, for the accounting
        self.common = None  # the reads every forward of the step shares (None: dense)
        if s.draft_reads in WINDOWED:
            chunks = window_chunks(self.prefix, s.draft_sinks, s.draft_window, self.size)
            self.common = {layer: chunks for layer in self.layers}
        elif s.draft_reads == "reuse" and not self.refresh:
            new = chunks_holding(self.last_prefix, self.prefix, self.n_chunks, self.size)
            self.common = {layer: _fit(self.selection[layer], self.n_chunks) | new for layer in self.layers}

    def reads(self, forward: int) -> dict[int, torch.Tensor] | None:
        """Draft layer -> ``(n_chunks,)`` bool prefix chunks forward ``forward`` reads (None: all dense)."""
        if self.settings.draft_reads == "first_dense" and forward > 0:
            recent = chunks_holding(self.prefix - 1, self.prefix, self.n_chunks, self.size)
            plan = {layer: self.observed[layer] | recent for layer in self.layers}
        elif self.settings.draft_reads == "first_window" and forward == 0:
            plan = None
        else:
            plan = self.common
        self.read_log.append(plan)
        return plan

    def row_sinks(self, forward: int) -> dict[int, list[Callable]]:
        """Draft layer -> callbacks for the draft rows this forward computes that the policy selects from."""
        mode = self.settings.draft_reads
        if mode == "reuse" or (mode == "first_dense" and forward == 0):
            return {layer: [self.observe] for layer in self.layers}
        return {}

    def observe(self, layer: int, probs: torch.Tensor, rows: torch.Tensor) -> None:
        """Draft layer ``layer``'s per-head probabilities ``(Hq, R, K)`` of draft rows at ``rows (R,)``:
        OR their nucleus chunks (head-aggregated, prefix chunks only) into the step's selection."""
        s = self.settings
        aggregated = aggregate_heads(probs, s.head_agg, 1, 1)  # (1, R, K): mean or max over query heads
        chunks = nucleus_chunk_mask(aggregated, s.draft_p, self.size)[0].any(dim=0).cpu()
        chunks = _fit(chunks, self.n_chunks)
        self.observed[layer] = self.observed[layer] | chunks if layer in self.observed else chunks

    def end_step(self, counts: DraftKVReads | None) -> None:
        """Count the step's forwards into ``counts`` (None: not counted, e.g. a finished sequence) and
        keep the selection for the next step."""
        if counts is not None:
            self._count(counts)
        if self.settings.draft_reads == "reuse":
            self.selection = self.observed
        self.last_prefix = self.prefix
        self.step += 1

    def _count(self, counts: DraftKVReads) -> None:
        p, heads = self.prefix, self.kv_heads
        for forward, plan in enumerate(self.read_log):
            dense = p + forward + 1  # the keys the forward's last row (at P + forward) sees
            for layer in range(self.n_layers):
                chunks = None if plan is None else plan.get(layer)
                read = dense if chunks is None else prefix_keys(chunks, p, self.size) + forward + 1
                counts.reads += read * heads
                counts.dense_reads += dense * heads
                if layer in self.layers:
                    counts.sparse_layer_reads += read * heads
                    counts.sparse_layer_dense_reads += dense * heads
                if chunks is not None:
                    counts.sparse_forward_reads += (read - forward - 1) * heads
                    counts.sparse_forward_prefix += p * heads
