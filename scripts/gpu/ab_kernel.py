"""The sparse kernel module A/B'd against another version of it in one process (issue 23): ``python3
scripts/gpu/ab_kernel.py BASE.py`` loads ``BASE.py`` (e.g. ``git show REV:specattn/gpu/kernels/sparse_attn.py``) beside
the tree's ``specattn/gpu/kernels/sparse_attn.py`` and times both at decode_real's sparse launch
(``profile_kernel.CONFIGS["sparse128"]``), with FlashInfer's page table over the same chunks, at
``profile_kernel.py``'s 23 shapes (32K; kept 1.0: ``dense_verify``), in two rounds that alternate the versions, each
timed two ways (random bf16 inputs and chunks): the sum of its kernels' CUPTI GPU times per call
(``profile_kernel.kernel_us``: launch gaps excluded) and a call's time in a replayed CUDA graph of 20 calls
(``profile_kernel.graph_us``: gaps and overlap included, the measure for a programmatically dependent launch, whose
wait the sum counts). Per shape: FlashInfer's and each version's (round 1 / round 2) by each measure, the tree's
kernels, and the largest difference of the two outputs. Then "no slower than FlashInfer at N of 17" for each version
and measure (the shapes with chunks kept, each at its better round)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import CONFIGS, REAL, graph_us, kernel_us, page_table, random_case  # noqa: E402

import specattn.gpu.kernels as kernels  # noqa: E402
from specattn.bench.attention import MODELS  # noqa: E402
from specattn.gpu.attention.sparse import dense_verify, sparse_verify  # noqa: E402

CONFIG = CONFIGS["sparse128"]
SHAPES = [(m, 5, b, d) for m in ("llama-3.1-8b", "llama-2-7b") for b in (1, 4, 16) for d in (0.0, 0.1, 0.25)] + REAL


def load_base(path: str):
    """``path`` as a module of the kernels package (its relative imports resolve there)."""
    spec = importlib.util.spec_from_file_location("specattn.gpu.kernels._ab_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def use(module) -> None:
    """Make ``module`` the one ``sparse_verify`` / ``dense_verify`` launch (they import it at each call)."""
    kernels.sparse_attn = module
    sys.modules["specattn.gpu.kernels.sparse_attn"] = module


def main() -> None:
    versions = {"base": load_base(sys.argv[1]), "tree": kernels.sparse_attn}
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    fi_ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    who = ("flashinfer", *versions)
    print(f"{'model':18} {'T':>1} {'B':>2} {'kept':>5} kernel sum r1/r2: "
          + " ".join(f"{w:>15}" for w in who) + " | graph r1/r2: " + " ".join(f"{w:>15}" for w in who)
          + "  tree: merge+split  max|tree-base|")
    wins = {(v, m): 0 for v in versions for m in ("sum", "graph")}
    counted = 0
    for model, t, batch, density in SHAPES:
        hq, hkv, d = MODELS[model]
        s = fi = same = None  # the last shape's tensors freed before this one's are made
        torch.cuda.empty_cache()
        s, lists, nc = random_case(hq, hkv, d, batch, t, density, gen, cgen)
        fi = page_table(s, lists, 16, 32768, fi_ws)
        same = fi.same_selection(nc)
        times, spans, outs, last = {v: [] for v in who}, {v: [] for v in who}, {}, {}
        for _ in range(2):
            times["flashinfer"].append(sum(kernel_us(fi).values()))
            spans["flashinfer"].append(graph_us(fi))
            for name, module in versions.items():
                use(module)
                ws = module.make_workspace(batch, hkv, hq // hkv, t, d, CONFIG, "cuda")
                if density >= 1.0:
                    def call():
                        return dense_verify(s.q, s.k, s.v, s.lengths, 16, out=s.out, workspace=ws, config=CONFIG)
                else:
                    def call():
                        return sparse_verify(s.q, s.k, s.v, s.lengths, same.ids, same.n, 16, out=s.out,
                                             workspace=ws, config=CONFIG)
                us = kernel_us(call)
                times[name].append(sum(us.values()))
                spans[name].append(graph_us(call))
                last[name] = us
                outs[name] = call().float().clone()
        use(versions["tree"])
        diff = (outs["tree"] - outs["base"]).abs().max().item()
        parts = "+".join(f"{v:.1f}" for _, v in sorted(last["tree"].items()))
        cells = " ".join(f"{a:>7.1f}/{b:<7.1f}" for table in (times, spans) for a, b in table.values())
        print(f"{model:18} {t:>1} {batch:>2} {density:>5.3f} {cells}  {parts:>17}  {diff:.1e}", flush=True)
        if density > 0.0:
            counted += 1
            for (name, measure) in wins:
                table = times if measure == "sum" else spans
                wins[name, measure] += min(table[name]) <= min(table["flashinfer"])
    print("no slower than FlashInfer: " + ", ".join(f"{v} at {n} of {counted} ({m})" for (v, m), n in wins.items()))


if __name__ == "__main__":
    main()
