"""How close a kernel that only reads can come to issue 23's read floor at the kernel benchmark's sizes: the streaming
read (``specattn.gpu.kernels.stream_read``, the fastest of its settings) of exactly the bytes a shape's selection reads
(32K keys, 5 step rows, chunks of 16; keys and values, bf16), one call in a replayed CUDA graph of 20
(``profile_kernel.graph_us``), against the floor those bytes take at the large-read bandwidth the floors divide by
(``measure_read_bandwidth``: 4 GiB read once). A size the streaming read itself covers at under 90% of its floor puts
"90% of the read floor" out of reach of any kernel there, attention or not. Prints one table; run on the GPU machine:
``python3 scripts/gpu/read_floor.py`` (under a minute)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import graph_us  # noqa: E402

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.bench.timing import measure_read_bandwidth  # noqa: E402
from specattn.gpu.attention.sparse import n_chunks_capacity  # noqa: E402
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


def main() -> None:
    bandwidth = measure_read_bandwidth()
    print(f"read bandwidth (4 GiB streamed once): {bandwidth / 1e12:.3f} TB/s")
    print(f"{'model':13} {'B':>2} {'kept':>5} {'MB':>7} {'floor us':>8} {'read us':>8} {'read % of floor':>15}"
          f" {'90% target us':>13}")
    for model, batch, kept in SHAPES:
        nbytes = selected_bytes(model, batch, kept)
        best = stream_us(nbytes)
        torch.cuda.empty_cache()
        floor = nbytes / bandwidth * 1e6
        print(f"{model:13} {batch:>2} {kept:>5.2f} {nbytes / 1e6:>7.1f} {floor:>8.1f} {best:>8.1f}"
              f" {floor / best:>15.1%} {floor / 0.9:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
