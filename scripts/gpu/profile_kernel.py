"""Where the sparse verification kernel's time goes beside FlashInfer's page table (issue 23): per launch, a call's time
in a replayed CUDA graph of 20 (``graph_us``: launch gaps and overlap included, the issue's measure) and the GPU time of
each kernel (CUPTI, eager calls) of ours (split + merge) and of FlashInfer's ``BatchDecodeWithPagedKVCacheWrapper``
reading the same chunks as pages, for the kernel benchmark's 32K cases (llama-3.1-8b and llama-2-7b layer shapes, batch
1/4/16, kept 0 (one chunk: the fixed cost), 10% and 25%; random bf16 inputs, random chunks). Ours runs the default split
configuration, decode_real's sparse launch (128-key blocks over 2 stages, 8 chunks a program at least, the merge
launched as the split's programmatic dependent) and the same with the merge launched after the split ends
(``pdl=False``). With the dependent launch the merge's CUPTI time includes its wait for the split, so only the graph
column is a call's time there. Retired after their sessions (docs/benchmarks.md): the one-launch merge (``fused_merge``:
slower at all 23 shapes, up to 3.1x, twenty-fourth, ``docs/data/h100-2026-12-05e/ab_kernel_arms_random.txt``),
decode_real's launch at 16 chunks a program and the merge's rounds of 16 (the twenty-third session's A/B), the tuned
launch with min_chunks 4 (no slower than FlashInfer at 8 of 17, twenty-third), the merge's tile at 32 at 8-row programs
and its register cap (no gain, twentieth and twenty-first), and 3-4 split programs an SM under a register cap of 168 /
128 (Nsight Compute found the split waiting on global loads at 2 an SM; more beat the better of the default and sparse
launches by over 1% at 2 of 23 shapes, lost at 14: twenty-second, commit 4f6d9cf,
``docs/data/h100-real-2026-12-05c/profile_kernel_occupancy_random.txt``; 4 programs of 2 warps, or 8 of one: no slower
than FlashInfer at 3 and 2 of 17 against the landed launch's 14, twenty-fourth). Then the real pair's shapes at 32K
batch 16 (the decoder runs the sparse launch in layers that read chunk lists, the default elsewhere): the verifier's
step (Qwen2.5-Coder-1.5B, 12 heads over 2, D 128, T = 5) at the kept fractions SpecAttn measured there (15.5%, 35%) and
dense, the draft's forward (0.5B, 14 over 2, D 64, T = 1) dense and over a window's 3%. Prints one table; run on the GPU
machine: ``python3 scripts/gpu/profile_kernel.py`` (about three minutes)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.bench.attention import MODELS, Inputs, random_masks  # noqa: E402
from specattn.bench.flashinfer_dense import FlashInferPageTable, paged_cache  # noqa: E402
from specattn.gpu.attention.sparse import chunk_lists, dense_verify, n_chunks_capacity, sparse_verify  # noqa: E402
from specattn.gpu.kernels.sparse_attn import make_workspace  # noqa: E402
from specattn.gpu.kernels.split_config import SplitConfig  # noqa: E402

CONFIGS = {"default": SplitConfig(),
           "sparse128": SplitConfig(block_n=128, stages=2),  # decode_real's sparse launch (8 chunks a program at least)
           "s128_serial": SplitConfig(block_n=128, stages=2, pdl=False)}  # the merge launched after the split ends
CALLS = 20


def kernel_us(fn) -> dict[str, float]:
    """Mean GPU microseconds per call of each kernel ``fn`` launches (``CALLS`` calls, after two warm ones)."""
    fn(), fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            fn()
        torch.cuda.synchronize()
    total = defaultdict(float)
    for e in prof.events():
        if e.device_type.name == "CUDA":
            total[e.name[:48]] += e.time_range.elapsed_us() / CALLS
    return dict(total)


def graph_us(fn, reps: int = 15) -> float:
    """Microseconds a call of ``fn`` in a CUDA graph of ``CALLS`` calls back to back (median of ``reps`` replays, after
    the capture's warm-up): the span of its kernels, launch gaps and any overlap of a kernel with the next included,
    which ``kernel_us``'s sum of kernel times cannot show (a programmatically dependent launch's wait counts there).
    Every call reads the same input set: where the bytes it reads fit in L2 the next call finds them there."""
    return rotating_graph_us([fn], reps)


def rotating_graph_us(fns, reps: int = 15) -> float:
    """:func:`graph_us` with the graph's ``CALLS`` calls taking ``fns`` (one call per input set, :func:`cold_sets` of
    them) in turn: a set is read again only after the others have passed through L2, so every call reads from device
    memory, as one layer's attention does in a decoding step (between two of its calls the step reads every other
    layer's weights and caches)."""
    from specattn.bench.timing import graph_call_us

    return graph_call_us([fns[i % len(fns)] for i in range(CALLS)], reps)


#: bytes the other input sets read between two calls on one set (five times the H100's and H200's 50 MB L2), and the
#: most device memory the sets' caches may take together (FlashInfer's paged copies included)
ROTATE_BYTES, SETS_MEMORY = 256 << 20, 16 << 30


