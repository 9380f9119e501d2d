"""Where the time of exact nucleus selection goes on the GPU (numbers quoted in docs/benchmarks.md).

    python scripts/profile_selection_steps.py [ROWS L ...]      # default: 256 131072  32 131072  32 8192  4096 8192

Prints one table per shape, in microseconds:
- Triton single passes over the rows (do_bench medians, L2 flushed): a plain read + float64 sum (the
  bandwidth floor in practice), and a read + ``tl.histogram`` with 128 / 1024 bins;
- the CUDA radix kernel (specattn/gpu/kernels/nucleus_radix.cu), whole (do_bench median), and the time of
  each of its phases: the kernel rebuilt with ``-DSPECATTN_RADIX_PROFILE`` stamps the SM clock at every
  phase boundary of each block; the table gives the median over blocks, converted at the SM clock
  measured in the same run.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from specattn.bench.selection import _softmax_rows
from specattn.gpu.kernels import radix

PHASES = ["zero the histogram", "step 1: read, guess histogram, total", "step 1: block sum",
          "step 1: pick the d1 guess", "step 2: pass over the row (d2 histogram of b1)",
          "step 2: block sums + verification", "step 2: pick d2", "step 3: pass over the keys of b1",
          "step 3: pick d3"]
PROF_BLOCKS, PROF_POINTS = 1024, 10  # kProfBlocks, kProfPoints in nucleus_radix.cu


@triton.jit
def _read_pass(w, out, L, SEG: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    o = s * SEG + tl.arange(0, SEG)
    x = tl.load(w + r * L + o, mask=o < L, other=0.0)
    tl.store(out + r * tl.num_programs(1) + s, tl.sum(x.to(tl.float64)))


@triton.jit
def _hist_pass(w, out, L, SEG: tl.constexpr, NB: tl.constexpr, SHIFT: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    o = s * SEG + tl.arange(0, SEG)
    k = tl.load(w + r * L + o, mask=o < L, other=0.0).to(tl.int32, bitcast=True)
    b = tl.minimum((tl.max(k) >> SHIFT) - (k >> SHIFT), NB - 1)
    tl.store(out + (r * tl.num_programs(1) + s) * NB + tl.arange(0, NB), tl.histogram(b, NB))


def sm_clock_ghz() -> float:
    """SM clock under load: cycles of a busy kernel over its wall time (torch.cuda._sleep spins on clock64)."""
    torch.cuda._sleep(10_000_000)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 200_000_000
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    return cycles / (start.elapsed_time(end) * 1e6)


def profile(rows: int, length: int, lib: ctypes.CDLL, prof: ctypes.CDLL, ghz: float) -> None:
    w = _softmax_rows(rows, length, torch.float32)
    seg = 16384 if length >= 16384 else triton.next_power_of_2(length)
    ns = triton.cdiv(length, seg)
    out = torch.empty(rows * ns * 1024, dtype=torch.float64, device="cuda")
    theta = torch.empty(rows, dtype=torch.float64, device="cuda")
    tkey = torch.empty(rows, dtype=torch.int32, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    fused = ctypes.c_int(0)

    def radix_call(f):
        return lambda: f(w.data_ptr(), 0, rows, length, length, 0.95, 0, theta.data_ptr(), tkey.data_ptr(), None, 0,
                         0, ctypes.byref(fused), stream)

    cases = {
        "triton: read + float64 sum": lambda: _read_pass[(rows, ns)](w, out, length, SEG=seg, num_warps=8),
        "triton: read + histogram 128 bins": lambda: _hist_pass[(rows, ns)](w, out, length, SEG=seg, NB=128, SHIFT=21,
                                                                            num_warps=8),
        "triton: read + histogram 1024 bins": lambda: _hist_pass[(rows, ns)](w, out, length, SEG=seg, NB=1024,
                                                                             SHIFT=18, num_warps=8),
        "radix: whole kernel": radix_call(lib.specattn_nucleus_radix),
    }
    floor_us = rows * length * 4 / 4.27e12 * 1e6  # bytes once / the H200's measured copy bandwidth
    print(f"\n{rows} x {length} float32 (floor {floor_us:.1f} us; SM clock {ghz:.2f} GHz)\n\n| pass | us | x floor |"
          "\n|---|---:|---:|")
    for name, fn in cases.items():
        us = do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
        print(f"| {name} | {us:.1f} | {us / floor_us:.2f} |")
    run = radix_call(prof.specattn_nucleus_radix)
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    stamps = np.zeros((PROF_BLOCKS, PROF_POINTS), dtype=np.int64)
    assert prof.specattn_radix_profile(ctypes.c_void_p(stamps.ctypes.data)) == 0
    per_block = np.diff(stamps[: min(rows, PROF_BLOCKS)], axis=1)
    total = np.median(per_block.sum(axis=1)) / ghz / 1e3
    print(f"| radix phases (one block's lifetime, median over blocks): {total:.1f} us | | |")
    for name, cyc in zip(PHASES, np.median(per_block, axis=0)):
        print(f"| &nbsp; {name} | {cyc / ghz / 1e3:.2f} | |")


def main(argv: list[str]) -> None:
    nums = [int(a) for a in argv] or [256, 131072, 32, 131072, 32, 8192, 4096, 8192]
    arch = radix._arch(torch.cuda.current_device())
    lib = radix._library(arch)
    prof = radix._library(arch, ("-DSPECATTN_RADIX_PROFILE",))  # also exports specattn_radix_profile
    ghz = sm_clock_ghz()
    for rows, length in zip(nums[::2], nums[1::2]):
        profile(rows, length, lib, prof, ghz)


if __name__ == "__main__":
    main(sys.argv[1:])
