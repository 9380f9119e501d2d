"""Perplexity of the verifier under each method's sparse attention, the paper's protocol.

Each sample is ``seq_len`` tokens; the first ``prefill_len`` positions are prefilled densely and
every later position is scored in decoding mode, one verification step of ``gamma + 1`` rows at a
time (:class:`specattn.core.layout.StepLayout`). Two implementations compute the same numbers:

* ``parallel`` (default): one draft forward and one verifier forward per method over the whole
  sample; every step's selection is applied as an attention mask over all scored rows at once.
  This is exact because a row's hidden states depend only on its own selection and on earlier
  rows' keys and values, which is precisely what decoding computes.
  On CUDA in fp16/bf16 the sparse layers' full steps run the decoder's chunk-list kernel
  (:mod:`specattn.hooks.verifier_attention`), reading only the selected chunks; elsewhere a mask.
* ``parallel_mask``: the same, always through the mask (the reference the kernel is checked against).
* ``sequential``: steps through the sample with real KV caches exactly as decoding would: a
  draft forward over the step's tokens, then a verifier forward over the step's rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..core.coverage import LayerCoverage
from ..core.kv_reads import KVReads
from ..core.layout import StepLayout
from ..core.settings import Settings
from ..hooks.draft_capture import DRAFT_ATTENTION, DraftObserver
from ..hooks.forward import cache_kwargs, new_cache
from ..hooks.verifier_attention import VERIFIER_ATTENTION, VerifierPlan
from ..methods.base import ActiveMethod, Method
from ..methods.context import SampleContext
from ..models.pair import ModelPair

IMPLEMENTATIONS = ("parallel", "parallel_mask", "sequential")  # Settings.impl


@dataclass
class MethodScore:
    """One method on one sample: summed negative log-likelihood (nats) and KV reads."""

    nll_sum: float = 0.0
    tokens: int = 0
    reads: KVReads = field(default_factory=KVReads)
    coverage: LayerCoverage | None = None  # per sparse layer, when asked for


def prepare(pair: ModelPair) -> None:
    """Switch the pair to specattn's attention functions (plain SDPA when given no plan)."""
    pair.draft.set_attn_implementation(DRAFT_ATTENTION)
    pair.verifier.set_attn_implementation(VERIFIER_ATTENTION)


def _nll(pair: ModelPair, hidden: torch.Tensor, targets: torch.Tensor, block: int = 1024) -> float:
    """Summed cross-entropy (nats) of ``targets`` ``(R,)`` given final hidden states ``(R, d)``."""
    head = pair.verifier.get_output_embeddings()
    total = 0.0
    for lo in range(0, hidden.shape[0], block):
        logits = head(hidden[lo : lo + block]).float()
        total += float(torch.nn.functional.cross_entropy(logits, targets[lo : lo + block], reduction="sum"))
    return total


def _observer(layout: StepLayout, active: list[ActiveMethod]) -> DraftObserver | None:
    sinks: dict[int, list] = {}
    for method in active:
        for layer in method.draft_layers:
            sinks.setdefault(layer, []).append(method.observe_draft)
    return DraftObserver(layout, sinks) if sinks else None


def evaluate_sample(pair: ModelPair, input_ids: torch.Tensor, methods: list[Method], settings: Settings,
                    seed: int = 0, progress: bool = False, layout: StepLayout | None = None,
                    coverage: bool = False) -> list[MethodScore]:
    """Score one sample ``input_ids`` ``(seq_len,)`` under each method; returns one score per method.

    ``layout``: the sample's steps (default: ``settings.prefill_frac`` of it prefilled, then regular steps).
    ``coverage``: also measure each sparse layer's coverage (:mod:`specattn.core.coverage`; costs a dense
    softmax per sparse layer).
    """
    if layout is None:
        layout = StepLayout.for_sample(input_ids.numel(), settings.prefill_frac, settings.gamma, settings.chunk_size)
    context = SampleContext.for_pair(pair, settings, seed)
    active = [method.start(context) for method in methods]
    for method in active:
        method.begin_steps(layout)
    plans = [VerifierPlan(m, layout, frozenset(context.sparse_layers), KVReads(), settings.query_block,
                          coverage=LayerCoverage() if coverage else None, kernel=settings.impl == "parallel")
             for m in active]
    observer = _observer(layout, active)
    ids = input_ids.to(pair.verifier.device)
    run = _sequential if settings.impl == "sequential" else _parallel
    with torch.inference_mode():
        return run(pair, ids, layout, plans, observer, progress)


def _parallel(pair, ids, layout, plans, observer, progress) -> list[MethodScore]:
    inputs, targets = ids[None, :-1], ids[layout.prefill_len + 1 :]
    if observer is not None:
        pair.draft.base_model(inputs, specattn_draft=observer)
    scores = []
    for plan in plans:
        hidden = pair.verifier.base_model(inputs, specattn_verifier=plan).last_hidden_state[0]
        nll = _nll(pair, hidden[layout.prefill_len :], targets)
        scores.append(MethodScore(nll, targets.numel(), plan.reads, plan.coverage))
    return scores


def _sequential(pair, ids, layout, plans, observer, progress) -> list[MethodScore]:
    prefill = ids[None, : layout.prefill_len]
    draft_cache = new_cache(pair.draft)
    # the observer is passed for prefill too, so the draft computes every row the same way as in
    # the parallel forward (prefill rows are not draft rows: nothing is observed)
    pair.draft.base_model(prefill, specattn_draft=observer, **cache_kwargs(pair.draft, draft_cache))
    verifier_cache = new_cache(pair.verifier)
    pair.verifier.base_model(prefill, **cache_kwargs(pair.verifier, verifier_cache))
    caches = [copy.deepcopy(verifier_cache) for _ in plans]
    scores = [MethodScore(reads=plan.reads, coverage=plan.coverage) for plan in plans]
    for step in tqdm(range(layout.n_steps), desc="steps", leave=False, disable=not progress):
        start, end = layout.step_rows(step)
        tokens = ids[None, start:end]
        if observer is not None:
            pair.draft.base_model(tokens, specattn_draft=observer, **cache_kwargs(pair.draft, draft_cache))
        for plan, cache, score in zip(plans, caches, scores):
            hidden = pair.verifier.base_model(tokens, specattn_verifier=plan,
                                              **cache_kwargs(pair.verifier, cache)).last_hidden_state[0]
            score.nll_sum += _nll(pair, hidden, ids[start + 1 : end + 1])
            score.tokens += end - start
    return scores