def cold_sets(read_bytes: int, set_bytes: int, most: int = 16) -> int:
    """Input sets :func:`rotating_graph_us` rotates over for a call that reads ``read_bytes`` of a set of
    ``set_bytes``: enough that the other sets read :data:`ROTATE_BYTES` between two calls on one, within
    :data:`SETS_MEMORY` and ``most``; at least one. A call reading next to nothing (kept 0) is capped by ``most`` and
    the memory, so it may stay in L2: such shapes measure fixed costs either way."""
    wanted = 1 + -(-ROTATE_BYTES // max(read_bytes, 1))
    return max(1, min(most, wanted, SETS_MEMORY // max(set_bytes, 1)))


def list_bytes(lists, hkv: int, d: int, c: int) -> int:
    """Bytes of keys and values (16-bit) in the chunks of ``lists`` (``ids (B, H_sel, cap)``, ``n (B, H_sel)``: each
    list read by ``hkv / H_sel`` KV heads of head dim ``d``), ``c`` keys a chunk."""
    return int(lists.n.sum()) * (hkv // lists.ids.shape[1]) * c * d * 2 * 2


def kernels_line(us: dict[str, float]) -> str:
    """``kernel_us``'s kernels, longest first: "name us, name us, ..." (the tables' last column)."""
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(us.items(), key=lambda kv: -kv[1]))


def random_case(hq: int, hkv: int, d: int, batch: int, t: int, density: float, gen, cgen, c: int = 16,
                n_keys: int = 32768):
    """Random inputs of one layer shape (``Inputs``: bf16, ``n_keys`` keys, ``t`` step rows; drawn from ``gen``) and
    random chunk lists over its prefix (``density`` of the chunks, at least one a list; drawn from ``cgen``): the
    inputs, the lists and the prefix's chunk count."""
    nc = n_chunks_capacity(n_keys, t, c)
    return Inputs(hq, hkv, d, batch, n_keys, t, gen), chunk_lists(random_masks(batch, 1, nc, density, cgen).cuda()), nc


def page_table(s: Inputs, lists, c: int, n_keys: int, fi_ws: torch.Tensor) -> FlashInferPageTable:
    """FlashInfer's page-table call over ``s``'s cache cut into pages of ``c`` keys (a page a chunk), planned to read
    ``lists``' chunks (``fi_ws``: its workspace)."""
    return FlashInferPageTable(s.q, paged_cache(s.k, c), paged_cache(s.v, c), n_keys, -(-n_keys // c), c, lists, fi_ws)


REAL = [("qwen2.5-coder-1.5b", 5, 16, d) for d in (0.155, 0.35, 1.0)] + [
    ("qwen2.5-coder-0.5b", 1, 16, d) for d in (0.03, 1.0)]  # (model, T, batch, kept; 1.0: dense_verify)


def profile_case(label: str, model: str, t: int, batch: int, density: float, gen, cgen, fi_ws, c: int = 16,
                 n_keys: int = 32768) -> None:
    """One shape: FlashInfer's page table and ours at every configuration on the same random chunks (kept 0: one
    chunk per list; kept 1.0: every chunk, ours through ``dense_verify``), one printed line each after ``label``: a
    call's time in a replayed graph (``graph_us``), the sum of its kernels' times and each kernel's (``kernel_us``)."""
    hq, hkv, d = MODELS[model]
    s, lists, nc = random_case(hq, hkv, d, batch, t, density, gen, cgen, c, n_keys)
    calls = {}
    try:
        fi = page_table(s, lists, c, n_keys, fi_ws)
        calls["flashinfer"], same = fi, fi.same_selection(nc)
    except Exception as err:  # noqa: BLE001  (FlashInfer at a shape it does not take: say so, go on)
        print(f"{label} flashinfer failed: {type(err).__name__}: {str(err)[:100]}")
        same = lists
    for name, config in CONFIGS.items():
        calls[name] = ours(s, same, c, density, make_workspace(batch, hkv, hq // hkv, t, d, config, "cuda"), config)
    for who, call in calls.items():
        kernels = kernel_us(call)
        print(f"{label} {who:11} {graph_us(call):>8.1f} {sum(kernels.values()):>8.1f}  {kernels_line(kernels)}",
              flush=True)
    torch.cuda.empty_cache()


def ours(s: Inputs, lists, c: int, density: float, ws, config: SplitConfig):
    """Our kernel's call on ``s`` over ``lists`` (``dense_verify`` at kept 1.0) with workspace ``ws``."""
    if density >= 1.0:
        return lambda: dense_verify(s.q, s.k, s.v, s.lengths, c, out=s.out, workspace=ws, config=config)
    return lambda: sparse_verify(s.q, s.k, s.v, s.lengths, lists.ids, lists.n, c, out=s.out, workspace=ws,
                                 config=config)


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    fi_ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    print(f"{'model':13} {'B':>2} {'kept':>5} {'who':11} {'graph_us':>8} {'sum_us':>8}  kernels (us per call)")
    for model, batch, density in [(m, b, d) for m in ("llama-3.1-8b", "llama-2-7b") for b in (1, 4, 16)
                                  for d in (0.0, 0.1, 0.25)]:
        profile_case(f"{model:13} {batch:>2} {density:>5.2f}", model, 5, batch, density, gen, cgen, fi_ws)
    print("\nthe real pair's shapes, 32K")
    for model, t, batch, density in REAL:
        profile_case(f"{model:18} T={t} {batch:>2} {density:>5.3f}", model, t, batch, density, gen, cgen, fi_ws)


if __name__ == "__main__":
    main()
