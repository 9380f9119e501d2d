"""The merge kernel's rows per program (issue 23). Times the split + merge at decode_real's sparse launch with
``MERGE_ROWS`` 1, 2, 4 and 8 (``min(rows, 4)`` warps) at the shapes where the merge costs most, CUPTI GPU time per call
(``profile_kernel.kernel_us``), random bf16 inputs and chunks, 32K keys, T = 5 (``rows``): the thirteenth session
found 8 rows a program best at 4 warps each (21.3 -> 12.5 us at Llama-2 shapes, batch 16); with a warp a row at 1-2
rows (twenty-second session) the twenty-third found one row best at every shape (10.3 -> 6.3 us there), the default
since. Then the step's own keys in the merge (``own_keys``): at Llama-2-7B's lists (32 KV heads, D 128), 5 rows a list
as 1 query head x 5 step tokens (the merge attends 5 own keys, causally) against 5 query heads x 1 token (1 own key):
the same lists, partials, merge programs and KV bytes, so the merge's difference is its own-key work. (The launch A/B
of the twenty-second session, warps and rounds in flight, and of the twenty-third, 8 warps at 8-row programs, are in
docs/data/h100-real-2026-12-05c/ and docs/data/h100-real-2026-12-05d/.) Run on the GPU machine:
``python3 scripts/gpu/profile_merge.py [rows|own_keys]`` (both by default; about two minutes each)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import CONFIGS, kernel_us, kernels_line, random_case  # noqa: E402

from specattn.bench.attention import MODELS  # noqa: E402
from specattn.gpu.attention.sparse import sparse_verify  # noqa: E402
from specattn.gpu.kernels import sparse_attn  # noqa: E402
from specattn.gpu.kernels.sparse_attn import make_workspace  # noqa: E402

CONFIG = CONFIGS["sparse128"]  # decode_real's sparse launch
SHAPES = [("llama-2-7b", 16, 0.1), ("llama-2-7b", 16, 0.25), ("llama-2-7b", 4, 0.1), ("llama-3.1-8b", 16, 0.1),
          ("llama-3.1-8b", 1, 0.1), ("qwen2.5-coder-1.5b", 16, 0.155)]


def sparse_launch(hq: int, hkv: int, d: int, batch: int, t: int, density: float, gen, cgen):
    """Split + merge at decode_real's sparse launch over fresh random inputs (32K keys, ``density`` of the chunks, at
    least one a list): a call for ``kernel_us`` that holds its tensors until dropped."""
    s, lists, _ = random_case(hq, hkv, d, batch, t, density, gen, cgen)
    ws = make_workspace(batch, hkv, hq // hkv, t, d, CONFIG, "cuda")
    return lambda: sparse_verify(s.q, s.k, s.v, s.lengths, lists.ids, lists.n, 16, out=s.out, workspace=ws,
                                 config=CONFIG)


def rows_table(gen, cgen) -> None:
    """The split + merge at ``MERGE_ROWS`` 1, 2, 4 and 8 (restored after)."""
    print(f"{'model':18} {'B':>2} {'kept':>5} {'rows':>8} {'total_us':>8}  kernels (us per call)")
    default = sparse_attn.MERGE_ROWS
    for model, batch, density in SHAPES:
        hq, hkv, d = MODELS[model]
        call = sparse_launch(hq, hkv, d, batch, 5, density, gen, cgen)
        for rows in (1, 2, 4, 8):
            sparse_attn.MERGE_ROWS = rows
            us = kernel_us(call)
            print(f"{model:18} {batch:>2} {density:>5.3f} {rows:>8} {sum(us.values()):>8.1f}  {kernels_line(us)}",
                  flush=True)
        del call
        torch.cuda.empty_cache()
    sparse_attn.MERGE_ROWS = default


OWN_KEYS = [(16, 0.0), (16, 0.25), (4, 0.0), (4, 0.25)]  # (batch, kept; 0: one chunk a list) at Llama-2-7B's lists


def own_keys_table(gen, cgen) -> None:
    """Split + merge with 5 rows a list as (1 head x T 5) and as (5 heads x T 1): the own keys' share of the merge."""
    hkv, d = 32, 128
    print(f"\n{'lists':>5} {'kept':>5} {'heads x T':>9} {'own keys':>8} {'total_us':>8}  kernels (us per call)")
    for batch, density in OWN_KEYS:
        for hq, t in ((hkv, 5), (5 * hkv, 1)):
            us = kernel_us(sparse_launch(hq, hkv, d, batch, t, density, gen, cgen))
            print(f"{batch * hkv:>5} {density:>5.2f} {f'{hq // hkv} x {t}':>9} {t:>8} {sum(us.values()):>8.1f}  "
                  f"{kernels_line(us)}", flush=True)
            torch.cuda.empty_cache()


def main() -> None:
    parts = sys.argv[1:] or ["rows", "own_keys"]
    unknown = set(parts) - {"rows", "own_keys"}
    if unknown:
        raise SystemExit(f"profile_merge.py: unknown part(s) {sorted(unknown)}: use rows and/or own_keys")
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    if "rows" in parts:
        rows_table(gen, cgen)
    if "own_keys" in parts:
        own_keys_table(gen, cgen)


if __name__ == "__main__":
    main()
