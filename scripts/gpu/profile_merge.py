"""The merge kernel's rows per program (issue 23): where the split kernel matches FlashInfer's main kernel, the merge
was the gap at many lists (thirteenth session, Llama-2 shapes, batch 16: 21 us at 4 rows a program against
FlashInfer's 4 us; 8 rows, the default since, 12.5 us). Times the split + merge at decode_real's sparse launch with
``MERGE_MAX_ROWS`` 1, 2, 4 and 8 at the shapes where the merge costs most, CUPTI GPU time per call
(``profile_kernel.kernel_us``), random bf16 inputs and chunks, 32K keys, T = 5. Then the step's own keys in the merge
(``own_keys``): at Llama-2-7B's lists (32 KV heads, D 128), 5 rows a list as 1 query head x 5 step tokens (the merge
attends 5 own keys, causally, in an 8-key tile) against 5 query heads x 1 token (1 own key, a 2-key tile): the same
lists, partials, merge programs (8 rows each) and KV bytes, so the merge's difference is its own-key work (the twentieth
session's profile left it the suspect for the merge's 11-12 us at batch 16 against FlashInfer's 4; the twenty-first
measured it, on an H100: about 4 us of them). Then the merge's launch (``launch``, not by default), A/B'd in one
process: the twenty-second session's (warps and rounds in flight: a warp a row at 1-2 rows landed, ``docs/data/
h100-real-2026-12-05c/profile_merge_launch_random.txt``, commit ba4bcf4) now asks the same of 8-row programs, where the
merge still takes 10 us against FlashInfer's 4 (Llama-2-7B batch 16): 8 warps (fewer rows a program, now a warp a
row: ``rows``). Run on the GPU
machine: ``python3 scripts/gpu/profile_merge.py [rows|own_keys|launch]`` (the first two by default; about two minutes
each)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import CONFIGS, kernel_us, kernels_line  # noqa: E402

from specattn.bench.attention import MODELS, Inputs, random_masks  # noqa: E402
from specattn.gpu.attention.sparse import chunk_lists, n_chunks_capacity, sparse_verify  # noqa: E402
from specattn.gpu.kernels import sparse_attn  # noqa: E402
from specattn.gpu.kernels.sparse_attn import make_workspace  # noqa: E402

CONFIG = CONFIGS["sparse128"]  # decode_real's sparse launch
SHAPES = [("llama-2-7b", 16, 0.1), ("llama-2-7b", 16, 0.25), ("llama-2-7b", 4, 0.1), ("llama-3.1-8b", 16, 0.1),
          ("llama-3.1-8b", 1, 0.1), ("qwen2.5-coder-1.5b", 16, 0.155)]


def sparse_launch(hq: int, hkv: int, d: int, batch: int, t: int, density: float, gen, cgen):
    """Split + merge at decode_real's sparse launch over fresh random inputs (32K keys, ``density`` of the chunks, at
    least one a list): a call for ``kernel_us`` that holds its tensors until dropped."""
    s = Inputs(hq, hkv, d, batch, 32768, t, gen)
    lists = chunk_lists(random_masks(batch, 1, n_chunks_capacity(32768, t, 16), density, cgen).cuda())
    ws = make_workspace(batch, hkv, hq // hkv, t, d, CONFIG, "cuda")
    return lambda: sparse_verify(s.q, s.k, s.v, s.lengths, lists.ids, lists.n, 16, out=s.out, workspace=ws,
                                 config=CONFIG)


def rows_table(gen, cgen) -> None:
    """The split + merge at ``MERGE_MAX_ROWS`` 1, 2, 4 and 8 (restored after)."""
    print(f"{'model':18} {'B':>2} {'kept':>5} {'max_rows':>8} {'total_us':>8}  kernels (us per call)")
    default = sparse_attn.MERGE_MAX_ROWS
    for model, batch, density in SHAPES:
        hq, hkv, d = MODELS[model]
        call = sparse_launch(hq, hkv, d, batch, 5, density, gen, cgen)
        for rows in (1, 2, 4, 8):
            sparse_attn.MERGE_MAX_ROWS = rows
            us = kernel_us(call)
            print(f"{model:18} {batch:>2} {density:>5.3f} {rows:>8} {sum(us.values()):>8.1f}  {kernels_line(us)}",
                  flush=True)
        del call
        torch.cuda.empty_cache()
    sparse_attn.MERGE_MAX_ROWS = default


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


LAUNCH_SHAPES = [("llama-3.1-8b", 1, 0.1, 5), ("llama-3.1-8b", 1, 0.25, 5), ("llama-3.1-8b", 4, 0.25, 5),
                 ("llama-3.1-8b", 16, 0.25, 5), ("llama-2-7b", 1, 0.25, 5), ("llama-2-7b", 4, 0.1, 5),
                 ("llama-2-7b", 4, 0.25, 5), ("llama-2-7b", 16, 0.1, 5), ("qwen2.5-coder-1.5b", 16, 0.155, 5),
                 ("qwen2.5-coder-1.5b", 16, 0.35, 5), ("qwen2.5-coder-0.5b", 16, 0.03, 1)]  # (model, batch, kept, T)


def launch_table(gen, cgen) -> None:
    """The merge's launch A/B'd in one process on the same inputs, the variants in turn, twice (each timing the mean
    of ``kernel_us``'s calls), every output against the first's: as landed (a warp a row up to 2 rows, 4 warps at 4-8)
    and with 8 warps at 8 rows (fewer rows a program: ``rows``)."""
    rule = sparse_attn.merge_warps
    variants = {"landed": rule, "8 warps at 8": lambda rb: 8 if rb == 8 else rule(rb)}
    print(f"\n{'model':18} {'B':>2} {'kept':>5} " + " ".join(f"{v:>15}" for v in variants)
          + "  (merge us: round 1 / round 2; max |out - landed|)")
    for model, batch, density, t in LAUNCH_SHAPES:
        hq, hkv, d = MODELS[model]
        call = sparse_launch(hq, hkv, d, batch, t, density, gen, cgen)
        merge, outs = {v: [] for v in variants}, {}
        for _ in range(2):
            for name, warps in variants.items():
                sparse_attn.merge_warps = warps
                merge[name].append(kernel_us(call)["_merge_kernel"])
                outs[name] = call().float().clone()
        sparse_attn.merge_warps = rule
        diff = max((outs[v] - outs["landed"]).abs().max().item() for v in variants)
        print(f"{model:18} {batch:>2} {density:>5.3f} " + " ".join(f"{a:>7.1f}/{b:<7.1f}" for a, b in merge.values())
              + f"  {diff:.1e}", flush=True)
        del call
        torch.cuda.empty_cache()


def main() -> None:
    parts = sys.argv[1:] or ["rows", "own_keys"]
    unknown = set(parts) - {"rows", "own_keys", "launch"}
    if unknown:
        raise SystemExit(f"profile_merge.py: unknown part(s) {sorted(unknown)}: use rows, own_keys and/or launch")
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    if "rows" in parts:
        rows_table(gen, cgen)
    if "own_keys" in parts:
        own_keys_table(gen, cgen)
    if "launch" in parts:
        launch_table(gen, cgen)


if __name__ == "__main__":
    main()
