"""Which drafted tokens a verification step keeps, and the token it adds.

* greedy (``temperature = 0``): the longest prefix of the drafted tokens that equals the verifier's
  argmax at each position, plus the verifier's argmax after it (the correction, or the bonus token
  when every drafted token is kept). The output is exactly the verifier's greedy decoding.
* sampling (``temperature > 0``): standard speculative sampling (Leviathan et al. 2023; Chen et al.
  2023). Drafted token ``d_i`` is kept with probability ``min(1, p_i(d_i) / q_i(d_i))``; at the first
  rejection the added token is drawn from ``norm(max(0, p_i - q_i))``; if all are kept it is drawn
  from ``p_{gamma}``. ``p`` and ``q`` are the verifier's and the draft's distributions after the same
  warping (temperature, then top-k, then top-p), so every generated token is distributed exactly as
  the verifier's own warped sampling would draw it.

Each sequence draws from its own ``torch.Generator``, so a sequence's output does not depend on the
other sequences of its batch.
"""

from __future__ import annotations

import torch


def warp(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """``(..., V)`` logits -> float64 probabilities after temperature, top-k (0: off) and top-p (1: off).

    Top-p keeps the smallest set of tokens, most probable first, whose mass reaches ``top_p`` (ties
    at the boundary kept), as :mod:`specattn.methods.nucleus` defines the nucleus.
    """
    scaled = logits.double() / temperature
    if top_k and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, -torch.inf)
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        from ..methods.nucleus import nucleus_mask

        probs = probs * nucleus_mask(probs, top_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def greedy_accept(drafted: torch.Tensor, verifier_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``drafted (B, g)``, ``verifier_logits (B, g + 1, V)`` -> ``(kept (B,), next_token (B,))``."""
    target = verifier_logits.argmax(dim=-1)  # (B, g + 1)
    matches = (drafted == target[:, :-1]).long()
    kept = matches.cumprod(dim=1).sum(dim=1)
    return kept, target.gather(1, kept[:, None]).squeeze(1)


def speculative_accept(drafted: torch.Tensor, draft_probs: torch.Tensor, target_probs: torch.Tensor,
                       generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling.

    Args:
        drafted: ``(B, g)`` drafted tokens.
        draft_probs: ``(B, g, V)`` the draft's (warped) distributions they were drawn from.
        target_probs: ``(B, g + 1, V)`` the verifier's (warped) distributions at the same rows.
        generators: one per sequence (CPU generators).
    Returns:
        ``(kept (B,), next_token (B,))``.
    """
    batch, gamma = drafted.shape
    kept = torch.empty(batch, dtype=torch.long)
    added = torch.empty(batch, dtype=torch.long)
    p = target_probs.double().cpu()
    q = draft_probs.double().cpu()
    tokens = drafted.cpu()
    for b in range(batch):
        uniform = torch.rand(gamma, generator=generators[b], dtype=torch.float64)
        p_d = p[b, torch.arange(gamma), tokens[b]]
        q_d = q[b, torch.arange(gamma), tokens[b]]
        accepted = (uniform * q_d < p_d).long().cumprod(0)  # u < p/q, without dividing by q = 0
        n = int(accepted.sum())
        if n < gamma:
            residual = (p[b, n] - q[b, n]).clamp(min=0)
            if float(residual.sum()) <= 0:  # p == q at this row: a rejection has probability 0
                residual = p[b, n]
            dist = residual
        else:
            dist = p[b, gamma]
        kept[b] = n
        added[b] = torch.multinomial(dist / dist.sum(), 1, generator=generators[b])[0]
    return kept.to(drafted.device), added.to(drafted.device)
