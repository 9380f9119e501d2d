"""Speculative decoding on the device: static buffers, CUDA graphs, one host read per step.

The same decoding as :class:`specattn.decode.engine.SpeculativeDecoder` with greedy acceptance (same
conventions, so the two agree token for token), restructured so that a whole verification step runs
on the device with no host decision:

* **state on the device**: the token buffer ``tokens (B, capacity + gamma + 2)``, each sequence's last
  accepted position ``last (B,)`` (``P_b``), both models' static :class:`SequenceKVCache`, the drafted
  tokens, the accepted counts;
* **draft phase** (one CUDA graph): the draft's cache keeps ``[0, P_b - 1)``; its first forward feeds
  tokens ``P_b - 1, P_b``, then one drafted token per forward (``gamma`` forwards, greedy). Each draft
  layer whose rows are needed saves its last query row and that row's log-sum-exp (``ForwardPlan.taps``);
  under a draft read policy (below) each forward's policy layers read chunk lists built on the device;
* **verify phase** (one CUDA graph): the selection, then the verifier scores ``x_{P_b}, d_1 .. d_gamma``
  with its sparse layers (all but the first ``dense_layers``) reading their chunk lists, greedy acceptance,
  commit of the accepted tokens and both caches' lengths, all on the device;
* the host reads only ``kept (B,)`` (the accepted counts) after each step.

**Verification** (``GraphSettings.verify``): ``dense``; ``specattn`` (the head-aggregated draft rows of
every needed draft layer recomputed in one launch, :func:`specattn.gpu.draft_rows.draft_rows`, and every
layer's chunks selected at once, :func:`specattn.gpu.step.select_chunks`; verifier layer ``j`` reads the
lists of draft layer ``layer_map[j]``); ``oracle``: the verifier's own per-head nucleus at ``p`` (each sparse layer
attends densely once more to select: a reference, never a speedup); ``streaming`` and ``quest``: the budgeted baselines of
:mod:`specattn.methods` with their chunk lists built on the device (StreamingLLM: sinks then the most
recent chunks; Quest: per-page key min/max kept on the device as keys are committed, scored per layer from
its queries inside the forward, one list per KV head), each within ``kv_budget_frac`` of the dense reads.
``gamma = 0`` is autoregressive decoding (the verifier alone, one token per step).

**Draft reads** (``GraphSettings.draft_reads``; the CPU engine implements the same definitions): in draft
layers ``i >= draft_dense_layers`` (default ``dense_layers``), a draft forward ``f`` reads the listed chunks of its prefix plus its own
rows' keys; the list is a base read set ``R_i`` united with the chunks holding keys ``[P, P + f)`` (the
step's own earlier tokens):

* ``dense``: every prefix chunk;
* ``first_dense``: forward 0 reads everything; ``R_i`` = the chunks of the nucleus (mass ``p``) of layer
  ``i``'s head-aggregated row at position ``P``, and the chunk holding key ``P - 1``;
* ``reuse``: every ``draft_refresh``-th step (per sequence, from the first) reads everything; the others
  read ``R_i`` = the previous step's selection of layer ``i`` united with the chunks holding the tokens
  accepted since; each step's selection of layer ``i`` is the union of the nuclei of its ``gamma`` rows;
* ``window``: ``R_i`` = the chunks holding keys ``[0, draft_sinks)`` and ``[P - draft_window, P)``;
* ``first_window``: forward 0 reads everything, the others ``window``'s ``R_i``.

The verifier's SpecAttn selection is always the union over the step's ``gamma`` draft rows of their
nuclei, from the rows as the draft computed them: a row's probabilities are zero on the keys its forward
did not read. Under ``first_dense`` / ``first_window`` row 0 (the step's only row over the whole prefix) is
computed in the draft phase right after forward 0 (``first_dense``'s selection needs it there), the other rows in
the verify phase; the rows' launch skips the key blocks no row keeps, so windowed and reused rows cost about their
read sets, not the cache. A draft layer both selections use (the verifier's map and ``first_dense`` / ``reuse``'s own)
is one row slot (:meth:`GraphSettings.row_layers`), its rows computed once; the verify phase recomputes rows only
for the slots a selection still needs (under ``first_dense`` the map's: the draft's own came from row 0).

Two labelled controls replace what random weights make meaningless: ``forced_kept`` (the accepted counts
follow a fixed cycle instead of the verifier's argmax: its mean + 1 is tau) and ``forced_density`` (the
selection still runs, but the verifier reads a fixed random selection of that fraction of each
sequence's prefix chunks). On CUDA with fp16/bf16 everything runs in Triton kernels and the phases are
captured in CUDA graphs (:meth:`GraphDecoder.capture`); on the CPU (or in float32) the same code runs
eagerly on torch fallbacks (float32 also captures on CUDA: the fallbacks read nothing on the host).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import torch

from ..core.errors import SpecAttnError
from ..gpu.attention.sparse import ChunkLists, chunk_lists
from ..gpu.draft_rows import AGGREGATIONS, RowReads, draft_rows, rows_from_scores
from ..gpu.kernels.rows_config import RowsConfig
from ..gpu.kernels.split_config import SplitConfig
from ..gpu.step import select_chunks
from ..hooks.forward import cache_kwargs
from ..hooks.graph_attention import GRAPH_ATTENTION, ForwardPlan, RowTap, use_kernels
from ..methods.budget import top_chunks
from ..methods.quest import QUEST_MIN_PAGES
from .draft_reads import DENSE_FIRST, DRAFT_READS, WINDOWED
from .engine import prefill_groups
from .kv_cache import SequenceKVCache
from .quest_pages import QuestPages

VERIFY_MODES = ("dense", "specattn", "streaming", "quest", "oracle")


@dataclass(frozen=True)
class GraphSettings:
    """One decoding mode of the graph decoder (module docstring).

    gamma: drafted tokens per step (0: autoregressive); p: SpecAttn's nucleus mass (also the draft's own
    selection under ``first_dense`` / ``reuse``); layer_map: draft layer of each verifier layer;
    forced_kept: accepted counts, cycled over the steps (None: greedy acceptance); forced_density: the kept
    fraction of prefix chunks the verifier reads (a SpecAttn control); verify: ``dense`` | ``specattn`` |
    ``streaming`` | ``quest`` | ``oracle`` (None: ``specattn`` if ``p`` is set, else ``dense``); kv_budget_frac and
    n_sinks: the budgeted baselines'; draft_reads, draft_refresh, draft_window, draft_sinks: the draft's
    read policy; forced_draft_density: the policy's control (``first_dense`` / ``reuse``: the read sets are a
    fixed random fraction of the prefix chunks instead of the draft's selections, as ``forced_density``);
    split, rows: the attention kernel's and the draft-row kernel's launches (None: their defaults);
    sparse_split: the attention kernel's launch in the layers that read chunk lists, both models (None: split's);
    draft_split: the attention kernel's launch in the draft's dense layers (None: split's; the draft reads its whole
    cache one row at a time, the verifier T = gamma + 1 rows: their best launches differ);
    draft_dense_layers: the first draft layers that read densely under a draft read policy (None: dense_layers);
    row0_from_scores: the ``first_*`` policies' row 0 from the scores forward 0's attention kernel saves (True; the
    kernel path only) rather than from the draft's keys again.
    """

    gamma: int
    chunk_size: int = 16
    dense_layers: int = 2
    head_agg: str = "mean"
    layer_map: tuple[int, ...] = ()
    p: float | None = None
    forced_kept: tuple[int, ...] | None = None
    forced_density: float | None = None
    verify: str | None = None
    kv_budget_frac: float | None = None
    n_sinks: int = 4
    draft_reads: str = "dense"
    draft_refresh: int = 8
    draft_refresh_below: int = 0
    draft_window: int = 1024
    draft_sinks: int = 16
    forced_draft_density: float | None = None
    split: SplitConfig | None = None
    rows: RowsConfig | None = None
    sparse_split: SplitConfig | None = None
    draft_dense_layers: int | None = None
    row0_from_scores: bool = True
    draft_split: SplitConfig | None = None

    @property
    def draft_dense(self) -> int:
        """The first draft layers that read densely under a draft read policy."""
        return self.dense_layers if self.draft_dense_layers is None else self.draft_dense_layers

    def policy_layers(self, n_draft: int) -> list[int]:
        """The draft layers that read under the draft read policy (none under ``dense`` or autoregressive)."""
        return list(range(self.draft_dense, n_draft)) if self.draft_reads != "dense" and self.gamma else []

    def row_layers(self, n_verifier: int, n_draft: int) -> tuple[list[int], list[int]]:
        """``(rows, selecting)``: the distinct draft layers whose rows a step recomputes, ascending (one row slot
        each), and those of them whose rows SpecAttn's sparse verifier layers select from (the map's, none outside
        SpecAttn). ``first_dense`` and ``reuse`` also recompute every policy layer's rows (the draft's own
        selection); a layer in both is one slot, its rows computed and selected once."""
        selecting = (sorted({self.layer_map[j] for j in range(self.dense_layers, n_verifier)})
                     if self.mode == "specattn" else [])
        own = self.policy_layers(n_draft) if self.draft_reads in ("first_dense", "reuse") else []
        return sorted(set(selecting) | set(own)), selecting

    def roofline_layers(self, n_verifier: int, n_draft: int) -> tuple[int, int]:
        """``(needed_layers, shared_layers)`` as :func:`specattn.decode.roofline.step_bytes` counts them: the draft
        layers SpecAttn's selection reads rows of, and how many of them are policy layers too."""
        selecting = self.row_layers(n_verifier, n_draft)[1]
        return len(selecting), len(set(self.policy_layers(n_draft)).intersection(selecting))

    @property
    def mode(self) -> str:
        if self.gamma == 0:
            return "ar"
        return self.verify or ("dense" if self.p is None else "specattn")

    @property
    def tau(self) -> float | None:
        """Mean tokens per step under forced acceptance."""
        return None if self.forced_kept is None else 1 + sum(self.forced_kept) / len(self.forced_kept)

    def check(self, n_verifier: int) -> None:
        """One-line errors for settings the decoder cannot run."""
        mode, reads = self.mode, self.draft_reads
        if self.gamma < 0 or self.chunk_size < 1:
            raise SpecAttnError(f"gamma={self.gamma} must be >= 0 and chunk_size={self.chunk_size} >= 1")
        if mode not in ("ar", *VERIFY_MODES):
            raise SpecAttnError(f"verify={self.verify!r} is unknown: allowed are {', '.join(VERIFY_MODES)}")
        if reads not in DRAFT_READS:
            raise SpecAttnError(f"draft_reads={reads!r} is unknown: allowed are {', '.join(DRAFT_READS)}")
        if (mode in ("specattn", "oracle") or reads in ("first_dense", "reuse")) and self.p is None:
            raise SpecAttnError(f"verify={mode} with draft_reads={reads} needs p (the nucleus mass)")
        if (mode == "specattn" or reads != "dense") and self.head_agg not in AGGREGATIONS:
            raise SpecAttnError(f"head_agg={self.head_agg!r}: the graph decoder supports {', '.join(AGGREGATIONS)}")
        if mode in ("streaming", "quest") and self.kv_budget_frac is None:
            raise SpecAttnError(f"verify={mode} needs kv_budget_frac (the fraction of the dense reads)")
        if mode in ("specattn", "streaming", "quest") or reads != "dense":
            if len(self.layer_map) != n_verifier:
                raise SpecAttnError(f"layer_map has {len(self.layer_map)} entries for a verifier of {n_verifier} layers")
        if self.draft_refresh < 1 or self.draft_window < 0 or self.draft_sinks < 0 or self.draft_refresh_below < 0:
            raise SpecAttnError("draft_refresh must be >= 1, draft_window, draft_sinks and draft_refresh_below >= 0")
        if self.draft_dense < 0:
            raise SpecAttnError(f"draft_dense_layers={self.draft_dense_layers} must be >= 0 (None: dense_layers)")


