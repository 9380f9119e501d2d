"""The twenty-first session's A/B of the merge's own keys (kept as provenance; not part of the package): the merge
with the own keys one at a time on 2-D tiles (merge_own_keys_loop.patch) against the (RB, TP, D) tile of 13f389b, in
one process, same inputs, ABAB order (CUPTI via profile_kernel.kernel_us). To rerun on a GPU machine, from the repo root:
    git apply docs/data/h100-real-2026-12-05b/merge_own_keys_loop.patch
    git show 13f389b:specattn/gpu/kernels/sparse_attn.py > specattn/gpu/kernels/_ab_old_sparse_attn.py
    cp docs/data/h100-real-2026-12-05b/ab_merge.py scripts/gpu/ && python3 scripts/gpu/ab_merge.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import kernel_us  # noqa: E402
from profile_merge import sparse_launch  # noqa: E402

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.gpu.kernels import _ab_old_sparse_attn as old  # noqa: E402
from specattn.gpu.kernels import sparse_attn  # noqa: E402

new_launch = sparse_attn.launch
CASES = [("llama-2-7b", 5, 16, 0.0), ("llama-2-7b", 5, 16, 0.25), ("llama-2-7b", 5, 4, 0.0), ("llama-2-7b", 5, 4, 0.25),
         ("llama-3.1-8b", 5, 1, 0.0), ("llama-3.1-8b", 5, 1, 0.25), ("llama-3.1-8b", 5, 4, 0.25),
         ("llama-3.1-8b", 5, 16, 0.0), ("llama-3.1-8b", 5, 16, 0.25), ("qwen2.5-coder-1.5b", 5, 16, 0.155),
         ("qwen2.5-coder-0.5b", 1, 16, 0.03)]
gen = torch.Generator(device="cuda").manual_seed(0)
cgen = torch.Generator().manual_seed(0)
print(f"{'model':18} {'T':>2} {'B':>2} {'kept':>5} {'merge tile':>10} {'merge loop':>10} {'tile2':>6} {'loop2':>6}  split")
for model, t, batch, density in CASES:
    hq, hkv, d = MODELS[model]
    call = sparse_launch(hq, hkv, d, batch, t, density, gen, cgen)
    row = []
    for impl in (old.launch, new_launch, old.launch, new_launch):
        sparse_attn.launch = impl
        us = kernel_us(call)
        row.append((us.get("_merge_kernel", float("nan")), us.get("_split_kernel", float("nan"))))
    sparse_attn.launch = new_launch
    print(f"{model:18} {t:>2} {batch:>2} {density:>5.3f} {row[0][0]:>10.2f} {row[1][0]:>10.2f} {row[2][0]:>6.2f} "
          f"{row[3][0]:>6.2f}  {row[0][1]:.1f}/{row[1][1]:.1f}", flush=True)
    del call
    torch.cuda.empty_cache()
