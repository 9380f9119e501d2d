"""A KV-selection method: a scorer composed with a selector, and the one object the drivers call.

A method answers one question at each verification step: which chunks of the step's prefix each
sparse verifier layer reads (the first ``dense_layers`` read everything and never reach a method).
It is a small frozen dataclass whose fields are its settings (:class:`Method`), built from
``conf/method/<name>.yaml`` (its ``_target_`` and fields); its label, table parameters and identity
come from the fields. It composes two parts, built fresh for every sequence:

* a **scorer** says where the evidence comes from: the draft's attention rows
  (:class:`specattn.methods.draft_rows.DraftAttention`: per layer, aggregated or per head, the
  current step's rows and the last ``history`` steps', rolled back on rejection), the verifier's own
  rows (:class:`specattn.methods.verifier_rows.VerifierAttention`), or chunk scores computed from
  the layer's queries and keys (:class:`ChunkScorer`: Quest's bounds, recency, random);
* a **selector** (:mod:`specattn.methods.selectors`) turns the evidence into chunks: a rule per
  attention row (nucleus, top-k keys; OR-ed over the step's rows), or a choice over a step's chunk
  scores (nucleus over chunk mass, a budget's best chunks), optionally with always-visible sinks and
  a recent window.

The lifecycle, as the three drivers (the parallel and sequential evaluators of
:mod:`specattn.eval.perplexity` and the decoder of :mod:`specattn.decode.engine`) call it, on the
:class:`ActiveMethod` that :meth:`Method.start` returns for one sequence:

1. :meth:`ActiveMethod.begin_steps` with the :class:`~specattn.core.layout.StepLayout` of the
   steps the next forwards cover: all steps of a sample at once (both evaluators), or the one
   current step (the decoder, at every step);
2. :meth:`ActiveMethod.observe_draft` with per-head draft attention rows of those steps, from inside
   each draft layer that :attr:`ActiveMethod.draft_layers` names, as the draft computes them;
3. :meth:`ActiveMethod.select` from inside each sparse verifier layer's forward;
4. the decoder only: :meth:`ActiveMethod.commit` after acceptance, with the first position that was
   not accepted: draft rows at or past it leave the history (the current step's selection already
   used them, as the draft computed them before verification).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core.checks import built
from ..core.layout import StepLayout
from .context import ChunkScorer, LayerView, SampleContext, Scorer
from .draft_rows import DraftAttention, DraftFeed
from .verifier_rows import VerifierAttention


@dataclass(frozen=True)
class Method(ABC):
    """A KV-selection method: its dataclass fields are its settings (``metadata={"setting": False}``
    marks a field that changes memory or speed, not results). Subclasses set ``name`` and build their
    parts in :meth:`scorer` and :meth:`selector`."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        """Settings are checked when the method is built, not when it first runs: building its parts
        raises the one-line error of a bad setting (named by the part's field, e.g. ``p``)."""
        self.scorer()
        self.selector()

    @abstractmethod
    def scorer(self) -> Scorer | None:
        """A fresh scorer for one sequence (None: dense)."""

    @abstractmethod
    def selector(self):
        """A fresh :class:`~specattn.methods.selectors.Selector` for one sequence (None: dense)."""

    def keep_everything(self) -> "Method":
        """This method in a setting that reads every key (the contract tests check it equals dense)."""
        raise NotImplementedError(f"{type(self).__name__} has no keep-everything setting")

    def sparse_example(self) -> "Method":
        """This method in a setting that skips part of a short sample's reads (for the contract tests)."""
        raise NotImplementedError(f"{type(self).__name__} has no sparse example setting")

    def params(self) -> dict[str, Any]:
        """The settings that identify this method in results tables, from its fields (a field that is
        itself a settings object, such as a budget, contributes its own ``params()``)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if not field.metadata.get("setting", True):
                continue
            value = getattr(self, field.name)
            if hasattr(value, "params"):
                out.update(value.params())
            elif value is not None:
                out[field.name] = value
        return out

    @property
    def label(self) -> str:
        """The table row and run-folder name of this setting, e.g. ``specattn p=0.95``."""
        return " ".join([self.name, *(f"{k}={v}" for k, v in self.params().items())])

    @property
    def slug(self) -> str:
        """:attr:`label` as a folder name, e.g. ``specattn-p0.95``."""
        return "-".join(part.replace("=", "") for part in self.label.split()).replace("/", "_")

    def identity(self) -> dict[str, Any]:
        """What the results of this method depend on (the run signature hashes it): its name and every
        setting field, a nested settings object by its own ``identity()`` (a matched budget by its
        resolved fraction, not the run it came from)."""
        out: dict[str, Any] = {"method": self.name}
        for field in dataclasses.fields(self):
            if field.metadata.get("setting", True):
                value = getattr(self, field.name)
                out[field.name] = value.identity() if hasattr(value, "identity") else value
        return out

    def start(self, context: SampleContext) -> "ActiveMethod":
        """This method on one sequence (fresh scorer and selector state)."""
        return ActiveMethod(self, context)


class ActiveMethod:
    """``method``'s scorer and selector, fresh for one sequence, composed (see :mod:`specattn.methods.base`)."""

    def __init__(self, method: Method, context: SampleContext):
        self.method, self.context = method, context
        self.scorer, self.selector = method.scorer(), method.selector()
        self.feed = DraftFeed(self.scorer, self.selector, context) if isinstance(self.scorer, DraftAttention) else None
        if isinstance(self.scorer, ChunkScorer):
            self.scorer.start(context)

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def label(self) -> str:
        return self.method.label

    @property
    def draft_layers(self) -> set[int]:
        """Draft layers whose attention rows :meth:`observe_draft` must see."""
        return self.feed.layers if self.feed is not None else set()

    def begin_steps(self, layout: StepLayout) -> None:
        """The next forwards cover ``layout``'s verification steps."""
        self.layout = layout
        for part in (self.selector, self.scorer if isinstance(self.scorer, ChunkScorer) else None, self.feed):
            if part is not None:
                part.begin_steps(layout)

    def observe_draft(self, draft_layer: int, probs: torch.Tensor, rows: torch.Tensor) -> None:
        """Per-head draft attention ``(Hd, R, K)`` of draft rows ``rows (R,)`` of the current layout."""
        self.feed.observe(draft_layer, probs, rows)

    def select(self, view: LayerView) -> torch.Tensor | None:
        """``(S, H, n_chunks)`` bool chunks read per step of ``view.steps`` (``H`` = 1 or the verifier's
        KV heads); chunks outside a step's prefix are ignored. ``None``: read everything."""
        if self.scorer is None:
            return None
        if self.feed is not None:
            evidence = self.feed.scores(self.context.layer_map[view.layer], view.steps)
        elif isinstance(self.scorer, VerifierAttention):
            evidence = self.scorer.evidence(view, self.layout, self.selector)
        else:
            evidence = self.scorer.score(view)
        selection = evidence if evidence.dtype == torch.bool else self.selector.choose(evidence, view.steps)
        return self.selector.finish(selection, view.steps)

    def commit(self, accepted_until: int) -> None:
        """The decoder accepted every position before ``accepted_until`` (rejected draft rows leave the history)."""
        if self.feed is not None:
            self.feed.commit(accepted_until)


def instantiate_method(spec, key_prefix: str = "", **kwargs) -> Method:
    """Build a method from its config node (:func:`specattn.core.checks.built`): a bad setting is one
    line naming its full config key, ``key_prefix`` + the field's name."""
    return built(spec, key_prefix.rstrip("."), **kwargs)