def forced_schedule(tau: float, gamma: int, length: int = 16) -> tuple[int, ...]:
    """A cycle of ``length`` accepted counts in ``[0, gamma]`` whose mean is ``tau - 1`` (to 1/length)."""
    if not 1 <= tau <= gamma + 1:
        raise SpecAttnError(f"forced tau={tau} must lie in [1, gamma + 1 = {gamma + 1}]")
    mean = tau - 1
    return tuple(math.floor((i + 1) * mean + 1e-9) - math.floor(i * mean + 1e-9) for i in range(length))


@dataclass
class GraphDecoded:
    """Per sequence: generated tokens (cut at max_new_tokens), verification steps and kept drafted tokens."""

    tokens: list[list[int]]
    steps: list[int]
    kept: list[int]


def prefix_chunk_keys(prefix: torch.Tensor, n_cols: int, chunk_size: int) -> torch.Tensor:
    """``(B, n_cols)`` long: how many keys of each chunk lie in ``[0, prefix[b])``."""
    lo = torch.arange(n_cols, device=prefix.device) * chunk_size
    return (prefix.long()[:, None] - lo[None, :]).clamp(min=0, max=chunk_size)


def capacity_for(length: int, new_tokens: int, gamma: int) -> int:
    """Cache capacity for prompts of ``length`` decoded for ``new_tokens``: the prompt and ``gamma + 1`` tokens
    for each step a sequence can take. A sequence that has its new tokens keeps stepping until the batch's
    slowest one has its own (at least one token a step, so at most ``new_tokens`` steps), plus two steps in
    flight and a margin; a multiple of 64."""
    need = length + (new_tokens + 3) * (gamma + 1) + 8
    return -(-need // 64) * 64


def free_device_memory(device: torch.device | str | None = None) -> None:
    """Free what dropped decoders held: a :class:`GraphDecoder` is in reference cycles (its plans' Quest and oracle
    selectors are closures over it), so a decoder no longer referenced keeps its caches and graphs until Python's
    cycle collector runs, which may be after the next point has allocated its own (an out-of-memory error at 32K
    batch 32 on an H100 after batch 16, twenty-ninth session); then hand the allocator's cached blocks back."""
    gc.collect()
    if device is None or torch.device(device).type == "cuda":
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def chunks_holding(lo: torch.Tensor, hi: torch.Tensor, n_cols: int, chunk_size: int) -> torch.Tensor:
    """``(B, n_cols)`` bool: the chunk holds a key of ``[lo[b], hi[b])``."""
    start = torch.arange(n_cols, device=lo.device) * chunk_size
    return (start[None, :] < hi.long()[:, None]) & (start[None, :] + chunk_size > lo.long()[:, None])


def listed_keys(ids: torch.Tensor, n: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64: prefix keys in the listed chunks, summed over the lists of each sequence:
    ``ids (..., B, H, NC)`` / ``n (..., B, H)`` chunk lists, ``keys (B, NC)`` keys of each chunk
    (:func:`prefix_chunk_keys`)."""
    lead = ids.dim() - 3
    nc = ids.shape[-1]
    held = keys.view(*([1] * lead), keys.shape[0], 1, nc).expand(ids.shape).gather(-1, ids.long().clamp(0, nc - 1))
    listed = torch.arange(nc, device=ids.device) < n[..., None]
    dims = tuple(range(lead)) + (lead + 1, lead + 2)
    return (held * listed).double().sum(dim=dims)


class GraphDecoder:
    """The device-resident decoder of one (draft, verifier) pair, batch size, mode and cache capacity.

    ``caches=(verifier, draft)`` reuses existing caches (the benchmark shares them between modes);
    otherwise they are allocated here. Call :meth:`prefill` (or :meth:`reset_to` over filled caches),
    optionally :meth:`capture`, then :meth:`step` / :meth:`generate`.
    """

    def __init__(self, draft, verifier, settings: GraphSettings, batch: int, capacity: int,
                 caches: tuple[SequenceKVCache, SequenceKVCache | None] | None = None, count_sequences: bool = False):
        s = self.settings = settings
        settings.check(verifier.config.num_hidden_layers)
        self.draft, self.verifier = (draft if s.gamma else None), verifier
        for model in (self.draft, self.verifier):
            if model is not None:
                model.set_attn_implementation(GRAPH_ATTENTION)
        self.batch, self.capacity = batch, capacity
        self.device = verifier.device
        dev = self.device
        v_cache, d_cache = caches if caches is not None else (None, None)
        self.v_cache = v_cache or SequenceKVCache.for_model(verifier, batch, capacity)
        self.d_cache = (d_cache or SequenceKVCache.for_model(draft, batch, capacity)) if s.gamma else None
        if self.v_cache.capacity < capacity or (self.d_cache is not None and self.d_cache.capacity < capacity):
            raise SpecAttnError(f"the given caches hold fewer than capacity={capacity} tokens")
        t = s.gamma + 1
        self.n_cols = -(-capacity // s.chunk_size)
        self.tokens = torch.zeros((batch, capacity + t + 1), dtype=torch.long, device=dev)
        self.last = torch.zeros(batch, dtype=torch.long, device=dev)
        self.drafted = torch.zeros((batch, s.gamma), dtype=torch.long, device=dev)
        self.kept = torch.zeros(batch, dtype=torch.long, device=dev)
        self.v_len = torch.zeros(batch, dtype=torch.int32, device=dev)
        self.d_len = torch.zeros(batch, dtype=torch.int32, device=dev)
        self.step_index = torch.zeros((), dtype=torch.long, device=dev)
        self.seq_step = torch.zeros(batch, dtype=torch.long, device=dev)  # steps per sequence (reuse's refresh)
        self.prev_last = torch.zeros(batch, dtype=torch.long, device=dev)  # the previous step's P (reuse)
        # chunk reads of the sparse layers (verifier) vs dense, and the prefix chunks the draft's sparse forwards read in
        # the policy layers vs the prefix (kept_fractions), over the steps
        self.reads = torch.zeros(4, dtype=torch.float64, device=dev)  # verifier read, dense, draft read, prefix
        self.draft_sparse = torch.ones(batch, dtype=torch.bool, device=dev)  # this step reads sparsely (reuse)
        # the budgeted baselines' fraction of the dense reads, per sequence (settings.kv_budget_frac; set_budgets)
        self.budget_frac = torch.full((batch,), s.kv_budget_frac or 1.0, dtype=torch.float64, device=dev)
        # per sequence, cumulative, in (key, KV head) loads as specattn.core.kv_reads.KVReads counts them: reads,
        # dense reads, sparse-layer reads, sparse-layer dense reads (count_sequences: a few launches per step more)
        self.seq_reads = torch.zeros((4, batch), dtype=torch.float64, device=dev) if count_sequences else None
        self.selected_keys = torch.zeros(batch, dtype=torch.float64, device=dev)  # this step's reads (Quest, oracle)
        self.schedule = (torch.tensor(s.forced_kept, dtype=torch.long, device=dev) if s.forced_kept else None)
        if self.schedule is not None and not all(0 <= k <= s.gamma for k in s.forced_kept):
            raise SpecAttnError(f"forced accepted counts {s.forced_kept} must lie in [0, gamma={s.gamma}]")
        self.host_last = [0] * batch  # the host's copy of last, behind by `pending` steps
        self.pending = 0
        self.graphs: tuple | None = None
        self._build_plans()

    # ----------------------------------------------------------------------------------- plans
    def _workspace(self, model, n_queries, split: SplitConfig | None = None):
        """The split kernel's workspace for ``model``'s attention at ``n_queries`` rows and launch ``split``
        (None: settings.split); None where the kernels do not run."""
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if not use_kernels(self.device, model.dtype, head_dim):
            return None
        from ..gpu.kernels import sparse_attn as K

        return K.make_workspace(self.batch, config.num_key_value_heads,
                                config.num_attention_heads // config.num_key_value_heads, n_queries, head_dim,
                                split or self.settings.split or SplitConfig(), self.device)

    def _sparse_workspace(self, model, n_queries):
        """A workspace of its own for the layers that read chunk lists when ``sparse_split`` is set."""
        split = self.settings.sparse_split
        return None if split is None else self._workspace(model, n_queries, split)

    def _lists(self, *lead) -> ChunkLists:
        flat = ChunkLists.empty(math.prod(lead), 1, self.n_cols, self.device)
        return ChunkLists(flat.ids.view(*lead, 1, self.n_cols), flat.n.view(*lead, 1))

    def _build_plans(self) -> None:
        s, dev, b = self.settings, self.device, self.batch
        mode = s.mode
        n_verifier = self.verifier.config.num_hidden_layers
        n_draft = self.draft.config.num_hidden_layers if self.draft is not None else 0
        self.sparse = list(range(s.dense_layers, n_verifier)) if mode not in ("ar", "dense") else []
        self.policy_layers = s.policy_layers(n_draft)
        rows, selecting = s.row_layers(n_verifier, n_draft)
        needed = selecting + [layer for layer in rows if layer not in selecting]  # the verifier's slots first
        self.slots = {layer: i for i, layer in enumerate(needed)}
        # the slots whose rows the verify phase recomputes: under first_dense the draft's own selection came from row
        # 0 (the draft phase), so only the verifier's; under reuse every slot's (the next step's draft reads them)
        self.select_slots = len(selecting) if s.draft_reads == "first_dense" else len(needed)
        self.taps: list[dict[int, RowTap]] = [{} for _ in range(s.gamma)]
        lists_plan: dict[int, ChunkLists] = {}
        if needed:
            cfg = self.draft.config
            heads = cfg.num_attention_heads
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
            n_slots = len(needed)
            self.row_q = torch.zeros((n_slots, b, heads, s.gamma, head_dim), dtype=self.draft.dtype, device=dev)
            self.row_lse = torch.zeros((n_slots, b, heads, s.gamma), dtype=torch.float32, device=dev)
            self.rows = torch.zeros((n_slots, b, s.gamma, self.capacity), dtype=torch.float32, device=dev)
            self.lists = self._lists(n_slots, b)
            self.sel_mask = torch.zeros((n_slots, b, 1, self.n_cols), dtype=torch.bool, device=dev)
            self.layer_slots = torch.tensor(needed, dtype=torch.int32, device=dev)
            self.first = torch.zeros(b, dtype=torch.int32, device=dev)
            self.draft_scale = self.draft.model.layers[0].self_attn.scaling
            for i in range(s.gamma):
                self.taps[i] = {layer: RowTap(self.row_q[slot, :, :, i], self.row_lse[slot, :, :, i])
                                for layer, slot in self.slots.items()}
        if mode == "specattn":
            self.forced_lists = ChunkLists(torch.zeros_like(self.lists.ids), torch.zeros_like(self.lists.n))
            read = self.forced_lists if s.forced_density is not None else self.lists
            for j in self.sparse:
                slot = self.slots[s.layer_map[j]]
                lists_plan[j] = ChunkLists(read.ids[slot], read.n[slot])
            self.sparse_slots = torch.tensor([self.slots[s.layer_map[j]] for j in self.sparse], device=dev)
        elif mode in ("streaming", "quest", "oracle"):
            heads = 1 if mode == "streaming" else self.verifier.config.num_key_value_heads
            flat = ChunkLists.empty(b, heads, self.n_cols, dev)
            self.budget_lists = flat
            lists_plan = {j: flat for j in self.sparse} if mode == "streaming" else {}
        self.selectors = {}
        if mode == "quest":
            self._build_quest()
        elif mode == "oracle":
            self.selectors = {j: self._oracle_selector(j) for j in self.sparse}
        # row 0 of the first_* policies comes from the draft phase (the verify phase launches rows 1 ..)
        self.row0 = int(s.draft_reads in DENSE_FIRST and s.gamma > 1 and bool(self.slots))
        self.v_plan = ForwardPlan("decode", self.v_len, s.chunk_size, lists_plan, {},
                                  self._workspace(self.verifier, s.gamma + 1), self.selectors, s.split, s.sparse_split,
                                  self._sparse_workspace(self.verifier, s.gamma + 1))
        self.d_workspace = self._workspace(self.draft, 2, s.draft_split) if s.gamma else None
        self.d_sparse_workspace = self._sparse_workspace(self.draft, 2) if s.gamma else None
        self.row_scores = None  # (slots, B, Hq, K_cap) float32: forward 0's last row's scores (row0_from_scores)
        if self.row0 and s.row0_from_scores and self.d_workspace is not None:
            keys = self.d_cache.keys
            self.row_scores = torch.empty((len(self.slots), b, self.row_q.shape[2], keys.shape[3]),
                                          dtype=torch.float32, device=dev)
            for layer, slot in self.slots.items():
                self.taps[0][layer].scores = self.row_scores[slot]
        self._build_draft_reads()

    def _build_draft_reads(self) -> None:
        """Per draft forward, the policy layers' chunk lists (module docstring, "Draft reads")."""
        s = self.settings
        self.d_lists: list[dict[int, ChunkLists]] = [{} for _ in range(s.gamma)]
        self.select_reads = None
        if not self.policy_layers:
            return
        per_layer = s.draft_reads not in WINDOWED
        shape = (len(self.slots), self.batch) if per_layer else (1, self.batch)
        self.base_mask = torch.zeros((*shape, 1, self.n_cols), dtype=torch.bool, device=self.device)
        if s.forced_draft_density is not None:  # the control's read sets, drawn by reset_to
            self.forced_base = torch.zeros_like(self.base_mask)
        self.policy_slots = torch.tensor([self.slots[layer] for layer in self.policy_layers] if per_layer else [0],
                                         device=self.device)
        policy = torch.tensor([layer in self.policy_layers for layer in self.slots], dtype=torch.bool,
                              device=self.device)
        # each draft row zeroed at the prefix keys its forward did not read, by the rows' own launch (one launch for
        # every policy slot and forward; a separate pass cost 0.26 ms a step at 32K batch 16 on the H200, the mask
        # inside the launch 0.07 ms); the verify phase's rows are the first select_slots slots' (_select)
        n = self.select_slots
        self.select_reads = RowReads(self.base_mask[:n, :, 0], self.last, policy[:n], s.chunk_size,
                                     int(s.draft_reads in DENSE_FIRST), self.row0) if self.slots else None
        self.read_lists = [self._lists(*shape) for _ in range(s.gamma)]
        for f in range(s.gamma):
            if s.draft_reads in DENSE_FIRST and f == 0:
                continue
            lists = self.read_lists[f]
            for layer in self.policy_layers:
                slot = self.slots[layer] if per_layer else 0
                self.d_lists[f][layer] = ChunkLists(lists.ids[slot], lists.n[slot])

    def _build_quest(self) -> None:
        cfg = self.verifier.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.quest_pages = {j: QuestPages(self.batch, cfg.num_key_value_heads, self.n_cols, head_dim, self.device,
                                          self.v_cache.keys[j].dtype) for j in self.sparse}
        self.selectors = {j: self._quest_selector(j) for j in self.sparse}

    # ----------------------------------------------------------------------------------- state
    def _forward(self, model, tokens, positions, cache, plan) -> torch.Tensor:
        return model.base_model(input_ids=tokens, position_ids=positions, **cache_kwargs(model, cache),
                                specattn_graph=plan).last_hidden_state

    @torch.inference_mode()
    def prefill(self, prompts: torch.Tensor) -> None:
        """Prefill both caches with ``prompts (B, L)``, ``L >= 2``, as the CPU engine does: the verifier
        ``[0, L-1)``, the draft ``[0, L-2)``; position ``L - 1`` is the first step's last accepted token."""
        batch, length = prompts.shape
        if batch != self.batch or length < 2 or length + self.settings.gamma + 2 > self.capacity:
            raise SpecAttnError(f"prompts {tuple(prompts.shape)} do not fit batch={self.batch}, capacity={self.capacity}")
        prompts = prompts.to(self.device)
        self.tokens[:, :length] = prompts
        positions = torch.arange(length, device=self.device).expand(batch, -1)
        models = [(self.verifier, self.v_cache, length - 1)]
        if self.draft is not None:
            models.append((self.draft, self.d_cache, length - 2))
        for model, cache, n in models:
            cache.set_lengths(torch.zeros(batch, dtype=torch.long, device=self.device))
            for a, b in prefill_groups(batch, length) if n > 0 else ():
                self._forward(model, prompts[a:b, :n], positions[a:b, :n], cache.rows(a, b), ForwardPlan("prefill"))
            cache.set_lengths(torch.full((batch,), n, device=self.device))
        self._start(length - 1)

    def resume(self, prompts: torch.Tensor) -> None:
        """Point the decoder at caches that already hold the prefill of ``prompts (B, L)`` (another decoder's
        :meth:`prefill` over the same caches: modes share one prefill; decoding writes only from ``L - 2`` on)."""
        length = prompts.shape[1]
        self.tokens[:, :length] = prompts.to(self.device)
        self.v_cache.lengths.fill_(length - 1)
        if self.d_cache is not None:
            self.d_cache.lengths.fill_(length - 2)
        self._start(length - 1)

    def set_budgets(self, fractions: list[float]) -> None:
        """Each sequence's budget (streaming, quest): the fraction of its dense reads it may read."""
        if len(fractions) != self.batch or not all(0.0 < f <= 1.0 for f in fractions):
            raise SpecAttnError(f"budgets {fractions} must be {self.batch} fractions in (0, 1]")
        self.budget_frac.copy_(torch.tensor(fractions, dtype=torch.float64))

    def _start(self, last: int) -> None:
        """Every sequence at ``P = last`` before its first step (the caches hold its prefix)."""
        self.last.fill_(last)
        self.host_last, self.pending = [last] * self.batch, 0
        self.step_index.zero_()
        self.seq_step.zero_()
        self.prev_last.fill_(last)
        self.reads.zero_()
        if self.seq_reads is not None:
            self.seq_reads.zero_()
        if self.settings.mode == "quest":
            zero = torch.zeros(self.batch, dtype=torch.long, device=self.device)
            for j, pages in self.quest_pages.items():
                pages.lo.fill_(float("inf"))
                pages.hi.fill_(float("-inf"))
                pages.fold(self.v_cache.keys[j], zero, self.last, self.settings.chunk_size, self.capacity)

    def reset_to(self, context: int, seed: int = 0) -> None:
        """Over caches whose first ``context`` keys are filled (the benchmark: random values), set every
        sequence to ``P = context`` accepted tokens (random token ids) as after a step; fix the forced
        selection (``forced_density``) over the ``P`` prefix keys."""
        if not 2 <= context or context + self.settings.gamma + 2 > self.capacity:
            raise SpecAttnError(f"context={context} does not fit capacity={self.capacity}")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        vocab = self.verifier.config.vocab_size
        self.tokens.copy_(torch.randint(0, vocab, self.tokens.shape, generator=gen, device=self.device))
        self.v_cache.lengths.fill_(context)
        if self.d_cache is not None:
            self.d_cache.lengths.fill_(context)
        self._start(context)
        if self.settings.forced_density is not None and self.settings.mode == "specattn":
            self._force_lists(context, self.settings.forced_density, gen)
        if self.settings.forced_draft_density is not None and self.policy_layers:
            n_cols = -(-context // self.settings.chunk_size)
            keep = max(1, round(self.settings.forced_draft_density * n_cols))
            scores = torch.rand((*self.base_mask.shape[:3], n_cols), generator=gen, device=self.device)
            self.forced_base.zero_()  # in place: a captured graph reads it by address
            self.forced_base[..., :n_cols].scatter_(-1, scores.topk(keep, dim=-1).indices, True)

    def _force_lists(self, prefix: int, fraction: float, gen: torch.Generator) -> None:
        """``round(fraction * ceil(prefix / C))`` (at least 1) random prefix chunks per list, ascending."""
        n_cols = -(-prefix // self.settings.chunk_size)
        keep = max(1, round(fraction * n_cols))
        ids, n = self.forced_lists.ids, self.forced_lists.n
        scores = torch.rand((*ids.shape[:3], n_cols), generator=gen, device=self.device)
        chosen = scores.topk(keep, dim=-1).indices.sort(dim=-1).values
        ids[..., :keep] = chosen.to(torch.int32)
        n.fill_(keep)

    # ------------------------------------------------------------------------------ draft reads
    def _draft_base(self) -> None:
        """This step's base read sets ``R_i`` (``base_mask``) of the policy layers."""
        s, c = self.settings, self.settings.chunk_size
        prefix = prefix_chunk_keys(self.last, self.n_cols, c) > 0  # (B, NC)
        if s.draft_reads in WINDOWED:
            start = (self.last - s.draft_window).clamp(min=0)
            sinks = torch.full_like(self.last, s.draft_sinks)
            zero = torch.zeros_like(self.last)
            window = chunks_holding(start, self.last, self.n_cols, c) | chunks_holding(zero, sinks, self.n_cols, c)
            self.base_mask[0, :, 0].copy_(window & prefix)
        elif s.draft_reads == "reuse":
            refresh = self.seq_step % s.draft_refresh == 0
            if s.draft_refresh_below:  # the last step accepted fewer drafted tokens than that
                refresh = refresh | (self.kept < s.draft_refresh_below)
            self.draft_sparse.copy_(~refresh)
            refresh = refresh[None, :, None]  # (1, B, 1)
            new = chunks_holding(self.prev_last, self.last, self.n_cols, c)[None]  # (1, B, NC)
            previous = self.forced_base[:, :, 0] if s.forced_draft_density is not None else self.sel_mask[:, :, 0]
            base = torch.where(refresh, prefix[None], (previous | new) & prefix[None])
            self.base_mask[:, :, 0].copy_(base)

    def _draft_lists(self, f: int) -> None:
        """Forward ``f``'s lists: ``R_i`` and the chunks of the step's keys ``[P, P + f)``."""
        own = chunks_holding(self.last, self.last + f, self.n_cols, self.settings.chunk_size)  # (B, NC)
        mask = self.base_mask | own[None, :, None]
        lists = self.read_lists[f]
        flat = ChunkLists(lists.ids.view(1, -1, self.n_cols), lists.n.view(1, -1))
        chunk_lists(mask.view(1, -1, self.n_cols), self.n_cols, out=flat)

    def _count_draft_reads(self, forwards: int) -> None:
        """The step's ``forwards`` sparse forwards' prefix chunks read in the policy layers (each reads ``R_i``; the
        step's own chunks not counted) and the prefix's chunks, over the sequences that read sparsely this step (under
        ``reuse`` a refresh step reads densely and is not counted, nor is forward 0 of the ``first_*`` policies): the
        roofline's ``draft_kept``, the CPU engine's ``DraftKVReads.kept`` in chunks."""
        base = self.base_mask[self.policy_slots, :, 0]  # (slots, B, NC): prefix chunks only
        sparse = self.draft_sparse.double()
        layers = forwards * len(self.policy_layers)
        self.reads[2] += (base.sum(-1).double() * sparse).sum() * (layers / base.shape[0])
        self.reads[3] += layers * ((-(-self.last // self.settings.chunk_size)).double() * sparse).sum()

    def _first_row(self) -> None:
        """After forward 0 of a ``first_*`` policy: every slot's row at ``P``, the step's only row over the whole
        prefix (:meth:`_select` computes the others, from row 1 on)."""
        self.first.copy_(self.last + 1)
        if self.row_scores is not None:  # forward 0's attention saved the row's scores: no second read of the keys
            rows_from_scores(self.row_scores, self.row_lse[:, :, :, 0], self.first, self.rows[:, :, 0],
                             self.settings.head_agg)
            return
        draft_rows(self.row_q[:, :, :, :1], self.row_lse[:, :, :, :1], self.d_cache.keys, self.layer_slots,
                   self.first, self.rows[:, :, :1], self.draft_scale, self.settings.head_agg, config=self.settings.rows)

    def _first_selection(self) -> None:
        """``first_dense``: after forward 0, ``R_i`` = the nucleus chunks of row ``P`` of each slot."""
        self._first_row()
        prefix = prefix_chunk_keys(self.last, self.n_cols, self.settings.chunk_size) > 0
        select_chunks(self.rows[:, :, None, :1], self.settings.p, self.settings.chunk_size, self.lists,
                      self.base_mask)
        if self.settings.forced_draft_density is not None:
            self.base_mask.copy_(self.forced_base)
        recent = chunks_holding(self.last - 1, self.last, self.n_cols, self.settings.chunk_size)  # (B, NC)
        self.base_mask |= recent[None, :, None]
        self.base_mask &= prefix[None, :, None]

    # ------------------------------------------------------------------------------------ step
    def _draft_phase(self) -> None:
        s, cache = self.settings, self.d_cache
        cache.lengths.copy_(self.last - 1)
        if self.policy_layers and s.draft_reads != "first_dense":
            self._draft_base()
        positions = torch.stack([self.last - 1, self.last], dim=1)
        tokens = self.tokens.gather(1, positions)
        for i in range(s.gamma):
            if self.d_lists[i]:  # (first_dense, first_window: forward 0 reads everything, no list)
                self._draft_lists(i)
            n_new = tokens.shape[1]
            self.d_len.copy_(cache.lengths + n_new)
            hidden = self._forward(self.draft, tokens, positions, cache, self._draft_plan(i))
            cache.lengths.add_(n_new)
            token = self.draft.get_output_embeddings()(hidden[:, -1]).argmax(dim=-1)
            self.drafted[:, i] = token
            if i == 0 and self.row0 and s.draft_reads == "first_dense":
                self._first_selection()  # forward 1 reads it
            elif i == 0 and self.row0:
                self._first_row()
            tokens, positions = token[:, None], positions[:, -1:] + 1
        sparse_forwards = sum(map(bool, self.d_lists))
        if sparse_forwards:  # every sparse forward of the step read the same R_i (first_dense's: set after forward 0)
            self._count_draft_reads(sparse_forwards)

    def _draft_plan(self, f: int) -> ForwardPlan:
        """Draft forward ``f``'s attention plan: its policy layers' lists and row taps, the dense layers' launch
        ``draft_split`` (None: ``split``), the list layers' ``sparse_split``."""
        s = self.settings
        return ForwardPlan("decode", self.d_len, s.chunk_size, self.d_lists[f], self.taps[f], self.d_workspace,
                           split=s.draft_split or s.split, sparse_split=s.sparse_split,
                           sparse_workspace=self.d_sparse_workspace)

    def _select(self) -> None:
        """The rows of the first ``select_slots`` slots (one launch; from row 1 on where the draft phase computed row
        0), then their chunk lists (one call)."""
        s, r, n = self.settings, self.row0, self.select_slots
        self.first.copy_(self.last + 1 + r)  # draft row r (position P + r) attends keys [0, P + 1 + r)
        draft_rows(self.row_q[:n, :, :, r:], self.row_lse[:n, :, :, r:], self.d_cache.keys, self.layer_slots[:n],
                   self.first, self.rows[:n, :, r:], self.draft_scale, s.head_agg, config=s.rows,
                   reads=self.select_reads)
        select_chunks(self.rows[:n].unsqueeze(2), s.p, s.chunk_size, ChunkLists(self.lists.ids[:n], self.lists.n[:n]),
                      self.sel_mask[:n])

    def _budget_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prefix keys per chunk (B, NC), prefix keys a step may read (B,))`` of the budgeted baselines."""
        s, t = self.settings, self.settings.gamma + 1
        keys = prefix_chunk_keys(self.last, self.n_cols, s.chunk_size)
        return keys, self.budget_frac * (self.last + t).double() - t

    def _streaming_lists(self) -> None:
        """StreamingLLM's chunks (:class:`specattn.methods.streaming.StreamingLLM`): sinks first, then the
        most recent prefix chunks, within the budget."""
        s = self.settings
        keys, budget = self._budget_keys()
        sink_chunks = math.ceil(s.n_sinks / s.chunk_size)
        scores = torch.arange(self.n_cols, dtype=torch.float32, device=self.device)
        scores = (scores + (scores < sink_chunks) * self.n_cols).expand(self.batch, 1, -1)
        chunk_lists(top_chunks(scores, keys, budget, sink_chunks), self.n_cols, out=self.budget_lists)

    def _quest_selector(self, layer: int):
        """Quest's lists of ``layer`` from its queries (:class:`specattn.methods.quest.QuestBounds`)."""
        pages = self.quest_pages[layer]

        def select(query: torch.Tensor, scaling: float) -> ChunkLists:
            keys, budget = self.quest_budget  # (B, NC), (B,): this step's, computed before the verifier's forward
            scores = pages.scores(query, keys, scaling)
            lists = chunk_lists(top_chunks(scores, keys, budget, QUEST_MIN_PAGES), self.n_cols, out=self.budget_lists)
            self.reads[0] += lists.n.double().mean(dim=1).sum()
            if self.seq_reads is not None:
                self.selected_keys += listed_keys(lists.ids, lists.n, keys)
            return lists

        return select

    def _oracle_selector(self, layer: int):
        """The oracle's lists of ``layer`` (:class:`specattn.methods.oracle_topp.OracleTopP`): each query head's own
        attention row at each of the step's rows (row t sees keys ``[0, P + t]``), its top-p nucleus, the chunks
        holding a nucleus key OR-ed over the rows and the query heads of each KV head (one list per KV head)."""
        keys_cache = self.v_cache.keys[layer]  # (B, Hkv, cap, D): this step's keys are written before attention

        def select(query: torch.Tensor, scaling: float) -> ChunkLists:
            b, hq, t, d = query.shape
            hkv = keys_cache.shape[1]
            q = query.reshape(b, hkv, (hq // hkv) * t, d)  # rows of one KV group: (head, row) in that order
            scores = torch.matmul(q.float(), keys_cache.float().transpose(-1, -2)) * scaling  # (B, Hkv, G*T, cap)
            row = torch.arange(t, device=query.device).repeat(hq // hkv)  # each score row's step row
            visible = torch.arange(scores.shape[-1], device=query.device)[None, None, :] <= (
                self.last[:, None, None] + row[None, :, None])  # (B, G*T, cap)
            probs = torch.softmax(scores.masked_fill(~visible[:, None], float("-inf")), dim=-1)
            lists = select_chunks(probs, self.settings.p, self.settings.chunk_size, self.budget_lists)
            self.reads[0] += lists.n.double().mean(dim=1).sum()
            if self.seq_reads is not None:
                self.selected_keys += listed_keys(lists.ids, lists.n, prefix_chunk_keys(self.last, self.n_cols,
                                                                                         self.settings.chunk_size))
            return lists

        return select

    def _count_verifier_reads(self) -> None:
        """Chunk reads of the sparse layers this step (the verifier's kept fraction; Quest counts its reads as
        each layer selects) and their dense count."""
        if not self.sparse:
            return
        mode = self.settings.mode
        if mode == "specattn":
            source = self.forced_lists if self.settings.forced_density is not None else self.lists
            self.reads[0] += source.n[self.sparse_slots, :, 0].double().sum()
        elif mode == "streaming":
            self.reads[0] += len(self.sparse) * self.budget_lists.n.double().sum()
        self.reads[1] += len(self.sparse) * (-(-self.last // self.settings.chunk_size)).double().sum()

    def _count_sequence_reads(self) -> None:
        """This step's reads of each sequence (``seq_reads``), keys and tails as :class:`KVReads` counts them."""
        s, t = self.settings, self.settings.gamma + 1
        heads = self.v_cache.keys.shape[2]
        layers = self.verifier.config.num_hidden_layers
        dense = (self.last + t).double() * heads  # (B,) one layer's dense reads
        keys = prefix_chunk_keys(self.last, self.n_cols, s.chunk_size)
        if s.mode == "specattn":
            source = self.forced_lists if s.forced_density is not None else self.lists
            prefix = listed_keys(source.ids[self.sparse_slots], source.n[self.sparse_slots], keys) * heads
        elif s.mode == "streaming":
            prefix = len(self.sparse) * listed_keys(self.budget_lists.ids, self.budget_lists.n, keys) * heads
        elif s.mode in ("quest", "oracle"):
            prefix = self.selected_keys.clone()
        else:
            prefix = torch.zeros_like(dense)
        sparse = prefix + len(self.sparse) * t * heads if self.sparse else prefix
        self.seq_reads[0] += (layers - len(self.sparse)) * dense + sparse
        self.seq_reads[1] += layers * dense
        self.seq_reads[2] += sparse
        self.seq_reads[3] += len(self.sparse) * dense

    def _verify_phase(self) -> None:
        s = self.settings
        if s.mode == "specattn" and self.slots:
            self._select()
        elif s.mode == "streaming":
            self._streaming_lists()
        elif s.mode == "quest":
            self.quest_budget = self._budget_keys()  # once a step, for every layer's selection
        if s.draft_reads == "reuse" and s.mode != "specattn" and self.slots:
            self._select()  # reuse's next selection comes from this step's rows
        t = s.gamma + 1
        self.v_cache.lengths.copy_(self.last)
        positions = self.last[:, None] + torch.arange(t, device=self.device)
        tokens = torch.cat([self.tokens.gather(1, self.last[:, None]), self.drafted], dim=1)  # (B, T)
        self.v_len.copy_(self.last + t)
        if self.seq_reads is not None:
            self.selected_keys.zero_()
        hidden = self._forward(self.verifier, tokens, positions, self.v_cache, self.v_plan)
        self._count_verifier_reads()
        if self.seq_reads is not None:
            self._count_sequence_reads()
        target = self.verifier.get_output_embeddings()(hidden).argmax(dim=-1)  # (B, T)
        if self.schedule is not None:
            kept = self.schedule.index_select(0, (self.step_index % self.schedule.numel()).view(1)).expand(self.batch)
            self.step_index.add_(1)
        else:
            kept = (self.drafted == target[:, :-1]).long().cumprod(dim=1).sum(dim=1)
        added = target.gather(1, kept[:, None])  # (B, 1)
        # commit: positions P+1 .. P+1+kept get d_1 .. d_kept, then the verifier's token
        i = torch.arange(t, device=self.device)
        values = torch.where(i < kept[:, None], torch.cat([self.drafted, added], dim=1), added)
        slots = self.last[:, None] + 1 + i
        self.tokens.scatter_(1, slots, torch.where(i <= kept[:, None], values, self.tokens.gather(1, slots)))
        if s.mode == "quest":  # the keys this step committed, [P, P + kept + 1), join their pages' bounds
            for j, pages in self.quest_pages.items():
                pages.fold(self.v_cache.keys[j], self.last, self.last + kept + 1, s.chunk_size, t)
        self.prev_last.copy_(self.last)
        self.seq_step.add_(1)
        self.last.add_(kept + 1)
        self.v_cache.lengths.copy_(self.last)
        if self.d_cache is not None:
            self.d_cache.lengths.copy_(torch.minimum(self.d_cache.lengths, self.last))
        self.kept.copy_(kept)

    def kept_fractions(self) -> tuple[float, float]:
        """``(verifier, draft)`` since the prefill: the verifier's chunk reads over dense chunk reads in the sparse
        layers, and the share of the prefix chunks the draft's sparse forwards read in the policy layers
        (:meth:`_count_draft_reads`); NaN where nothing was counted. One host read."""
        r = self.reads.tolist()
        return (r[0] / r[1] if r[1] else math.nan), (r[2] / r[3] if r[3] else math.nan)

    @torch.inference_mode()
    def capture(self, warmup: int = 1) -> None:
        """Record the draft and verify phases in two CUDA graphs (one memory pool), after ``warmup``
        eager steps on a side stream (Triton compiles, the radix kernel builds) whose effect on the
        state is undone."""
        if self.device.type != "cuda":
            raise SpecAttnError("CUDA graphs need the decoder on a CUDA device")
        saved = [x.clone() for x in self._state()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._phases()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for x, old in zip(self._state(), saved):
            x.copy_(old)
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        for phase in ([self._draft_phase] if self.draft is not None else []) + [self._verify_phase]:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                phase()
            graphs.append(graph)
        self.graphs = tuple(graphs)
        for x, old in zip(self._state(), saved):
            x.copy_(old)

    def _state(self) -> list[torch.Tensor]:
        state = [self.tokens, self.last, self.step_index, self.v_cache.lengths, self.seq_step, self.prev_last,
                 self.reads] + ([self.seq_reads] if self.seq_reads is not None else [])
        if self.slots:
            state.append(self.sel_mask)
        if self.settings.mode == "quest":
            for pages in self.quest_pages.values():
                state += [pages.lo, pages.hi]
        return state + ([self.d_cache.lengths] if self.d_cache is not None else [])

    def _phases(self) -> None:
        if self.draft is not None:
            self._draft_phase()
        self._verify_phase()

    @torch.inference_mode()
    def step(self) -> None:
        """Launch one verification step (graph replays if captured); ``kept`` holds its accepted counts.
        The capacity check uses the host's copy of the lengths (:meth:`record`), allowing ``gamma + 1``
        tokens for each step launched but not yet recorded."""
        t = self.settings.gamma + 1
        if max(self.host_last) + (self.pending + 1) * t + 1 > self.capacity:
            raise SpecAttnError(f"KV cache of {self.capacity} tokens is full: raise its capacity")
        self.pending += 1
        if self.graphs is None:
            self._phases()
        else:
            for graph in self.graphs:
                graph.replay()

    def record(self, kept: list[int]) -> None:
        """Advance the host's copy of the lengths by the oldest unrecorded step's accepted counts (read
        from ``kept``; a caller may launch the next step before reading them)."""
        self.host_last = [p + k + 1 for p, k in zip(self.host_last, kept)]
        self.pending -= 1

    @torch.inference_mode()
    def generate(self, prompts: torch.Tensor, max_new_tokens: int, prefilled: bool = False) -> GraphDecoded:
        """Greedy decoding of ``prompts (B, L)`` until every sequence has ``max_new_tokens`` tokens (a
        sequence that has them keeps stepping uncounted, as in the CPU engine); one host read per step.
        ``prefilled``: :meth:`prefill` (and maybe :meth:`capture`) already ran on these prompts."""
        if not prefilled:
            self.prefill(prompts)
        length = prompts.shape[1]
        produced, steps, kept_total = [0] * self.batch, [0] * self.batch, [0] * self.batch
        while min(produced) < max_new_tokens:
            self.step()
            kept = self.kept.tolist()  # the step's one device-to-host read
            self.record(kept)
            for b, k in enumerate(kept):
                if produced[b] < max_new_tokens:
                    steps[b] += 1
                    kept_total[b] += k
                    produced[b] += k + 1
        tokens = self.tokens[:, length : length + max_new_tokens].tolist()
        return GraphDecoded(tokens, steps, kept_total)
