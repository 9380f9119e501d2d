"""Which keys a verification row may see: the one definition that the perplexity evaluator, the
decoder and every attention backend implement.

A query row at position ``r`` of a verification step whose prefix is ``[0, s)`` (the KV cache
before the step; ``s`` is the step's first row) sees key ``j`` iff ``j <= r`` and either ``j >= s``
(the step's own tokens, causally, itself included) or ``j``'s chunk ``j // chunk_size`` is
selected. A prefill row has ``s = 0``: it sees its whole causal past. Selected chunks past the
prefix change nothing (those keys are the step's own or in the future), so a chunk the prefix holds
only partly is read for its prefix keys only.
"""

from __future__ import annotations

import math

import torch


def visible_keys(positions: torch.Tensor, starts: torch.Tensor, chunk_sel: torch.Tensor, chunk_size: int,
                 n_keys: int) -> torch.Tensor:
    """``(..., R, n_keys)`` bool: the keys each row may see.

    Args:
        positions: ``(R,)`` long, each row's position.
        starts: ``(R,)`` long, the first row of each row's step (0 for prefill rows).
        chunk_sel: ``(..., R, C)`` bool, the chunks selected for each row (``...``: e.g. heads);
            chunks at or past ``C`` count as not selected.
        chunk_size: keys per chunk.
        n_keys: keys ``[0, n_keys)`` to decide for.
    """
    keys = torch.arange(n_keys, device=positions.device)
    causal = keys[None, :] <= positions[:, None]
    own = keys[None, :] >= starts[:, None]
    missing = math.ceil(n_keys / chunk_size) - chunk_sel.shape[-1]
    if missing > 0:
        chunk_sel = torch.nn.functional.pad(chunk_sel, (0, missing), value=False)
    selected = chunk_sel[..., torch.div(keys, chunk_size, rounding_mode="floor")]
    return causal & (own | selected)


def draft_visible_keys(positions: torch.Tensor, prefix: int, chunks: torch.Tensor, chunk_size: int,
                       n_keys: int) -> torch.Tensor:
    """``(R, n_keys)`` bool: the keys each draft row sees under a sparse draft read (``decode.draft_reads``).

    A draft forward of a step whose prefix is ``[0, prefix)`` reads the chunks ``chunks`` of the prefix
    (a chunk the prefix holds partly: its prefix keys) plus the step's own keys ``[prefix, ...)``, causally:
    the row at ``r`` sees key ``j`` iff ``j <= r`` and (``j >= prefix``, or ``j``'s chunk is in ``chunks``, or
    ``j == r``). The last clause only matters for the row at ``prefix - 1`` (the first forward's first row,
    the last accepted token but one), which always sees itself.

    Args:
        positions: ``(R,)`` long, the rows' positions.
        chunks: ``(C,)`` bool, the prefix chunks read (chunks at or past ``C`` count as not read).
    """
    starts = torch.full_like(positions, prefix)
    visible = visible_keys(positions, starts, chunks.to(positions.device)[None].expand(len(positions), -1),
                           chunk_size, n_keys)
    own = torch.arange(n_keys, device=positions.device)[None, :] == positions[:, None]
    return visible | own
