"""Similarity between a verifier layer's attention rows and every draft layer's (higher = closer).

Each metric is a small dataclass registered in :data:`METRICS` under its ``align.metric`` name, with one
signature: :meth:`SimilarityMetric.prepare` takes the draft rows ``d`` ``(n_draft, H, R, K)`` once per
block of query rows (and the ``(R, K)`` causal keys), :meth:`SimilarityMetric.score` the verifier rows
``v`` ``(H, R, K)`` of one layer and returns per-draft-layer sums over the ``H * R`` rows ``(n_draft,)``
float64 (callers divide by the row count). Keys past a row's position are zero in both; rows are
normalised to sum 1 first (``head_agg=max`` rows are not distributions).

* ``kl``: ``-KL(v || d)`` (the paper), with the draft row smoothed as
  ``d' = (d + eps) / (1 + eps * n)`` over its ``n`` causal keys so zero draft weights stay finite;
* ``js``: ``-JS(v, d)`` in nats, ``JS = (KL(v||m) + KL(d||m)) / 2``, ``m = (v + d) / 2`` (no smoothing needed);
* ``topp_recall``: the fraction of the verifier's own top-p mass that the draft's top-p set covers,
  ``sum(v[N_p(v) & N_p(d)]) / sum(v[N_p(v)])`` (token level, :mod:`specattn.methods.nucleus` semantics);
* ``cosine``: ``<v, d> / (|v| |d|)``.

A new metric is a class here with ``prepare`` and ``score``, added to :data:`METRICS`; the tests loop
over the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..core.errors import SpecAttnError
from ..methods.nucleus import nucleus_mask


def _normalise(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum 1, in float32 (per-row sums over <= 256K keys; totals are float64)."""
    rows = rows.float()
    return rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(x, y)


class SimilarityMetric(ABC):
    """One similarity (see the module docstring for the signature)."""

    name: str

    @abstractmethod
    def prepare(self, d: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draft-side terms for normalised rows ``d`` ``(n_draft, H, R, K)``; ``valid`` ``(R, K)`` bool."""

    @abstractmethod
    def score(self, v: torch.Tensor, draft: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(n_draft,)`` float64 similarity of normalised verifier rows ``v`` ``(H, R, K)``, summed over rows."""


@dataclass(frozen=True)
class KL(SimilarityMetric):
    eps: float = 1e-6  # smoothing mass per causal key
    name = "kl"

    def prepare(self, d, valid):
        n_valid = valid.sum(-1, keepdim=True).float()  # (R, 1)
        smoothed = (d + self.eps * valid) / (1 + self.eps * n_valid)
        return {"log_d": torch.log(smoothed.clamp_min(1e-30)) * valid}

    def score(self, v, draft):
        cross = torch.einsum("hrk,ihrk->ihr", v, draft["log_d"])
        return -(_xlogy(v, v).sum(-1)[None] - cross).double().sum(dim=(1, 2))


@dataclass(frozen=True)
class JS(SimilarityMetric):
    name = "js"

    def prepare(self, d, valid):
        return {"d": d, "d_log_d": _xlogy(d, d).sum(-1)}

    def score(self, v, draft):
        m = (v[None] + draft["d"]) / 2
        log_m = torch.log(m.clamp_min(1e-30))
        kl_v = _xlogy(v, v).sum(-1)[None] - (v[None] * log_m).sum(-1)
        kl_d = draft["d_log_d"] - (draft["d"] * log_m).sum(-1)
        return -((kl_v + kl_d) / 2).double().sum(dim=(1, 2))


@dataclass(frozen=True)
class TopPRecall(SimilarityMetric):
    p: float = 0.95  # nucleus mass of both sides
    name = "topp_recall"

    def prepare(self, d, valid):
        return {"in_nucleus": nucleus_mask(d, self.p).float()}

    def score(self, v, draft):
        own = v * nucleus_mask(v, self.p)  # (H, R, K) the verifier's nucleus mass
        covered = torch.einsum("hrk,ihrk->ihr", own, draft["in_nucleus"])
        return (covered / own.sum(-1)[None].clamp_min(1e-30)).double().sum(dim=(1, 2))


@dataclass(frozen=True)
class Cosine(SimilarityMetric):
    name = "cosine"

    def prepare(self, d, valid):
        return {"d": d, "norm": d.norm(dim=-1)}

    def score(self, v, draft):
        dots = torch.einsum("hrk,ihrk->ihr", v, draft["d"])
        return (dots / (v.norm(dim=-1)[None] * draft["norm"]).clamp_min(1e-30)).double().sum(dim=(1, 2))


#: ``align.metric`` name -> metric class (built with the ``align.*`` settings it has fields for)
METRICS: dict[str, type[SimilarityMetric]] = {cls.name: cls for cls in (KL, JS, TopPRecall, Cosine)}


def build_metric(name: str, eps: float = 1e-6, p: float = 0.95) -> SimilarityMetric:
    """The metric ``name`` with the settings it reads (``eps`` for kl, ``p`` for topp_recall)."""
    if name not in METRICS:
        raise SpecAttnError(f"align.metric={name!r} is unknown: allowed are {', '.join(METRICS)}")
    cls = METRICS[name]
    settings = {"eps": eps, "p": p}
    return cls(**{key: value for key, value in settings.items() if key in cls.__dataclass_fields__})


def row_similarity(metric: str, v: torch.Tensor, d: torch.Tensor, *, eps: float = 1e-6, p: float = 0.95,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(n_draft,)`` summed similarity of verifier rows ``v`` ``(H, R, K)`` to each draft layer's rows
    ``d`` ``(n_draft, H, R, K)``; ``valid`` ``(R, K)`` bool causal keys (default: every key)."""
    if valid is None:
        valid = torch.ones(v.shape[-2:], dtype=torch.bool, device=v.device)
    built = build_metric(metric, eps, p)
    return built.score(_normalise(v), built.prepare(_normalise(d), valid))


def prepare_block(metrics: dict[str, SimilarityMetric], d: torch.Tensor, valid: torch.Tensor) -> dict[str, dict]:
    """Every metric's draft-side terms for raw draft rows ``d`` ``(n_draft, H, R, K)`` (normalised once)."""
    d = _normalise(d)
    return {name: metric.prepare(d, valid) for name, metric in metrics.items()}


def score_block(metrics: dict[str, SimilarityMetric], v: torch.Tensor, prepared: dict[str, dict]) -> dict:
    """Every metric's ``(n_draft,)`` scores of raw verifier rows ``v`` ``(H, R, K)`` (normalised once)."""
    v = _normalise(v)
    return {name: metric.score(v, prepared[name]) for name, metric in metrics.items()}
