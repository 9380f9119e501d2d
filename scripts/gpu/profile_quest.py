"""Where Quest's selection spends its time in the graph decoder (issue 23: Quest matched took 22.8 ms a step at 32K
batch 16 on the real pair, StreamingLLM 14.7 at the same kept fraction, fourteenth session). At the verifier's shapes
(Qwen2.5-Coder-1.5B: 12 query heads, 2 KV heads, head dim 128, T = 5; decode_real's cache capacity, 16-key pages),
random bf16 queries and keys, every page's bounds filled, a third of the prefix's keys as the budget:

* per part of one layer's selection, CUPTI GPU time per call (``profile_kernel.kernel_us``): the page scores
  (:meth:`QuestPages.scores`: the bounds by ``kernels/quest_bound.py`` from bounds in the keys' type, the decoder's,
  and from float32 bounds, and by float32 GEMMs as before), the chunk
  choice by a sort in one program a row (``kernels/budget_top.py``) and in torch (``top_chunks_torch``; the masks
  checked equal), the lists (``chunk_lists``), the bounds' update (``fold``: ``kernels/quest_fold.py`` into either
  bounds, and the torch fold);
* a step's selections (one per layer, 28) as one CUDA graph, replayed: wall time per step with each chunk choice
  (and the dispatch ``top_chunks`` with either page bounds).

Run on the GPU machine: ``python3 scripts/gpu/profile_quest.py`` (about a minute)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import kernel_us, kernels_line  # noqa: E402

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.bench.timing import graph_ms  # noqa: E402
from specattn.decode.graph_engine import capacity_for, prefix_chunk_keys  # noqa: E402
from specattn.decode.quest_pages import QuestPages  # noqa: E402
from specattn.gpu.attention.sparse import chunk_lists  # noqa: E402
from specattn.gpu.kernels import budget_top  # noqa: E402
from specattn.methods.budget import top_chunks, top_chunks_torch  # noqa: E402
from specattn.methods.quest import QUEST_MIN_PAGES  # noqa: E402

MODEL, T, CHUNK, LAYERS, KEPT = "qwen2.5-coder-1.5b", 5, 16, 28, 0.33
POINTS = [(32768, 16), (32768, 32), (16384, 16), (8192, 16)]  # (context, batch)


def by_sort(scores, prefix_keys, budget, min_chunks):
    """The chunk choice by the sort kernel (:mod:`specattn.gpu.kernels.budget_top`) at any row length (``top_chunks``
    dispatches to it up to ``SORT_KERNEL_MAX_CHUNKS`` only)."""
    return budget_top.launch(scores.contiguous(), prefix_keys.contiguous(), budget, min_chunks,
                             torch.empty(scores.shape, dtype=torch.bool, device=scores.device))


def us_total(fn) -> tuple[float, str]:
    us = kernel_us(fn)
    return sum(us.values()), kernels_line(us)


def main() -> None:
    torch.manual_seed(0)
    hq, hkv, d = MODELS[MODEL]
    print(f"{'context':>7} {'B':>3} {'part':36} {'us':>8}  kernels (us per call)")
    for context, batch in POINTS:
        cap = capacity_for(context, 256, T - 1)
        n_cols = -(-cap // CHUNK)
        keys = torch.randn(batch, hkv, cap, d, device="cuda", dtype=torch.bfloat16)
        last = torch.full((batch,), context, device="cuda")
        pages = QuestPages(batch, hkv, n_cols, d, "cuda", keys.dtype)  # the decoder's: bounds in the keys' type
        pages.fold(keys, torch.zeros_like(last), last, CHUNK, cap)
        pages32 = QuestPages(batch, hkv, n_cols, d, "cuda")  # float32 bounds (the fifteenth session's)
        pages32.fold(keys, torch.zeros_like(last), last, CHUNK, cap)
        assert torch.equal(pages.lo.float(), pages32.lo) and torch.equal(pages.hi.float(), pages32.hi), "bounds"
        prefix = prefix_chunk_keys(last, n_cols, CHUNK)
        budget = KEPT * (last + T).double() - T
        query = torch.randn(batch, hq, T, d, device="cuda", dtype=torch.bfloat16)
        scaling = d ** -0.5
        scores = pages.scores(query, prefix, scaling)
        assert torch.allclose(scores, pages.scores_torch(query, prefix, scaling), rtol=1e-4, atol=1e-7), "quest_bound"
        mask = top_chunks_torch(scores, prefix, budget, QUEST_MIN_PAGES)
        assert torch.equal(mask, by_sort(scores, prefix, budget, QUEST_MIN_PAGES)), "budget_top != torch"
        parts = {
            "page scores": lambda: pages.scores(query, prefix, scaling),
            "page scores (float32 bounds)": lambda: pages32.scores(query, prefix, scaling),
            "page scores (torch GEMMs)": lambda: pages32.scores_torch(query, prefix, scaling),
            "chunk choice (budget_top)": lambda: by_sort(scores, prefix, budget, QUEST_MIN_PAGES),
            "chunk choice (torch)": lambda: top_chunks_torch(scores, prefix, budget, QUEST_MIN_PAGES),
            "lists": lambda: chunk_lists(mask, n_cols),
            "bounds update (fold)": lambda: pages.fold(keys, last, last + T, CHUNK, T),
            "bounds update (fold, float32 bounds)": lambda: pages32.fold(keys, last, last + T, CHUNK, T),
            "bounds update (torch fold)": lambda: pages32.fold_torch(keys, last, last + T, CHUNK, T),
        }
        for name, fn in parts.items():
            total, detail = us_total(fn)
            print(f"{context:>7} {batch:>3} {name:36} {total:>8.1f}  {detail}", flush=True)
        kernel_scores = pages.scores
        gemm_scores = pages32.scores_torch
        for name, score, choose in (("budget_top", kernel_scores, by_sort), ("torch", kernel_scores, top_chunks_torch),
                                    ("top_chunks", kernel_scores, top_chunks),
                                    ("top_chunks, GEMM bounds", gemm_scores, top_chunks)):
            def step(score=score, choose=choose):
                for _ in range(LAYERS):
                    chosen = choose(score(query, prefix, scaling), prefix, budget, QUEST_MIN_PAGES)
                    chunk_lists(chosen, n_cols)
            ms = graph_ms([step], reps=20)
            print(f"{context:>7} {batch:>3} {'step, ' + str(LAYERS) + ' layers, ' + name:36} {ms * 1e3:>8.1f}  "
                  f"(one CUDA graph replayed, wall time)", flush=True)
        del keys, pages, pages32
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
