"""Speculative decoding on the device: static buffers, CUDA graphs, one host read per step.

The same decoding as :class:`specattn.decode.engine.SpeculativeDecoder` with greedy acceptance (same
conventions, so the two agree token for token), restructured so that a whole verification step runs
on the device with no host decision:

* **state on the device**: the token buffer ``tokens (B, capacity + gamma + 2)``, each sequence's last
  accepted position ``last (B,)`` (``P_b``), both models' static :class:`SequenceKVCache`, the drafted
  tokens, the accepted counts;
* **draft phase** (one CUDA graph): the draft's cache keeps ``[0, P_b - 1)``; its first forward feeds
  tokens ``P_b - 1, P_b``, then one drafted token per forward (``gamma`` forwards, greedy). Each draft
  layer the layer map needs saves its last query row and that row's log-sum-exp (``ForwardPlan.taps``);
* **verify phase** (one CUDA graph): SpecAttn first recomputes the head-aggregated draft rows of every
  needed layer (:func:`specattn.gpu.draft_rows.draft_rows`, one launch) and selects every layer's chunks
  at once (:func:`specattn.gpu.step.select_chunks` over ``(layers, B, 1, gamma, W)``); the verifier scores
  ``x_{P_b}, d_1 .. d_gamma`` with sparse verifier layer ``j`` reading the lists of draft layer
  ``layer_map[j]`` (the first ``dense_layers`` and every layer of dense speculative decoding read densely);
  greedy acceptance, commit of the accepted tokens and both caches' lengths, all on the device;
* the host reads only ``kept (B,)`` (the accepted counts) after each step.

Modes: ``gamma = 0`` is autoregressive decoding (the verifier alone, one token per step); ``p=None``
dense speculative decoding; ``p`` set SpecAttn. Two labelled controls replace what random weights make
meaningless: ``forced_kept`` (the accepted counts follow a fixed cycle instead of the verifier's argmax:
its mean + 1 is tau) and ``forced_density`` (the selection still runs, but the verifier reads a fixed
random selection of that fraction of each sequence's prefix chunks).

On CUDA with fp16/bf16 everything runs in Triton kernels and the phases are captured in CUDA graphs
(:meth:`GraphDecoder.capture`); on the CPU (or in float32) the same code runs eagerly on torch
fallbacks (float32 also captures on CUDA: the fallbacks read nothing on the host).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import SpecAttnError
from ..gpu.attention.sparse import ChunkLists
from ..gpu.draft_rows import AGGREGATIONS, draft_rows
from ..gpu.step import select_chunks
from ..hooks.forward import cache_kwargs
from ..hooks.graph_attention import GRAPH_ATTENTION, ForwardPlan, RowTap, use_kernels
from .kv_cache import SequenceKVCache


@dataclass(frozen=True)
class GraphSettings:
    """One decoding mode of the graph decoder.

    gamma: drafted tokens per step (0: autoregressive, no draft); p: SpecAttn's nucleus mass (None:
    dense verification); layer_map: draft layer of each verifier layer; forced_kept: accepted counts,
    cycled over the steps (None: greedy acceptance); forced_density: SpecAttn control, the kept fraction
    of prefix chunks the verifier reads (None: the selection's own lists).
    """

    gamma: int
    chunk_size: int = 16
    dense_layers: int = 2
    head_agg: str = "mean"
    layer_map: tuple[int, ...] = ()
    p: float | None = None
    forced_kept: tuple[int, ...] | None = None
    forced_density: float | None = None

    @property
    def mode(self) -> str:
        return "ar" if self.gamma == 0 else ("dense" if self.p is None else "specattn")

    @property
    def tau(self) -> float | None:
        """Mean tokens per step under forced acceptance."""
        return None if self.forced_kept is None else 1 + sum(self.forced_kept) / len(self.forced_kept)


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


class GraphDecoder:
    """The device-resident decoder of one (draft, verifier) pair, batch size, mode and cache capacity.

    ``caches=(verifier, draft)`` reuses existing caches (the benchmark shares them between modes);
    otherwise they are allocated here. Call :meth:`prefill` (or :meth:`reset_to` over filled caches),
    optionally :meth:`capture`, then :meth:`step` / :meth:`generate`.
    """

    def __init__(self, draft, verifier, settings: GraphSettings, batch: int, capacity: int,
                 caches: tuple[SequenceKVCache, SequenceKVCache | None] | None = None):
        s = self.settings = settings
        if s.gamma < 0 or s.chunk_size < 1:
            raise SpecAttnError(f"gamma={s.gamma} must be >= 0 and chunk_size={s.chunk_size} >= 1")
        if s.mode == "specattn" and s.head_agg not in AGGREGATIONS:
            raise SpecAttnError(f"head_agg={s.head_agg!r}: the graph decoder supports {', '.join(AGGREGATIONS)}")
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
        self.tokens = torch.zeros((batch, capacity + t + 1), dtype=torch.long, device=dev)
        self.last = torch.zeros(batch, dtype=torch.long, device=dev)
        self.drafted = torch.zeros((batch, s.gamma), dtype=torch.long, device=dev)
        self.kept = torch.zeros(batch, dtype=torch.long, device=dev)
        self.v_len = torch.zeros(batch, dtype=torch.int32, device=dev)
        self.d_len = torch.zeros(batch, dtype=torch.int32, device=dev)
        self.step_index = torch.zeros((), dtype=torch.long, device=dev)
        self.schedule = (torch.tensor(s.forced_kept, dtype=torch.long, device=dev) if s.forced_kept else None)
        if self.schedule is not None and not all(0 <= k <= s.gamma for k in s.forced_kept):
            raise SpecAttnError(f"forced accepted counts {s.forced_kept} must lie in [0, gamma={s.gamma}]")
        self.host_last = [0] * batch  # the host's copy of last, behind by `pending` steps
        self.pending = 0
        self.graphs: tuple | None = None
        self._build_plans()

    # ----------------------------------------------------------------------------------- plans
    def _workspace(self, model, n_queries):
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if not use_kernels(self.device, model.dtype, head_dim):
            return None
        from ..gpu.kernels import sparse_attn as K

        return K.make_workspace(self.batch, config.num_key_value_heads,
                                config.num_attention_heads // config.num_key_value_heads, n_queries, head_dim,
                                K.SplitConfig(), self.device)

    def _build_plans(self) -> None:
        s, dev = self.settings, self.device
        n_verifier = self.verifier.config.num_hidden_layers
        sparse = range(s.dense_layers, n_verifier) if s.mode == "specattn" else range(0)
        if s.mode == "specattn" and len(s.layer_map) != n_verifier:
            raise SpecAttnError(f"layer_map has {len(s.layer_map)} entries for a verifier of {n_verifier} layers")
        needed = sorted({s.layer_map[j] for j in sparse})
        self.slots = {layer: i for i, layer in enumerate(needed)}
        lists_plan: dict[int, ChunkLists] = {}
        self.taps: list[dict[int, RowTap]] = [{} for _ in range(s.gamma)]
        if needed:
            cfg = self.draft.config
            heads = cfg.num_attention_heads
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
            n_slots, width = len(needed), self.capacity
            n_cols = -(-width // s.chunk_size)
            self.row_q = torch.zeros((n_slots, self.batch, heads, s.gamma, head_dim), dtype=self.draft.dtype, device=dev)
            self.row_lse = torch.zeros((n_slots, self.batch, heads, s.gamma), dtype=torch.float32, device=dev)
            self.rows = torch.zeros((n_slots, self.batch, s.gamma, width), dtype=torch.float32, device=dev)
            self.lists = ChunkLists.empty(n_slots * self.batch, 1, n_cols, dev)
            self.lists = ChunkLists(self.lists.ids.view(n_slots, self.batch, 1, n_cols), self.lists.n.view(n_slots, self.batch, 1))
            self.forced_lists = ChunkLists(torch.zeros_like(self.lists.ids), torch.zeros_like(self.lists.n))
            read = self.forced_lists if s.forced_density is not None else self.lists
            self.layer_slots = torch.tensor(needed, dtype=torch.int32, device=dev)
            self.first = torch.zeros(self.batch, dtype=torch.int32, device=dev)
            self.draft_scale = self.draft.model.layers[0].self_attn.scaling
            for j in sparse:
                slot = self.slots[s.layer_map[j]]
                lists_plan[j] = ChunkLists(read.ids[slot], read.n[slot])
            for i in range(s.gamma):
                self.taps[i] = {layer: RowTap(self.row_q[slot, :, :, i], self.row_lse[slot, :, :, i])
                                for layer, slot in self.slots.items()}
        self.v_plan = ForwardPlan("decode", self.v_len, s.chunk_size, lists_plan, {},
                                  self._workspace(self.verifier, s.gamma + 1))
        self.d_workspace = self._workspace(self.draft, 2) if s.gamma else None

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
            if n > 0:
                self._forward(model, prompts[:, :n], positions[:, :n], cache, ForwardPlan("prefill"))
            cache.set_lengths(torch.full((batch,), n, device=self.device))
        self.last.fill_(length - 1)
        self.host_last, self.pending = [length - 1] * batch, 0
        self.step_index.zero_()

    def reset_to(self, context: int, seed: int = 0) -> None:
        """Over caches whose first ``context`` keys are filled (the benchmark: random values), set every
        sequence to ``P = context`` accepted tokens (random token ids) as after a step; fix the forced
        selection (``forced_density``) over the ``P`` prefix keys."""
        if not 2 <= context or context + self.settings.gamma + 2 > self.capacity:
            raise SpecAttnError(f"context={context} does not fit capacity={self.capacity}")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        vocab = self.verifier.config.vocab_size
        self.tokens.copy_(torch.randint(0, vocab, self.tokens.shape, generator=gen, device=self.device))
        self.last.fill_(context)
        self.v_cache.lengths.fill_(context)
        if self.d_cache is not None:
            self.d_cache.lengths.fill_(context)
        self.host_last, self.pending = [context] * self.batch, 0
        self.step_index.zero_()
        if self.settings.forced_density is not None and self.slots:
            self._force_lists(context, self.settings.forced_density, gen)

    def _force_lists(self, prefix: int, fraction: float, gen: torch.Generator) -> None:
        """``round(fraction * ceil(prefix / C))`` (at least 1) random prefix chunks per list, ascending."""
        n_cols = -(-prefix // self.settings.chunk_size)
        keep = max(1, round(fraction * n_cols))
        ids, n = self.forced_lists.ids, self.forced_lists.n
        scores = torch.rand((*ids.shape[:3], n_cols), generator=gen, device=self.device)
        chosen = scores.topk(keep, dim=-1).indices.sort(dim=-1).values
        ids[..., :keep] = chosen.to(torch.int32)
        n.fill_(keep)

    # ------------------------------------------------------------------------------------ step
    def _draft_phase(self) -> None:
        s, cache = self.settings, self.d_cache
        cache.lengths.copy_(self.last - 1)
        positions = torch.stack([self.last - 1, self.last], dim=1)
        tokens = self.tokens.gather(1, positions)
        for i in range(s.gamma):
            n_new = tokens.shape[1]
            self.d_len.copy_(cache.lengths + n_new)
            plan = ForwardPlan("decode", self.d_len, s.chunk_size, {}, self.taps[i], self.d_workspace)
            hidden = self._forward(self.draft, tokens, positions, cache, plan)
            cache.lengths.add_(n_new)
            token = self.draft.get_output_embeddings()(hidden[:, -1]).argmax(dim=-1)
            self.drafted[:, i] = token
            tokens, positions = token[:, None], positions[:, -1:] + 1

    def _select(self) -> None:
        """Every needed draft layer's rows (one launch), then every layer's chunk lists (one call)."""
        s = self.settings
        self.first.copy_(self.last + 1)  # draft row r (position P + r) attends keys [0, P + 1 + r)
        draft_rows(self.row_q, self.row_lse, self.d_cache.keys, self.layer_slots, self.first, self.rows,
                   self.draft_scale, s.head_agg)
        select_chunks(self.rows.unsqueeze(2), s.p, s.chunk_size, self.lists)

    def _verify_phase(self) -> None:
        s = self.settings
        if self.slots:
            self._select()
        t = s.gamma + 1
        self.v_cache.lengths.copy_(self.last)
        positions = self.last[:, None] + torch.arange(t, device=self.device)
        tokens = torch.cat([self.tokens.gather(1, self.last[:, None]), self.drafted], dim=1)  # (B, T)
        self.v_len.copy_(self.last + t)
        hidden = self._forward(self.verifier, tokens, positions, self.v_cache, self.v_plan)
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
        self.last.add_(kept + 1)
        self.v_cache.lengths.copy_(self.last)
        if self.d_cache is not None:
            self.d_cache.lengths.copy_(torch.minimum(self.d_cache.lengths, self.last))
        self.kept.copy_(kept)

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
        state = [self.tokens, self.last, self.step_index, self.v_cache.lengths]
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
    def generate(self, prompts: torch.Tensor, max_new_tokens: int) -> GraphDecoded:
        """Greedy decoding of ``prompts (B, L)`` until every sequence has ``max_new_tokens`` tokens (a
        sequence that has them keeps stepping uncounted, as in the CPU engine); one host read per step."""
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
