"""Where the time of exact nucleus selection goes on the GPU (numbers quoted in docs/benchmarks.md).

    python scripts/profile_selection_steps.py [ROWS L ...]      # default: 256 131072  32 131072  4096 8192

Prints one table per shape (do_bench medians, L2 flushed, microseconds):
- Triton single passes over the rows: a plain read + float64 sum (the bandwidth floor in practice), and
  a read + ``tl.histogram`` with 128 / 1024 bins (the bracket the Triton long path needs);
- the CUDA radix kernel (specattn/kernels/nucleus_radix.cu) rebuilt in profiling variants: step 1
  alone, step 1 without its shared-memory atomics, and the whole kernel.
The variants are text edits of the real source, compiled next to it with nvcc; they exist only here.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from specattn.bench.kernel_bench import _softmax_rows
from specattn.kernels import radix


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


def _variant(name: str, text: str):
    """Compile an edited copy of the radix source; returns its launch function."""
    d = Path(tempfile.mkdtemp())
    (d / f"{name}.cu").write_text(text)
    arch = "sm_{}{}".format(*torch.cuda.get_device_capability())
    cmd = [radix.nvcc_path(), "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", "-o", str(d / f"{name}.so"),
           str(d / f"{name}.cu")]
    subprocess.run(cmd, check=True, capture_output=True)
    fn = ctypes.CDLL(str(d / f"{name}.so")).specattn_nucleus_radix
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                   ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]
    return fn


def radix_variants() -> dict:
    src = radix.SOURCE.read_text()
    atomic = "    warp_add(sh.approx, valid ? (k >> 20) : kNoBin, valid ? x : 0.0f);\n"
    after_step1 = "  uint32_t b1 = sh.bin;\n"
    assert atomic in src and after_step1 in src, "nucleus_radix.cu changed: update the profiling edits"
    step1 = src.replace(after_step1, after_step1 + "  if (threadIdx.x == 0) tkey[blockIdx.x] = (int32_t)b1;\n  return;\n")
    return {"radix: step 1 only": _variant("step1", step1),
            "radix: step 1, no atomics": _variant("step1_noatomic", step1.replace(atomic, "")),
            "radix: whole kernel": _variant("full", src)}


def profile(rows: int, length: int, variants: dict) -> None:
    w = _softmax_rows(rows, length, torch.float32)
    seg = 16384 if length >= 16384 else triton.next_power_of_2(length)
    ns = triton.cdiv(length, seg)
    out = torch.empty(rows * ns * 1024, dtype=torch.float64, device="cuda")
    theta = torch.empty(rows, dtype=torch.float64, device="cuda")
    tkey = torch.empty(rows, dtype=torch.int32, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    fused = ctypes.c_int(0)
    cases = {
        "triton: read + float64 sum": lambda: _read_pass[(rows, ns)](w, out, length, SEG=seg, num_warps=8),
        "triton: read + histogram 128 bins": lambda: _hist_pass[(rows, ns)](w, out, length, SEG=seg, NB=128, SHIFT=21,
                                                                            num_warps=8),
        "triton: read + histogram 1024 bins": lambda: _hist_pass[(rows, ns)](w, out, length, SEG=seg, NB=1024,
                                                                             SHIFT=18, num_warps=8),
    }
    for name, fn in variants.items():
        cases[name] = (lambda f: lambda: f(w.data_ptr(), 0, rows, length, length, 0.95, 0, theta.data_ptr(),
                                           tkey.data_ptr(), None, 0, 0, ctypes.byref(fused), stream))(fn)
    floor_us = rows * length * 4 / 4.27e12 * 1e6  # bytes once / the H200's measured copy bandwidth
    print(f"\n{rows} x {length} float32 (floor {floor_us:.1f} us)\n\n| pass | us | x floor |\n|---|---:|---:|")
    for name, fn in cases.items():
        us = do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
        print(f"| {name} | {us:.1f} | {us / floor_us:.2f} |")


def main(argv: list[str]) -> None:
    nums = [int(a) for a in argv] or [256, 131072, 32, 131072, 4096, 8192]
    variants = radix_variants()
    for rows, length in zip(nums[::2], nums[1::2]):
        profile(rows, length, variants)


if __name__ == "__main__":
    main(sys.argv[1:])
