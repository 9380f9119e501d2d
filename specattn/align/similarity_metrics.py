"""Similarity between a verifier layer's attention rows and every draft layer's (higher = closer).

All metrics take the verifier rows ``v`` ``(H, R, K)`` and the draft rows ``d`` ``(n_draft, H, R, K)``
for the same query rows (keys past a row's position are zero in both) and return per-draft-layer
sums over the ``H * R`` rows ``(n_draft,)``; callers divide by the row count.

* ``kl``: ``-KL(v || d)`` (the paper), with the draft row smoothed as
  ``d' = (d + eps) / (1 + eps * n)`` over its ``n`` causal keys so zero draft weights stay finite;
* ``js``: ``-JS(v, d)`` in nats, ``JS = (KL(v||m) + KL(d||m)) / 2``, ``m = (v + d) / 2`` (no smoothing needed);
* ``topp_recall``: the fraction of the verifier's own top-p mass that the draft's top-p set covers,
  ``sum(v[N_p(v) & N_p(d)]) / sum(v[N_p(v)])`` (token level, :mod:`specattn.methods.nucleus` semantics);
* ``cosine``: ``<v, d> / (|v| |d|)``.

Rows are normalised to sum 1 first (``head_agg=max`` rows are not distributions).
"""

from __future__ import annotations

import torch

from ..core.errors import SpecAttnError
from ..methods.nucleus import nucleus_mask

METRICS = ("kl", "js", "topp_recall", "cosine")


def _normalise(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum 1, in float32 (per-row sums over <= 256K keys; totals are float64)."""
    rows = rows.float()
    return rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(x, y)


def prepare_draft(metric: str, d: torch.Tensor, valid: torch.Tensor, *, eps: float = 1e-6,
                  p: float = 0.95) -> dict[str, torch.Tensor]:
    """Draft-side terms of ``metric`` for rows ``d`` ``(n_draft, H, R, K)``, computed once per block
    and reused for every verifier layer. ``valid``: ``(R, K)`` bool causal keys."""
    if metric not in METRICS:
        raise SpecAttnError(f"align.metric={metric!r} is unknown: allowed are {', '.join(METRICS)}")
    d = _normalise(d)
    if metric == "kl":
        n_valid = valid.sum(-1, keepdim=True).float()  # (R, 1)
        smoothed = (d + eps * valid) / (1 + eps * n_valid)
        return {"log_d": torch.log(smoothed.clamp_min(1e-30)) * valid}
    if metric == "js":
        return {"d": d, "d_log_d": _xlogy(d, d).sum(-1)}
    if metric == "topp_recall":
        return {"in_nucleus": nucleus_mask(d, p).float()}
    return {"d": d, "norm": d.norm(dim=-1)}


def score_verifier(metric: str, v: torch.Tensor, draft: dict[str, torch.Tensor], *, p: float = 0.95) -> torch.Tensor:
    """``(n_draft,)`` similarity of verifier rows ``v`` ``(H, R, K)`` to each draft layer, summed over rows."""
    v = _normalise(v)
    if metric == "kl":
        cross = torch.einsum("hrk,ihrk->ihr", v, draft["log_d"])
        return -(_xlogy(v, v).sum(-1)[None] - cross).double().sum(dim=(1, 2))
    if metric == "js":
        m = (v[None] + draft["d"]) / 2
        log_m = torch.log(m.clamp_min(1e-30))
        kl_v = _xlogy(v, v).sum(-1)[None] - (v[None] * log_m).sum(-1)
        kl_d = draft["d_log_d"] - (draft["d"] * log_m).sum(-1)
        return -((kl_v + kl_d) / 2).double().sum(dim=(1, 2))
    if metric == "topp_recall":
        own = v * nucleus_mask(v, p)  # (H, R, K) the verifier's nucleus mass
        covered = torch.einsum("hrk,ihrk->ihr", own, draft["in_nucleus"])
        return (covered / own.sum(-1)[None].clamp_min(1e-30)).double().sum(dim=(1, 2))
    dots = torch.einsum("hrk,ihrk->ihr", v, draft["d"])
    return (dots / (v.norm(dim=-1)[None] * draft["norm"]).clamp_min(1e-30)).double().sum(dim=(1, 2))


def row_similarity(metric: str, v: torch.Tensor, d: torch.Tensor, *, eps: float = 1e-6, p: float = 0.95,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(n_draft,)`` summed similarity of verifier rows ``v`` ``(H, R, K)`` to each draft layer's rows
    ``d`` ``(n_draft, H, R, K)``; ``valid`` ``(R, K)`` bool causal keys (default: every key)."""
    if valid is None:
        valid = torch.ones(v.shape[-2:], dtype=torch.bool, device=v.device)
    return score_verifier(metric, v, prepare_draft(metric, d, valid, eps=eps, p=p), p=p)
