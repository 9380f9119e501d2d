"""The sparse kernel module A/B'd against other versions or launch settings of it in one process (issue 23):
``python3 scripts/gpu/ab_kernel.py ARM [ARM ...]``, each ARM ``PATH`` (a version of the module, e.g. ``git show
REV:specattn/gpu/kernels/sparse_attn.py``, loaded beside the tree's), ``PATH@field=value,...`` (that version with
those ``SplitConfig`` fields changed) or ``@field=value,...`` (the tree's so). The tree's module at decode_real's sparse
launch (``profile_kernel.CONFIGS["sparse128"]``) is always an arm, and FlashInfer's page table over the same chunks
runs beside, at ``profile_kernel.py``'s 23 shapes (32K; kept 1.0: ``dense_verify``), in two rounds that alternate the
arms, each timed two ways (random bf16 inputs and chunks): the sum of its kernels' CUPTI GPU times per call
(``profile_kernel.kernel_us``: launch gaps excluded) and a call's time in a replayed CUDA graph of 20 calls
(``profile_kernel.graph_us``: gaps and overlap included, the issue's measure and the one for a programmatically
dependent launch, whose wait the sum counts), and the same graph with its calls rotating over input sets that together
pass the L2 several times (``profile_kernel.rotating_graph_us``, "cold": each call reads from device memory, as in a
decoding step; the single-set graph re-reads from L2 what fits there, e.g. Llama-3.1-8B batch 1's 13-34 MB). Per
shape: the input sets of the cold graph, FlashInfer's and each arm's (round 1 / round 2) by each measure, the tree's
kernels, and the largest difference of an arm's output from the tree's. Then "no slower than FlashInfer at N of 17"
for each arm and measure (the shapes with chunks kept, each at its better round)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_kernel import (  # noqa: E402
    CONFIGS,
    REAL,
    Inputs,
    cold_sets,
    graph_us,
    kernel_us,
    list_bytes,
    ours,
    page_table,
    random_case,
    rotating_graph_us,
)

import specattn.gpu.kernels as kernels  # noqa: E402
import specattn.gpu.kernels.sparse_attn as kernels_tree  # noqa: E402
from specattn.bench.attention import MODELS  # noqa: E402

CONFIG = CONFIGS["sparse128"]
SHAPES = [(m, 5, b, d) for m in ("llama-3.1-8b", "llama-2-7b") for b in (1, 4, 16) for d in (0.0, 0.1, 0.25)] + REAL


def load_base(path: str, name: str = "_ab_base"):
    """``path`` as module ``name`` of the kernels package (its relative imports resolve there)."""
    spec = importlib.util.spec_from_file_location(f"specattn.gpu.kernels.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def arm(text: str, index: int):
    """An arm from its argument (module docstring): its module and launch settings."""
    path, _, changes = text.partition("@")
    module = load_base(path, f"_ab_base{index}") if path else kernels_tree
    fields = dict(change.split("=") for change in changes.split(",") if change)
    return module, replace(CONFIG, **{k: int(v) for k, v in fields.items()})


def use(module) -> None:
    """Make ``module`` the one ``sparse_verify`` / ``dense_verify`` launch (they import it at each call)."""
    kernels.sparse_attn = module
    sys.modules["specattn.gpu.kernels.sparse_attn"] = module


def main() -> None:
    arms = {"tree": (kernels_tree, CONFIG)}
    arms.update({f"a{i}": arm(text, i) for i, text in enumerate(sys.argv[1:], 1)})
    for i, text in enumerate(sys.argv[1:], 1):
        print(f"a{i}: {text} ({arms[f'a{i}'][1]})")
    gen = torch.Generator(device="cuda").manual_seed(0)
    cgen = torch.Generator().manual_seed(0)
    fi_ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    who = ("flashinfer", *arms)
    print(f"{'model':18} {'T':>1} {'B':>2} {'kept':>5} sets kernel sum r1/r2: " + " ".join(f"{w:>15}" for w in who)
          + " | graph r1/r2: " + " ".join(f"{w:>15}" for w in who) + " | cold r1/r2: "
          + " ".join(f"{w:>15}" for w in who) + "  tree: merge+split  max|arm-tree|")
    measures = ("sum", "graph", "cold")
    wins = {(a, m): 0 for a in arms for m in measures}
    counted = 0
    for model, t, batch, density in SHAPES:
        hq, hkv, d = MODELS[model]
        s = fi = same = sets = fis = None  # the last shape's tensors freed before this one's are made
        torch.cuda.empty_cache()
        s, lists, nc = random_case(hq, hkv, d, batch, t, density, gen, cgen)
        fi = page_table(s, lists, 16, 32768, fi_ws)
        same = fi.same_selection(nc)
        cache = 4 * s.k.numel()  # keys and values, bf16
        read = cache if density >= 1.0 else list_bytes(same, hkv, d, 16)
        extra = cold_sets(read, 2 * cache) - 1  # a set: ours and FlashInfer's paged copy
        sets = [s] + [Inputs(hq, hkv, d, batch, 32768, t, gen) for _ in range(extra)]
        fis = [fi] + [page_table(x, lists, 16, 32768, fi_ws) for x in sets[1:]]  # identical plans: one workspace
        times, spans, colds, outs, last = {v: [] for v in who}, {v: [] for v in who}, {v: [] for v in who}, {}, {}
        for _ in range(2):
            times["flashinfer"].append(sum(kernel_us(fi).values()))
            spans["flashinfer"].append(graph_us(fi))
            colds["flashinfer"].append(rotating_graph_us(fis))
            for name, (module, config) in arms.items():
                use(module)
                ws = module.make_workspace(batch, hkv, hq // hkv, t, d, config, "cuda")  # calls run one at a time
                calls = [ours(x, same, 16, density, ws, config) for x in sets]
                us = kernel_us(calls[0])
                times[name].append(sum(us.values()))
                spans[name].append(graph_us(calls[0]))
                colds[name].append(rotating_graph_us(calls))
                last[name] = us
                outs[name] = calls[0]().float().clone()
        use(kernels_tree)
        diff = max([(outs[a] - outs["tree"]).abs().max().item() for a in arms if a != "tree"], default=0.0)
        parts = "+".join(f"{v:.1f}" for _, v in sorted(last["tree"].items()))
        tables = dict(zip(measures, (times, spans, colds)))
        cells = " | ".join(" ".join(f"{a:>7.1f}/{b:<7.1f}" for a, b in table.values()) for table in tables.values())
        print(f"{model:18} {t:>1} {batch:>2} {density:>5.3f} {len(sets):>4} {cells}  {parts:>17}  {diff:.1e}",
              flush=True)
        if density > 0.0:
            counted += 1
            for (name, measure) in wins:
                wins[name, measure] += min(tables[measure][name]) <= min(tables[measure]["flashinfer"])
    print("no slower than FlashInfer: " + ", ".join(f"{a} at {n} of {counted} ({m})" for (a, m), n in wins.items()))


if __name__ == "__main__":
    main()
