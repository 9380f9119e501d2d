"""The graph decoder behind the reference decoder's interface: ``prefill`` once, ``generate`` each method.

:class:`GraphTraceDecoder` offers what :class:`specattn.decode.engine.SpeculativeDecoder` offers a table
experiment (``prefill(prompts) -> Prefill``, ``generate(prefill, methods, seeds) -> Decoded`` with one
:class:`~specattn.decode.engine.SequenceTrace` per sequence) and runs it on the graph decoder
(:mod:`specattn.decode.graph_engine`): each step on the device (CUDA graphs on a GPU), one host read per
step, instead of the reference engine's per-sequence Python loop. The same decoding, greedy only:

* methods: ``dense``, ``specattn`` and ``oracle_topp`` (their ``p``), ``streaming`` and ``quest`` with a
  ``kv_budget_frac`` budget (a matched budget is one), each sequence with its own budget; others are refused
  (:func:`graph_settings`);
* the draft reads densely (``decode.draft_reads=dense``); its reads are not counted (the traces' draft
  reads stay empty);
* stopping: a sequence's tokens end at ``max_new_tokens`` or, with ``stop_at_eos``, after its first
  end-of-sequence token; it keeps stepping (uncounted) until the batch's last sequence is done, as in the
  reference engine;
* KV reads: counted per sequence on the device in the reference's units (:class:`~specattn.core.kv_reads.KVReads`:
  (key, KV head) loads, the step's own tokens included, every step up to the one that ended the sequence);
* timing: the wall time of a method's decoding (host clock, from the first step to the last; prefill and
  graph capture excluded) is reported as the verify phase (the phases are not timed apart).

Per prompt length and batch size the caches are allocated once and shared by the methods (one prefill); per
method setting one :class:`~specattn.decode.graph_engine.GraphDecoder` is built and, on CUDA, captured once
(:class:`GraphPool`, which several decoders of different answer lengths can share).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from ..core.errors import SpecAttnError
from ..core.kv_reads import KVReads
from ..core.settings import Settings
from ..methods import Budget, Dense, Method, OracleTopP, Quest, SpecAttn, StreamingLLM
from ..models.pair import ModelPair
from .engine import BatchTiming, Decoded, Prefill, SequenceTrace
from .graph_engine import GraphDecoder, GraphSettings, capacity_for, free_device_memory
from .kv_cache import SequenceKVCache

GRAPH_METHODS = ("dense", "specattn", "oracle_topp", "streaming", "quest")


def graph_settings(method: Method, s: Settings) -> GraphSettings:
    """The graph decoder's mode for ``method`` under run settings ``s`` (budgets are set per sequence:
    :meth:`GraphDecoder.set_budgets`), checked as the decoder will check it (:meth:`GraphSettings.check`), so
    what it cannot run is refused in one line before any weights load."""
    out = _graph_mode(method, s)
    try:
        out.check(len(s.layer_map))
    except SpecAttnError as error:
        raise SpecAttnError(f"{method.label}: {error}; use the reference decoder") from None
    return out


def _graph_mode(method: Method, s: Settings) -> GraphSettings:
    if s.temperature != 0:
        raise SpecAttnError(f"the graph decoder decodes greedily: temperature={s.temperature} needs the reference decoder")
    if s.draft_reads != "dense":
        raise SpecAttnError(f"decode.draft_reads={s.draft_reads}: the graph decoder's traces support only dense "
                            "draft reads; use the reference decoder")
    base = GraphSettings(s.gamma, s.chunk_size, s.dense_layers, s.head_agg, tuple(s.layer_map))
    if type(method) is Dense:
        return base
    if type(method) is SpecAttn:  # its own head aggregation, if it names one
        return dataclasses.replace(base, p=float(method.p), head_agg=method.heads or s.head_agg)
    if type(method) is OracleTopP:
        return dataclasses.replace(base, p=float(method.p), verify="oracle")
    if type(method) in (StreamingLLM, Quest):
        if method.budget.kv_budget_frac is None:
            raise SpecAttnError(f"{method.label}: the graph decoder takes budgets as a fraction of the dense reads "
                                f"(budget.kv_budget_frac or match), not budget.token_budget={method.budget.token_budget}")
        extra = {"n_sinks": method.n_sinks} if type(method) is StreamingLLM else {}
        return dataclasses.replace(base, verify=method.name, kv_budget_frac=1.0, **extra)
    raise SpecAttnError(f"method {method.name!r} ({method.label}) does not run in the graph decoder (it runs "
                        f"{', '.join(GRAPH_METHODS)}): use the reference decoder")


def budget_of(method: Method) -> float:
    """A budgeted method's fraction of the dense reads (1 for the others)."""
    budget = getattr(method, "budget", None)
    return float(budget.kv_budget_frac) if isinstance(budget, Budget) else 1.0


