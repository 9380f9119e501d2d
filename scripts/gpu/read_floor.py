"""How close a kernel that only reads can come to issue 23's read floor at the kernel benchmark's sizes: the streaming
read (``specattn.gpu.kernels.stream_read``, the fastest of its settings) of exactly the bytes a shape's selection reads
(32K keys, 5 step rows, chunks of 16; keys and values, bf16), one call in a replayed CUDA graph of 20
(``profile_kernel.graph_us``), against the floor those bytes take at the large-read bandwidth the floors divide by
(``measure_read_bandwidth``: 4 GiB read once). A size the streaming read itself covers at under 90% of its floor puts
"90% of the read floor" out of reach of any kernel there, attention or not. Beside it the gathering read
(``specattn.gpu.kernels.gather_read``, the fastest of its settings) of the same shape's random chunks
(``profile_kernel.random_case``, fresh generators at seed 0) from the keys and values in place: the same bytes in the
sparse kernel's pattern (16-key pieces at the listed positions), no attention arithmetic, many short programs. Each
read is timed twice: hot (every call of the graph reads the same bytes, so what fits in the L2 is read from there: the
streaming read of Llama-3.1-8B batch 1's 34 MB runs at 155-170% of its floor) and cold (the graph's calls rotate over
input sets that pass the L2 several times, ``profile_kernel.rotating_graph_us``, as the kernel A/B's cold column).
Prints one table; run on the GPU machine: ``python3 scripts/gpu/read_floor.py`` (about a minute)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import Inputs, cold_sets, graph_us, list_bytes, random_case, rotating_graph_us  # noqa: E402

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.bench.timing import measure_read_bandwidth  # noqa: E402
from specattn.gpu.attention.sparse import n_chunks_capacity  # noqa: E402
from specattn.gpu.kernels import gather_read  # noqa: E402
from specattn.gpu.kernels.stream_read import CONFIGS, partial_sums  # noqa: E402

SHAPES = [(m, b, kept) for m in ("llama-3.1-8b", "llama-2-7b") for b, kept in ((4, 0.25), (16, 0.1), (1, 0.25))]


def selected_bytes(model: str, batch: int, kept: float, n_keys: int = 32768, t: int = 5, c: int = 16) -> int:
    """Bytes of keys and values (bf16) in ``kept`` of a shape's prefix chunks."""
    _, hkv, d = MODELS[model]
    return batch * hkv * math.ceil(kept * n_chunks_capacity(n_keys, t, c)) * c * d * 2 * 2


def fastest(settings, calls_of) -> tuple[float, float]:
    """The fastest of ``settings`` hot and cold (each its own fastest): ``calls_of(setting)`` gives one call per input
    set; hot times the first set's alone (:func:`graph_us`), cold rotates over all (:func:`rotating_graph_us`)."""
    hot = cold = math.inf
    for setting in settings:
        calls = calls_of(setting)
        hot, cold = min(hot, graph_us(calls[0])), min(cold, rotating_graph_us(calls))
    return hot, cold


def stream_us(nbytes: int) -> tuple[float, float]:
    """Microseconds of the fastest streaming read of ``nbytes`` (a call in a replayed graph), hot and cold."""
    srcs = [torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").uniform_()
            for _ in range(cold_sets(nbytes, nbytes))]

    def calls_of(setting):
        block, iters, warps = setting
        out = partial_sums(srcs[0], block, iters, warps)
        return [lambda src=src: partial_sums(src, block, iters, warps, out=out) for src in srcs]

    return fastest(CONFIGS, calls_of)


def gather_us(model: str, batch: int, kept: float, c: int = 16) -> tuple[float, float, int]:
    """Microseconds of the fastest gathering read of a random case's listed chunks (a call in a replayed graph), hot
    and cold (the other sets: the same lists over other keys and values), and the bytes it reads."""
    hq, hkv, d = MODELS[model]
    gen = torch.Generator(device="cuda").manual_seed(0)
    s, lists, _ = random_case(hq, hkv, d, batch, 5, kept, gen, torch.Generator().manual_seed(0), c)
    most = int(lists.n.max())
    nbytes = list_bytes(lists, hkv, d, c)
    sets = [s] + [Inputs(hq, hkv, d, batch, 32768, 5, gen)
                  for _ in range(cold_sets(nbytes, s.k.numel() * 4) - 1)]

    def calls_of(setting):
        chunks, iters, warps = setting
        out = gather_read.gather_sums(s.k, s.v, lists.ids, lists.n, c, most, chunks, iters, warps)
        return [lambda x=x: gather_read.gather_sums(x.k, x.v, lists.ids, lists.n, c, most, chunks, iters, warps,
                                                    out=out) for x in sets]

    return (*fastest(gather_read.CONFIGS, calls_of), nbytes)


def main() -> None:
    bandwidth = measure_read_bandwidth()
    print(f"read bandwidth (4 GiB streamed once): {bandwidth / 1e12:.3f} TB/s")
    print("hot: every call of the graph reads the same bytes (what fits in the L2 comes from there); cold: the calls "
          "rotate over input sets past the L2")
    print(f"{'model':13} {'B':>2} {'kept':>5} {'MB':>7} {'floor us':>8} {'read us hot/cold':>16}"
          f" {'read % of floor':>15} {'90% target us':>13} {'gather MB':>9} {'gather us hot/cold':>18}"
          f" {'gather % of floor':>17}")
    for model, batch, kept in SHAPES:
        nbytes = selected_bytes(model, batch, kept)
        hot, cold = stream_us(nbytes)
        torch.cuda.empty_cache()
        g_hot, g_cold, gathered = gather_us(model, batch, kept)
        torch.cuda.empty_cache()
        floor, g_floor = nbytes / bandwidth * 1e6, gathered / bandwidth * 1e6
        print(f"{model:13} {batch:>2} {kept:>5.2f} {nbytes / 1e6:>7.1f} {floor:>8.1f} {hot:>7.1f}/{cold:<8.1f}"
              f" {floor / hot:>6.1%}/{floor / cold:<8.1%} {floor / 0.9:>13.1f} {gathered / 1e6:>9.1f}"
              f" {g_hot:>8.1f}/{g_cold:<9.1f} {g_floor / g_hot:>7.1%}/{g_floor / g_cold:<9.1%}", flush=True)


if __name__ == "__main__":
    main()
