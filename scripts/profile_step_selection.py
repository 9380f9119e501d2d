"""Where the per-layer step's selection time goes (numbers quoted in docs/benchmarks.md).

    python scripts/profile_step_selection.py

For rows x L draft rows (4 rows = one sequence's gamma = 4 rows; 128 rows = 32 layers or sequences of
them at once), graph-replayed, median of 30 passes over 8 input sets: the nucleus kernel with the
chunk maxima fused (``chunk_thresholds``: the CUDA radix kernel where nvcc exists) and the OR + list
kernel (``lists_from_thresholds``), on the kernel bench's synthetic draft rows (25% of the chunks
kept) and on softmax(s * randn) rows; ``nucleus_frac`` is the share of keys in the nucleus at p=0.95.
"""

import torch

from specattn.bench.attention import draft_rows_for, random_masks
from specattn.bench.timing import graph_ms, measure_bandwidth
from specattn.gpu.kernels import nucleus as K
from specattn.gpu.kernels.chunk_list import lists_from_thresholds


def rows_of(kind: str, rows: int, length: int, dtype, gen, cgen) -> torch.Tensor:
    if kind == "synthetic25":
        masks = random_masks(rows // 4, 1, length // 16, 0.25, cgen)
        return draft_rows_for(masks, length, 4, 16, length, 0.95, gen, dtype).reshape(rows, length)
    scale = float(kind[len("softmax"):])
    return torch.softmax(scale * torch.randn(rows, length, generator=gen, device="cuda"), -1).to(dtype)


def main() -> None:
    print(f"bw {measure_bandwidth() / 1e12:.3f} TB/s", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    print("kind rows L dtype nucleus_us list_us nucleus_frac backend")
    for length in (8192, 32768, 131072):
        for rows in (4, 128):
            for kind, dtype in (("synthetic25", torch.bfloat16), ("softmax3", torch.bfloat16),
                                ("softmax1", torch.bfloat16), ("softmax3", torch.float32)):
                sets = [rows_of(kind, rows, length, dtype, gen, cgen) for _ in range(8)]
                outs = [K.chunk_thresholds(w, 0.95, 16) for w in sets]
                ids = torch.zeros(rows // 4, length // 16, dtype=torch.int32, device="cuda")
                n = torch.zeros(rows // 4, dtype=torch.int32, device="cuda")
                nucleus = graph_ms([lambda w=w: K.chunk_thresholds(w, 0.95, 16) for w in sets], 30)
                lists = graph_ms([lambda o=o: lists_from_thresholds(o[1], o[0], 4, ids, n) for o in outs], 30)
                theta = K.nucleus_threshold(sets[0], 0.95)
                frac = (sets[0] >= theta[:, None].to(dtype)).float().mean().item()
                backend = "cuda" if K._use_radix(sets[0]) else "triton"
                print(f"{kind} {rows} {length} {str(dtype)[6:]} {nucleus * 1e3:.1f} {lists * 1e3:.1f} {frac:.3f} "
                      f"{backend}", flush=True)


if __name__ == "__main__":
    main()
