"""The attention kernel over short chunk lists on cold caches (issues 23/24): why the draft's windowed forwards take
14 us a layer in the decoder's graph (eleventh session's phase profile) against 5.6 us in ``profile_kernel.py``
(one layer's inputs, L2-resident), and which split launch is fastest there.

Shapes as the decoder runs them at 32K batch 16 (bfloat16 random inputs): the draft (Qwen2.5-Coder-0.5B: 14 query
heads over 2 KV heads, head dim 64) reading the sinks and the recent window (``draft_sinks`` 16, ``draft_window``
1024: 66 chunks of 16 keys, one list for both KV heads) at T = 1 over 22 policy layers, densely at T = 1 (every forward
of a dense draft: the launch candidates of ``experiment.draft_split``) and at T = 2 (forward 0 of the first_*
policies); the verifier (1.5B: 12 over 2, head dim 128) at T = 5 over 26 sparse layers with random
selections of 15% and 33% of the chunks. Each layer its own cache (the whole set: 6.4 and 15 GB), so nothing is in L2
when a layer reads it, as in the decoder. Per launch (:class:`SplitConfig`): the graph of all layers' calls replayed
(CUDA events, median of 20 replays after 3) per layer, the split and merge kernels' own GPU time (CUPTI, in the
replays), and the split kernel on one layer called again and again (L2-hot, as profile_kernel.py). Prints one table;
run on the GPU machine: ``python3 scripts/gpu/profile_short.py`` (about three minutes)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.bench.timing import median_ms  # noqa: E402
from specattn.gpu.attention.sparse import chunk_lists, dense_verify, sparse_verify  # noqa: E402
from specattn.gpu.kernels.sparse_attn import make_workspace  # noqa: E402
from specattn.gpu.kernels.split_config import SplitConfig  # noqa: E402

DTYPE, C, KEYS, BATCH = torch.bfloat16, 16, 32768, 16
REPLAYS, WARM = 20, 3

# (label, query heads, KV heads, head dim, T, layers, kind): kind "window", "dense" or a kept fraction
SHAPES = [("draft window T=1", 14, 2, 64, 1, 22, "window"), ("draft dense T=1", 14, 2, 64, 1, 24, "dense"),
          ("draft dense T=2", 14, 2, 64, 2, 24, "dense"),
          ("verifier 15% T=5", 12, 2, 128, 5, 26, 0.15), ("verifier 33% T=5", 12, 2, 128, 5, 26, 0.33)]
SHORT = [SplitConfig(), SplitConfig(min_chunks=4), SplitConfig(ctas_per_sm=4, min_chunks=4),
         SplitConfig(stages=2, ctas_per_sm=4, min_chunks=4), SplitConfig(warps=2, stages=2, ctas_per_sm=4, min_chunks=4),
         SplitConfig(stages=1, ctas_per_sm=4, min_chunks=4), SplitConfig(block_n=32, stages=2, ctas_per_sm=4,
                                                                            min_chunks=2),
         SplitConfig(block_n=32, warps=2, stages=2, ctas_per_sm=8, min_chunks=2),
         SplitConfig(block_n=16, warps=2, stages=1, ctas_per_sm=8, min_chunks=1),
         SplitConfig(block_n=128, stages=2, min_chunks=8), SplitConfig(ctas_per_sm=1, min_chunks=16)]
LONG = [SplitConfig(), SplitConfig(warps=2, min_chunks=16), SplitConfig(min_chunks=16), SplitConfig(stages=4),
        SplitConfig(warps=2, stages=4, min_chunks=16), SplitConfig(ctas_per_sm=3, min_chunks=16),
        SplitConfig(block_n=128, stages=2, min_chunks=16), SplitConfig(ctas_per_sm=1, min_chunks=16),
        SplitConfig(block_n=128, stages=3, min_chunks=16), SplitConfig(stages=4, ctas_per_sm=3, min_chunks=16)]


def window_lists(batch: int, prefix: int, sinks: int = 16, window: int = 1024):
    """The window policy's lists: the chunks holding keys [0, sinks) and [prefix - window, prefix), one per sequence."""
    n = -(-prefix // C)
    mask = torch.zeros((batch, 1, n), dtype=torch.bool, device="cuda")
    mask[..., : -(-sinks // C)] = True
    mask[..., (prefix - window) // C:] = True
    return chunk_lists(mask)


def random_lists(batch: int, prefix: int, kept: float, gen: torch.Generator):
    n = -(-prefix // C)
    return chunk_lists(torch.rand((batch, 1, n), generator=gen, device="cuda") < kept)


def cupti_us(fn, calls: int) -> dict[str, float]:
    """GPU microseconds of each kernel per call (``calls`` calls per ``fn()``), over ``REPLAYS`` runs of ``fn``."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            fn()
        torch.cuda.synchronize()
    total = defaultdict(float)
    for e in prof.events():
        if e.device_type.name == "CUDA" and e.name.startswith("_"):
            total[e.name.split("_kernel")[0].strip("_")] += e.time_range.elapsed_us() / (REPLAYS * calls)
    return total


def case(label, hq, hkv, d, t, layers, kind, configs, gen) -> None:
    caches = [(torch.randn((BATCH, hkv, KEYS + 16, d), generator=gen, device="cuda", dtype=DTYPE),
               torch.randn((BATCH, hkv, KEYS + 16, d), generator=gen, device="cuda", dtype=DTYPE))
              for _ in range(layers)]
    q = torch.randn((BATCH, hq, t, d), generator=gen, device="cuda", dtype=DTYPE)
    out = torch.empty((BATCH, t, hq, d), device="cuda", dtype=DTYPE)
    lengths = torch.full((BATCH,), KEYS, dtype=torch.int32, device="cuda")
    prefix = KEYS - t
    lists = (None if kind == "dense" else window_lists(BATCH, prefix) if kind == "window"
             else random_lists(BATCH, prefix, kind, gen))
    for config in configs:
        ws = make_workspace(BATCH, hkv, hq // hkv, t, d, config, "cuda")

        def one(k, v):
            if lists is None:
                dense_verify(q, k, v, lengths, C, out=out, workspace=ws, config=config)
            else:
                sparse_verify(q, k, v, lengths, lists.ids, lists.n, C, out=out, workspace=ws, config=config)

        one(*caches[0])
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for k, v in caches:
                one(k, v)
        per_layer = 1e3 * median_ms([graph.replay], REPLAYS, WARM) / layers
        kernels = cupti_us(graph.replay, layers)
        hot = cupti_us(lambda: [one(*caches[0]) for _ in range(layers)], layers)
        c = config
        print(f"{label:17} {c.block_n:>4} {c.warps:>2} {c.stages:>2} {c.ctas_per_sm:>2} {c.min_chunks:>3}  "
              f"{per_layer:>8.1f} {kernels['split']:>8.1f} {kernels['merge']:>8.1f} {hot['split']:>8.1f}", flush=True)
        del graph, ws
    del caches
    torch.cuda.empty_cache()


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    print(f"{'shape':17} {'bn':>4} {'w':>2} {'s':>2} {'cs':>2} {'min':>3}  {'graph/L':>8} {'split':>8} {'merge':>8} "
          f"{'hot':>8}   (us; graph/L: the captured layers' replay per layer, split/merge: CUPTI in it; hot: one "
          "layer again and again)")
    for label, hq, hkv, d, t, layers, kind in SHAPES:
        case(label, hq, hkv, d, t, layers, kind, SHORT if kind == "window" else LONG, gen)


if __name__ == "__main__":
    main()
