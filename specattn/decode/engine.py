"""Speculative decoding with sparse verification: the loop, for a batch of sequences of ragged lengths.

Each step, for every sequence of the batch (position ``P_b`` holds its last accepted token):

1. the draft proposes ``gamma`` tokens over its own cache: its first forward feeds the last two
   accepted tokens (positions ``P_b - 1, P_b``; the first was processed before, unless every drafted
   token of the last step was kept, and is rewritten in place), then one token per forward; the
   rows at ``P_b .. P_b + gamma - 1`` are the step's draft rows, and the layers the methods need
   hand their per-head attention rows to the methods as they are computed;
2. the verifier scores ``x_{P_b}, d_1 .. d_gamma`` (``gamma + 1`` rows) in one forward in which each
   sparse layer reads only the chunks the sequence's method selected plus the step's own tokens;
3. acceptance (:mod:`specattn.decode.acceptance`) keeps ``k_b`` drafted tokens and adds one;
4. both caches keep exactly the accepted tokens (:class:`~specattn.decode.kv_cache.SequenceKVCache`):
   the verifier ``[0, P_b + 1 + k_b)``, the draft what it had processed of them. The verifier keeps
   the keys and values its (sparse) verification forward computed for the accepted tokens: nothing is
   recomputed densely, as a serving system would do it; each method is told which positions were
   accepted (:meth:`~specattn.methods.base.ActiveMethod.commit`), so rejected draft rows leave its
   history.

Every sequence has its own method state (:meth:`~specattn.methods.base.Method.start`), step layout (:class:`~specattn.core.layout.StepLayout`, one
step whose prefix is ``[0, P_b)``), KV accounting and random generator, so a sequence's output does
not depend on the rest of its batch. Steps have a fixed ``gamma``; a sequence that has its
``max_new_tokens`` (or an end-of-sequence token, with ``stop_at_eos``) stops counting and its later
results are dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..core.errors import SpecAttnError
from ..core.kv_reads import KVReads
from ..core.layout import StepLayout
from ..core.settings import Settings
from ..hooks.draft_capture import DECODE_DRAFT_ATTENTION, DraftObserver
from ..hooks.forward import cache_kwargs
from ..hooks.verifier_attention import DECODE_VERIFIER_ATTENTION, VerifierPlan
from ..methods.base import Method
from ..methods.context import SampleContext
from ..models.pair import ModelPair
from .acceptance import greedy_accept, speculative_accept, warp
from .draft_reads import DraftKVReads, DraftReadPolicy
from .kv_cache import SequenceKVCache


#: tokens one prefill forward processes at most: a batch of long prompts is prefilled a few sequences at a
#: time (each sequence's prefill is its own), so one MLP activation stays under 2.4 GB on a 1.5B model
#: (8 x 32000 tokens at once need 4.3 GiB for one of them: out of memory beside other jobs on the H200)
PREFILL_TOKENS = 1 << 17


def prefill_groups(batch: int, length: int) -> list[tuple[int, int]]:
    """The row ranges ``[a, b)`` of a batch of ``length``-token prompts that one prefill forward takes
    (:data:`PREFILL_TOKENS` tokens at most, one sequence at least); both decoders prefill this way."""
    group = max(1, PREFILL_TOKENS // length)
    return [(a, min(batch, a + group)) for a in range(0, batch, group)]


@dataclass
class SequenceTrace:
    """What decoding one sequence produced and measured."""

    tokens: list[int] = field(default_factory=list)  # generated tokens (prompt excluded)
    steps: int = 0  # verification steps
    drafted: int = 0  # drafted tokens scored
    kept: int = 0  # drafted tokens accepted
    step_accepted: list[int] = field(default_factory=list)  # drafted tokens accepted at each step, in order
    reads: KVReads = field(default_factory=KVReads)
    draft_reads: DraftKVReads = field(default_factory=DraftKVReads)  # the draft's (decode.draft_reads)
    done: bool = False

    def add_step(self, accepted: list[int], kept: int, gamma: int, max_new_tokens: int, stop_ids=frozenset()) -> None:
        """One verification step that kept ``kept`` of its ``gamma`` drafted tokens and added ``accepted`` (those
        and the verifier's own); the output ends at ``max_new_tokens`` or after a token of ``stop_ids``."""
        self.steps += 1
        self.drafted += gamma
        self.kept += kept
        self.step_accepted.append(kept)
        for token in accepted:
            self.tokens.append(token)
            if len(self.tokens) >= max_new_tokens or token in stop_ids:
                self.done = True
                break


@dataclass
class BatchTiming:
    """Wall time of a batch's decoding (seconds), split by phase."""

    draft: float = 0.0
    verify: float = 0.0
    accept: float = 0.0

    @property
    def total(self) -> float:
        return self.draft + self.verify + self.accept


@dataclass
class Decoded:
    """One method's decoding of a batch: per-sequence traces, the batch's timing, and both caches
    as decoding left them (each holding exactly its sequence's accepted tokens)."""

    traces: list[SequenceTrace]
    timing: BatchTiming
    verifier_cache: SequenceKVCache
    draft_cache: SequenceKVCache


@dataclass
class Prefill:
    """Both models' caches after the prompts ``(B, L)``; one prefill serves every method."""

    prompts: torch.Tensor
    verifier: SequenceKVCache
    draft: SequenceKVCache
    seconds: float


def prepare_for_decoding(pair: ModelPair) -> None:
    """Switch the pair to specattn's attention functions without transformers-built masks."""
    pair.draft.set_attn_implementation(DECODE_DRAFT_ATTENTION)
    pair.verifier.set_attn_implementation(DECODE_VERIFIER_ATTENTION)


class SpeculativeDecoder:
    """Speculative decoding of ``pair`` with sparse verification (see the module docstring)."""

    def __init__(self, pair: ModelPair, settings: Settings, eos_ids: tuple[int, ...] = ()):
        self.pair, self.settings, self.eos_ids = pair, settings, frozenset(eos_ids)
        self.sparse_layers = frozenset(range(settings.dense_layers, pair.n_verifier_layers))
        self.device = pair.verifier.device

    def _forward(self, model, tokens, positions, cache, **kwargs) -> torch.Tensor:
        """Final hidden states ``(B, T, d)`` of ``tokens (B, T)`` at ``positions (B, T)``, written into ``cache``."""
        return model.base_model(input_ids=tokens, position_ids=positions, **cache_kwargs(model, cache),
                                **kwargs).last_hidden_state

    def _logits(self, model, hidden: torch.Tensor) -> torch.Tensor:
        return model.get_output_embeddings()(hidden).float()

    @torch.inference_mode()
    def prefill(self, prompts: torch.Tensor) -> Prefill:
        """Prefill both models with ``prompts (B, L)``, ``L >= 2``: the verifier processes ``[0, L-1)``
        (the last prompt token is the first step's last accepted token), the draft ``[0, L-2)``."""
        start = time.perf_counter()
        prompts = prompts.to(self.device)
        batch, length = prompts.shape
        capacity = length + self.settings.max_new_tokens + 2 * (self.settings.gamma + 1)  # a done sequence keeps stepping
        verifier = SequenceKVCache.for_model(self.pair.verifier, batch, capacity)
        draft = SequenceKVCache.for_model(self.pair.draft, batch, capacity)
        positions = torch.arange(length, device=self.device).expand(batch, -1)
        for model, cache, n in ((self.pair.verifier, verifier, length - 1), (self.pair.draft, draft, length - 2)):
            for a, b in prefill_groups(batch, length) if n > 0 else ():
                self._forward(model, prompts[a:b, :n], positions[a:b, :n], cache.rows(a, b))
            cache.set_lengths(torch.full((batch,), n, device=self.device))
        return Prefill(prompts, verifier, draft, time.perf_counter() - start)

    @torch.inference_mode()
    def generate(self, prefill: Prefill, methods: list[Method], seed: int | list[int] = 0) -> Decoded:
        """Decode every sequence of ``prefill`` (its caches are copied, not changed) with its own
        ``methods[b]``; ``seed`` seeds sequence ``b``'s sampling and method with ``seed + b`` (a list: with
        ``seed[b]``, so a sequence can get the seed a run of its own gave it)."""
        s = self.settings
        batch = prefill.prompts.shape[0]
        seeds = [seed + b for b in range(batch)] if isinstance(seed, int) else [int(x) for x in seed]
        if len(seeds) != batch:
            raise SpecAttnError(f"{len(seeds)} seeds for a batch of {batch} sequences")
        verifier_cache, draft_cache = prefill.verifier.clone(), prefill.draft.clone()
        sequences = prefill.prompts.clone()  # grows by the accepted tokens of each step (ragged: padded)
        last = torch.full((batch,), prefill.prompts.shape[1] - 1, device=self.device)  # P_b
        generators = [torch.Generator().manual_seed(x) for x in seeds]
        active = [method.start(SampleContext.for_pair(self.pair, s, x, decoding=True))
                  for x, method in zip(seeds, methods)]
        traces = [SequenceTrace() for _ in range(batch)]
        policies = [DraftReadPolicy.for_pair(self.pair, s) for _ in range(batch)]  # the draft's reads
        timing = BatchTiming()
        while not all(trace.done for trace in traces):
            sequences = torch.cat([sequences, sequences.new_zeros(batch, s.gamma + 1)], dim=1)
            layouts = [StepLayout(int(p) + s.gamma + 2, int(p), s.gamma, s.chunk_size) for p in last.tolist()]
            for method, layout in zip(active, layouts):
                method.begin_steps(layout)
            tick = time.perf_counter()
            drafted, draft_probs = self._draft(active, layouts, sequences, last, draft_cache, generators, policies,
                                               [None if trace.done else trace.draft_reads for trace in traces])
            timing.draft += time.perf_counter() - tick
            tick = time.perf_counter()
            rows = torch.cat([sequences.gather(1, last[:, None]), drafted], dim=1)  # (B, gamma + 1)
            plans = [VerifierPlan(method, layout, self.sparse_layers, KVReads() if trace.done else trace.reads,
                                  s.query_block, int(p))
                     for method, layout, trace, p in zip(active, layouts, traces, last.tolist())]
            positions = last[:, None] + torch.arange(s.gamma + 1, device=self.device)
            hidden = self._forward(self.pair.verifier, rows, positions, verifier_cache, specattn_verifier=plans)
            logits = self._logits(self.pair.verifier, hidden)  # (B, gamma + 1, V)
            timing.verify += time.perf_counter() - tick
            tick = time.perf_counter()
            if s.temperature == 0:
                kept, added = greedy_accept(drafted, logits)
            else:
                target = warp(logits, s.temperature, s.top_k, s.top_p)
                kept, added = speculative_accept(drafted, draft_probs, target, generators)
            last = self._commit(traces, sequences, last, drafted, kept, added)
            for policy, k in zip(policies, kept.tolist()):
                policy.accepted(k)  # reuse's acceptance-triggered refresh
            for method, p in zip(active, last.tolist()):
                method.commit(p)  # draft rows at P_b .. P_b + k_b were accepted; later ones leave the history
            verifier_cache.set_lengths(last)  # the accepted tokens but the last one (the next step's first row)
            draft_cache.set_lengths(torch.minimum(draft_cache.lengths, last))
            timing.accept += time.perf_counter() - tick
        for trace in traces:
            del trace.tokens[s.max_new_tokens:]
        return Decoded(traces, timing, verifier_cache, draft_cache)

    @torch.inference_mode()
    def continuation_nll(self, prefill: Prefill, continuations: list[list[int]]) -> list[float]:
        """The dense verifier's summed NLL (nats) of each sequence's generated ``continuations[b]`` given
        its prompt, from the prefilled cache (one forward over the continuations)."""
        batch, length = prefill.prompts.shape
        longest = max(len(tokens) for tokens in continuations)
        if longest == 0:
            return [0.0] * batch
        cache = prefill.verifier.clone()
        targets = torch.zeros(batch, longest, dtype=torch.long, device=self.device)
        for b, tokens in enumerate(continuations):
            targets[b, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        rows = torch.cat([prefill.prompts[:, -1:], targets[:, :-1]], dim=1)
        positions = (length - 1) + torch.arange(longest, device=self.device).expand(batch, -1)
        plans = [VerifierPlan(None, None, frozenset(), KVReads(), self.settings.query_block, length - 1)
                 for _ in range(batch)]
        hidden = self._forward(self.pair.verifier, rows, positions, cache, specattn_verifier=plans)
        nll = torch.nn.functional.cross_entropy(self._logits(self.pair.verifier, hidden).transpose(1, 2), targets,
                                                reduction="none")  # (B, longest)
        return [float(nll[b, : len(tokens)].sum()) for b, tokens in enumerate(continuations)]

    def _draft(self, methods, layouts, sequences, last, cache, generators, policies, counts):
        """The draft's ``gamma`` proposals ``(B, gamma)`` and the distributions they came from
        (``(B, gamma, V)`` float64 when sampling, else None), feeding the methods' draft layers; each
        forward reads what sequence ``b``'s ``policies[b]`` says, counted into ``counts[b]`` (None: not)."""
        s = self.settings
        batch = len(methods)
        sinks = [{layer: [method.observe_draft] for layer in method.draft_layers} for method in methods]
        cache.set_lengths(last - 1)
        tokens = torch.stack([sequences.gather(1, (last - 1)[:, None]), sequences.gather(1, last[:, None])], 1)[..., 0]
        positions = (last - 1)[:, None] + torch.arange(2, device=self.device)
        proposals, dists = [], []
        for policy, layout in zip(policies, layouts):
            policy.begin_step(layout)
        for forward in range(s.gamma):
            observers = [DraftObserver(layout, sink, row_start=int(start), reads=policy.reads(forward),
                                       row_sinks=policy.row_sinks(forward))
                         for layout, sink, start, policy in zip(layouts, sinks, cache.lengths.tolist(), policies)]
            hidden = self._forward(self.pair.draft, tokens, positions, cache, specattn_draft=observers)
            cache.set_lengths(cache.lengths + tokens.shape[1])
            logits = self._logits(self.pair.draft, hidden[:, -1])  # (B, V)
            if s.temperature == 0:
                token = logits.argmax(dim=-1)
            else:
                probs = warp(logits, s.temperature, s.top_k, s.top_p)
                dists.append(probs)
                token = torch.stack([torch.multinomial(probs[b].cpu(), 1, generator=generators[b])[0]
                                     for b in range(batch)]).to(self.device)
            proposals.append(token)
            tokens, positions = token[:, None], positions[:, -1:] + 1
        for policy, count in zip(policies, counts):
            policy.end_step(count)
        return torch.stack(proposals, dim=1), (torch.stack(dists, dim=1) if dists else None)

    def _commit(self, traces, sequences, last, drafted, kept, added) -> torch.Tensor:
        """Write the accepted tokens of each sequence after its last accepted one; return the new ``P``."""
        s = self.settings
        new_last = last.clone()
        for b, trace in enumerate(traces):
            if trace.done:
                continue
            n = int(kept[b])
            accepted = drafted[b, :n].tolist() + [int(added[b])]
            sequences[b, int(last[b]) + 1 : int(last[b]) + 2 + n] = torch.tensor(accepted, device=self.device)
            new_last[b] = last[b] + n + 1
            trace.add_step(accepted, n, s.gamma, s.max_new_tokens, self.eos_ids if s.stop_at_eos else frozenset())
        return new_last
