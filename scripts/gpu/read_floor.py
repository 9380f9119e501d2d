"""How close a kernel that only reads can come to issue 23's read floor at the kernel benchmark's sizes: the streaming
read (``specattn.gpu.kernels.stream_read``, the fastest of its settings) of exactly the bytes a shape's selection reads
(32K keys, 5 step rows, chunks of 16; keys and values, bf16), one call in a replayed CUDA graph of 20
(``profile_kernel.graph_us``), against the floor those bytes take at the large-read bandwidth the floors divide by
(``measure_read_bandwidth``: 4 GiB read once). A size the streaming read itself covers at under 90% of its floor puts
"90% of the read floor" out of reach of any kernel there, attention or not. Beside it the gathering read
(``specattn.gpu.kernels.gather_read``, the fastest of its settings) of the same shape's random chunks
(``profile_kernel.random_case``, fresh generators at seed 0) from the keys and values in place: the same bytes in the
sparse kernel's pattern (16-key pieces at the listed positions), no attention arithmetic, many short programs. Prints
one table; run on the GPU machine: ``python3 scripts/gpu/read_floor.py`` (about a minute)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import graph_us, random_case  # noqa: E402

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


def stream_us(nbytes: int) -> float:
    """Microseconds of the fastest streaming read of ``nbytes`` (a call in a replayed graph)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").uniform_()
    best = math.inf
    for block, iters, warps in CONFIGS:
        out = partial_sums(src, block, iters, warps)
        best = min(best, graph_us(lambda: partial_sums(src, block, iters, warps, out=out)))
    return best


def gather_us(model: str, batch: int, kept: float, c: int = 16) -> tuple[float, int]:
    """Microseconds of the fastest gathering read of a random case's listed chunks (a call in a replayed graph), and
    the bytes it reads."""
    hq, hkv, d = MODELS[model]
    s, lists, _ = random_case(hq, hkv, d, batch, 5, kept, torch.Generator(device="cuda").manual_seed(0),
                              torch.Generator().manual_seed(0), c)
    most = int(lists.n.max())
    best = math.inf
    for chunks, iters, warps in gather_read.CONFIGS:
        out = gather_read.gather_sums(s.k, s.v, lists.ids, lists.n, c, most, chunks, iters, warps)
        best = min(best, graph_us(lambda: gather_read.gather_sums(s.k, s.v, lists.ids, lists.n, c, most, chunks,
                                                                   iters, warps, out=out)))
    nbytes = int(lists.n.sum()) * (hkv // lists.ids.shape[1]) * c * d * 2 * 2
    return best, nbytes


def main() -> None:
    bandwidth = measure_read_bandwidth()
    print(f"read bandwidth (4 GiB streamed once): {bandwidth / 1e12:.3f} TB/s")
    print(f"{'model':13} {'B':>2} {'kept':>5} {'MB':>7} {'floor us':>8} {'read us':>8} {'read % of floor':>15}"
          f" {'90% target us':>13} {'gather MB':>9} {'gather us':>9} {'gather % of floor':>17}")
    for model, batch, kept in SHAPES:
        nbytes = selected_bytes(model, batch, kept)
        best = stream_us(nbytes)
        torch.cuda.empty_cache()
        gather, gathered = gather_us(model, batch, kept)
        torch.cuda.empty_cache()
        floor = nbytes / bandwidth * 1e6
        print(f"{model:13} {batch:>2} {kept:>5.2f} {nbytes / 1e6:>7.1f} {floor:>8.1f} {best:>8.1f}"
              f" {floor / best:>15.1%} {floor / 0.9:>13.1f} {gathered / 1e6:>9.1f} {gather:>9.1f}"
              f" {gathered / bandwidth * 1e6 / gather:>17.1%}", flush=True)


if __name__ == "__main__":
    main()
