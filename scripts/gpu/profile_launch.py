"""What a launch costs inside a CUDA graph, and what programmatic dependent launch (PDL) takes off it: the step's
~1,250-1,330 kernels spend 4-6 ms above their byte floor at 32K (docs/benchmarks.md, thirty-second session), 1.2 us
a launch for an elementwise kernel alone. Chains of 200 launches captured in a graph, median us a launch over 20
replays: (a) a Triton elementwise kernel on a (16, 896) bfloat16 tensor (a decoding layer's glue at batch 16), each
launch reading the previous one's output; (b) the same launched as a programmatic dependent of the one before
(``launch_pdl=True``, ``gdc_wait`` before its loads, ``gdc_launch_dependents`` at its start); (c) cuBLAS's q/k/v
projection of the draft (16 x 896 -> 1152) then the elementwise kernel on its output, alternating; (d) as (c) with the
elementwise kernel launched as the GEMM's programmatic dependent. Random inputs.

``python3 scripts/gpu/profile_launch.py`` on the GPU machine; prints a table."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from specattn.bench.timing import graph_call_us  # noqa: E402

LAUNCHES = 200


@triton.jit
def _add_one(x_ptr, y_ptr, n, BLOCK: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)


def add_one(x: torch.Tensor, y: torch.Tensor, pdl: bool) -> None:
    n = x.numel()
    _add_one[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024, PDL=pdl, launch_pdl=pdl, num_warps=4)


def main() -> None:
    a = torch.randn(16, 896, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    w = torch.randn(1152, 896, device="cuda", dtype=torch.bfloat16) / 30
    h = torch.empty(16, 1152, device="cuda", dtype=torch.bfloat16)
    g = torch.empty_like(h)
    rows = []
    for pdl in (False, True):
        chain = [lambda i=i: add_one(a, b, pdl) if i % 2 == 0 else add_one(b, a, pdl) for i in range(LAUNCHES)]
        rows.append((f"elementwise chain{' (PDL)' if pdl else ''}", graph_call_us(chain)))
    for pdl in (False, True):
        pair = []
        for _ in range(LAUNCHES // 2):
            pair += [lambda: torch.mm(a, w.T, out=h), lambda: add_one(h, g, pdl)]
        rows.append((f"GEMM, elementwise alternating{' (elementwise PDL)' if pdl else ''}", graph_call_us(pair)))
    rows.append(("GEMM chain alone", graph_call_us([lambda: F.linear(a, w)] * LAUNCHES)))
    print(f"{torch.cuda.get_device_name()}; a graph of {LAUNCHES} launches, median of 20 replays")
    for label, us in rows:
        print(f"{label:45} {us:6.2f} us a launch")


if __name__ == "__main__":
    main()
