"""Quest's page bounds on the device for the graph decoder (:mod:`specattn.decode.graph_engine`): per verifier layer,
each page's (chunk's) elementwise key min and max, kept as keys are committed, and the page scores a step's queries
give them (Quest, Tang et al. 2024; the CPU method: :class:`specattn.methods.quest.QuestBounds`)."""

from __future__ import annotations

import torch


class QuestPages:
    """Quest's per-page key bounds of one verifier layer, on the device: ``lo, hi (B, Hkv, pages, D)`` in the keys'
    type ``dtype`` (exact: a page's min or max is one of its keys; bfloat16 keys: half the bytes float32 bounds would
    take to keep and to read every step), kept as keys are committed (a partial page's bounds cover its committed keys
    only)."""

    def __init__(self, batch: int, kv_heads: int, pages: int, head_dim: int, device, dtype=torch.float32):
        self.lo = torch.full((batch, kv_heads, pages, head_dim), float("inf"), dtype=dtype, device=device)
        self.hi = torch.full_like(self.lo, float("-inf"))

    def fold(self, keys: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, chunk_size: int, width: int) -> None:
        """Fold the keys ``[start[b], stop[b])`` (at most ``width`` of them) of the cache layer ``keys (B, Hkv,
        cap, D)`` into their pages' bounds (no host synchronisation): one Triton launch for a step's few keys where
        the kernels run (:mod:`specattn.gpu.kernels.quest_fold`), else a gather and two ``scatter_reduce``."""
        from ..gpu.kernels import available

        if available(keys.device):
            from ..gpu.kernels import quest_fold

            if quest_fold.applies(keys, width):
                quest_fold.launch(keys, self.lo, self.hi, start.contiguous(), stop.contiguous(), chunk_size, width)
                return
        self.fold_torch(keys, start, stop, chunk_size, width)

    def fold_torch(self, keys: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, chunk_size: int,
                   width: int) -> None:
        """:meth:`fold` by a gather and two ``scatter_reduce`` (any device, any width; 16-bit bounds reduced in a
        float32 copy, exact, then written back: the prefill's fold, once)."""
        b, hkv, _, d = self.lo.shape
        pos = start.long()[:, None] + torch.arange(width, device=keys.device)[None, :]  # (B, W)
        valid = (pos < stop.long()[:, None]) & (pos < keys.shape[2])
        gathered = keys.gather(2, pos.clamp(max=keys.shape[2] - 1)[:, None, :, None].expand(b, hkv, width, d)).float()
        inside = valid[:, None, :, None]
        page = (pos // chunk_size).clamp(max=self.lo.shape[2] - 1)[:, None, :, None].expand(b, hkv, width, d)
        lo, hi = self.lo.float(), self.hi.float()  # the bounds themselves when they are float32
        lo.scatter_reduce_(2, page, gathered.masked_fill(~inside, float("inf")), "amin")
        hi.scatter_reduce_(2, page, gathered.masked_fill(~inside, float("-inf")), "amax")
        if lo is not self.lo:
            self.lo.copy_(lo), self.hi.copy_(hi)

    def scores(self, query: torch.Tensor, prefix_keys: torch.Tensor, scaling: float) -> torch.Tensor:
        """Quest's chunk estimates of one layer's step: ``query (B, Hq, T, D)`` (Hq a multiple of Hkv; the keys'
        type), ``prefix_keys (B, NC)`` (0: a chunk outside the prefix, never scored) -> ``(B, Hkv, NC)`` float32, each
        query row's softmax over its pages' upper bounds ``sum_d max(q_d lo_d, q_d hi_d) * scaling``, the max over
        the rows of a KV head's query heads (:class:`specattn.methods.quest.QuestBounds`). The bounds come from one
        Triton launch where the kernels run and the queries are 16-bit (:mod:`specattn.gpu.kernels.quest_bound`),
        else from float32 GEMMs."""
        from ..gpu.kernels import available

        b, hq, t, d = query.shape
        hkv = self.lo.shape[1]
        q = query.reshape(b, hkv, (hq // hkv) * t, d)  # a KV head's query rows, (head, row) in order
        if available(query.device):
            from ..gpu.kernels import quest_bound

            if quest_bound.applies(query, d):
                bound = torch.empty(q.shape[:3] + (self.lo.shape[2],), dtype=torch.float32, device=query.device)
                bound = quest_bound.launch(q.contiguous(), self.lo, self.hi, prefix_keys.contiguous(), scaling, bound)
                return torch.softmax(bound, dim=-1).amax(dim=2)
        return self.scores_torch(query, prefix_keys, scaling)

    def scores_torch(self, query: torch.Tensor, prefix_keys: torch.Tensor, scaling: float) -> torch.Tensor:
        """:meth:`scores` with the bounds from float32 GEMMs (:meth:`bounds_torch`; any device and type)."""
        b, hq, t, d = query.shape
        q = query.reshape(b, self.lo.shape[1], (hq // self.lo.shape[1]) * t, d)
        return torch.softmax(self.bounds_torch(q, prefix_keys, scaling), dim=-1).amax(dim=2)

    def bounds_torch(self, q: torch.Tensor, prefix_keys: torch.Tensor, scaling: float) -> torch.Tensor:
        """The page bounds in float32 GEMMs: ``q (B, Hkv, R, D)`` -> ``(B, Hkv, R, NC)``, -inf outside the prefix."""
        q = q.float()
        bound = (torch.matmul(q.clamp(min=0), self.hi.float().transpose(-1, -2))
                 + torch.matmul(q.clamp(max=0), self.lo.float().transpose(-1, -2))) * scaling
        return bound.masked_fill((prefix_keys == 0)[:, None, None, :], float("-inf"))