class GraphPool:
    """Caches and decoders shared by the :class:`GraphTraceDecoder` of several answer lengths (a retrieval run's
    tasks): per prompt length one capacity, sized for the longest answer ``longest_new_tokens``; per batch
    size the caches, shared by the methods; per method setting one decoder (captured once on CUDA). A new
    prompt length frees the previous length's caches and decoders."""

    def __init__(self, pair: ModelPair, longest_new_tokens: int):
        self.pair, self.longest = pair, int(longest_new_tokens)
        self.device = pair.verifier.device
        self.length: int | None = None
        self._caches: dict[int, tuple[SequenceKVCache, SequenceKVCache]] = {}
        self._decoders: dict[tuple, GraphDecoder] = {}

    def caches(self, batch: int, length: int, gamma: int) -> tuple[SequenceKVCache, SequenceKVCache]:
        if length != self.length:
            self._caches.clear()
            self._decoders.clear()
            free_device_memory(self.device)
            self.length = length
        if batch not in self._caches:
            capacity = capacity_for(length, self.longest, gamma)
            self._caches[batch] = (SequenceKVCache.for_model(self.pair.verifier, batch, capacity),
                                   SequenceKVCache.for_model(self.pair.draft, batch, capacity))
        return self._caches[batch]

    def decoder(self, settings: GraphSettings, batch: int, length: int) -> GraphDecoder:
        caches = self.caches(batch, length, settings.gamma)
        key = (settings, batch)
        if key not in self._decoders:
            self._decoders[key] = GraphDecoder(self.pair.draft, self.pair.verifier, settings, batch,
                                               caches[0].capacity, caches, count_sequences=True)
        return self._decoders[key]


class GraphTraceDecoder:
    """:class:`~specattn.decode.engine.SpeculativeDecoder`'s ``prefill`` / ``generate`` on the graph decoder
    (``pool``: caches and decoders shared with other instances, e.g. one per answer length)."""

    def __init__(self, pair: ModelPair, settings: Settings, eos_ids: tuple[int, ...] = (), pool: GraphPool | None = None):
        self.pair, self.settings, self.eos_ids = pair, settings, frozenset(eos_ids)
        self.device = pair.verifier.device
        self.pool = pool or GraphPool(pair, settings.max_new_tokens)
        if self.pool.longest < settings.max_new_tokens:
            raise SpecAttnError(f"the pool's caches are sized for {self.pool.longest} new tokens, not "
                                f"max_new_tokens={settings.max_new_tokens}")

    @torch.inference_mode()
    def prefill(self, prompts: torch.Tensor) -> Prefill:
        """Both models' caches after ``prompts (B, L)`` (the verifier ``[0, L-1)``, the draft ``[0, L-2)``)."""
        start = time.perf_counter()
        batch, length = prompts.shape
        self.pool.decoder(graph_settings(Dense(), self.settings), batch, length).prefill(prompts)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        verifier, draft = self.pool.caches(batch, length, self.settings.gamma)
        return Prefill(prompts.to(self.device), verifier, draft, time.perf_counter() - start)

    @torch.inference_mode()
    def generate(self, prefill: Prefill, methods: list[Method], seed: int | list[int] = 0) -> Decoded:
        """Decode every sequence of ``prefill`` with ``methods[b]``: one method setting for the batch, each
        sequence's own budget; greedy, so ``seed`` changes nothing."""
        batch = prefill.prompts.shape[0]
        if len(methods) != batch:
            raise SpecAttnError(f"{len(methods)} methods for a batch of {batch} sequences")
        modes = {graph_settings(method, self.settings) for method in methods}
        if len(modes) != 1:
            raise SpecAttnError(f"one batch decodes one method setting in the graph decoder, got {sorted(map(str, modes))}")
        dec = self.pool.decoder(modes.pop(), batch, prefill.prompts.shape[1])
        dec.resume(prefill.prompts)
        dec.set_budgets([budget_of(method) for method in methods])
        if self.device.type == "cuda" and dec.graphs is None:
            dec.capture()
            dec.resume(prefill.prompts)
        tick = time.perf_counter()
        traces = self._decode(dec, prefill.prompts.shape[1])
        return Decoded(traces, BatchTiming(verify=time.perf_counter() - tick), prefill.verifier, prefill.draft)

    def _decode(self, dec: GraphDecoder, length: int) -> list[SequenceTrace]:
        """Step until every sequence is done; each sequence's trace kept as the reference engine keeps it (:meth:`SequenceTrace.add_step`)."""
        s = self.settings
        traces = [SequenceTrace() for _ in range(dec.batch)]
        stop = self.eos_ids if s.stop_at_eos else frozenset()
        while not all(trace.done for trace in traces):
            before = list(dec.host_last)
            dec.step()
            kept = dec.kept.tolist()  # the step's one synchronising read
            dec.record(kept)
            new = dec.tokens[:, length: length + s.max_new_tokens + s.gamma + 1].tolist()  # what a live sequence added
            for b, trace in enumerate(traces):
                if trace.done:
                    continue
                n = kept[b]
                trace.add_step(new[b][before[b] + 1 - length: before[b] + 2 + n - length], n, s.gamma,
                               s.max_new_tokens, stop)
                if trace.done:  # its reads up to this step (read from the device only when a sequence ends)
                    trace.reads = KVReads(*(round(x) for x in dec.seq_reads[:, b].tolist()))
        return traces
