"""Compile the GPU kernels for sm_90 on a machine without a GPU and report registers/spills.

Usage: python -m specattn.gpu.kernels.aot_check  (needs `pip install triton`; no GPU, no driver)
Catches compile errors (types of loop-carried values, unsupported ops) before spending device time.
The CUDA radix kernel (nucleus_radix.cu, its normal and profiling builds) is compiled too when NVRTC and
the CUDA headers are installed: `pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12` (dev only).
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_one(name, fn, signature, constexprs, num_warps=4, div16=(), options=None, spill_free=False):
    """Compile ``fn`` for sm_90; ``div16`` names the arguments to specialise as multiples of 16 (as the
    launcher does at run time for such pointers and integers: wider loads, cp.async pipelining); ``options``: more
    compile options (e.g. ``maxnreg``); ``spill_free``: a spill store fails the check."""
    sig = dict(signature)
    for k in constexprs:
        sig[k] = "constexpr"
    names = list(sig)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in div16}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    try:
        k = triton.compile(src, target=TARGET, options={"num_warps": num_warps, **(options or {})})
    except Exception as e:  # noqa: BLE001
        print(f"FAIL {name}: {type(e).__name__}: {str(e)[:2000]}")
        return False
    ptx = k.asm["ptx"]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.ptx")
        open(p, "w").write(ptx)
        out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", p, "-o", os.path.join(d, "k.o")],
                             capture_output=True, text=True)
    found = re.findall(r"Used \d+ registers|\d+ bytes spill stores|\d+ bytes stack frame|\d+ bytes smem", out.stderr)
    info = " ".join(found)
    if spill_free and any(f.endswith("spill stores") and int(f.split()[0]) for f in found):
        print(f"FAIL {name}: {info} (must not spill)")
        return False
    print(f"ok   {name}: warps={num_warps} shared={k.metadata.shared} {info}")
    return True


def _nvrtc():
    """(libnvrtc, CUDA include folder) from the pip packages nvidia-cuda-nvrtc-cu12 / -runtime-cu12, or None."""
    try:
        import nvidia.cuda_nvrtc
        import nvidia.cuda_runtime
    except ImportError:
        return None
    libs = [lib for lib in sorted(glob.glob(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib", "libnvrtc.so.*")))
            if "builtins" not in lib and ".alt." not in lib]
    include = os.path.join(list(nvidia.cuda_runtime.__path__)[0], "include")
    return (ctypes.CDLL(libs[0]), include) if libs else None


def radix_check(defines: tuple[str, ...] = ()) -> bool:
    """Compile nucleus_radix.cu's device code (all three input types) for sm_90 with NVRTC (its own ptxas)."""
    from specattn.gpu.kernels import radix

    name = "nucleus_radix" + "".join(f" {d}" for d in defines)
    found = _nvrtc()
    if found is None:
        print(f"skip {name}: NVRTC not installed (pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12)")
        return True
    lib, include = found
    prog = ctypes.c_void_p()
    lib.nvrtcCreateProgram(ctypes.byref(prog), radix.SOURCE.read_bytes(), b"nucleus_radix.cu", 0, None, None)
    for t in ("float", "__half", "__nv_bfloat16"):  # instantiate the kernel template for each input type
        lib.nvrtcAddNameExpression(prog, f"&nucleus_radix_kernel<{t}>".encode())
    opts = [b"-arch=sm_90", b"-std=c++17", b"--ptxas-options=-v", f"-I{include}".encode(), *(d.encode() for d in defines)]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    text = log.value.decode()
    if rc != 0:
        print(f"FAIL {name}: {text[-3000:]}")
        return False
    info = re.findall(r"Used \d+ registers|\d+ bytes spill stores", text)
    ok = len(info) == 6  # registers and spills of three kernels
    print(f"{'ok  ' if ok else 'FAIL'} {name}: " + (" ".join(info) if ok else text[-3000:]))
    return ok


def nucleus_check() -> bool:
    """The nucleus selection's Triton kernels (``nucleus.py``), each input type and on-chip block size."""
    from specattn.gpu.kernels import nucleus as N

    ok = True
    for dt in ["fp32", "bf16"]:
        for block, chunk in [(1024, 16), (8192, 16), (16384, 16)]:
            warps, pre = N._onchip_config(block)
            ok &= compile_one(f"onchip {dt} B={block}", N._onchip_kernel,
                {"w_ptr": f"*{dt}", "stride": "i32", "L": "i32", "p_bits": "i64", "theta_ptr": "*fp64",
                 "tkey_ptr": "*i32", "cmax_ptr": "*i32", "n_chunks": "i32", "scratch_ptr": "*i32"},
                {"BLOCK": block, "CHUNK": chunk, "WRITE_CMAX": True, "P_ONE": False, "PRECOMP": pre, "MAXIT": 40,
                 "CT": N.CT_ONCHIP if block > 2 * N.CT_ONCHIP else block},
                warps)
        ok &= compile_one(f"seg_stats {dt}", N._seg_stats_kernel,
            {"w_ptr": f"*{dt}", "stride": "i32", "L": "i32", "S": "i32", "ssum_ptr": "*fp64", "smax_ptr": "*i32",
             "smin_ptr": "*i32", "hist_ptr": "*i32", "cmax_ptr": "*i32", "n_chunks": "i32"},
            {"SEGB": N.SEG, "CHUNK": 16, "WRITE_CMAX": True, "NB": N.NBINS, "SHIFT": N.BIN_SHIFT}, 16)
        ok &= compile_one(f"compact {dt}", N._compact_kernel,
            {"w_ptr": f"*{dt}", "stride": "i32", "L": "i32", "S": "i32", "dec_i_ptr": "*i32", "above_ptr": "*fp64",
             "cnt_ptr": "*i32", "cand_ptr": "*i32"}, {"SEGB": N.SEG_COMPACT, "CAP": N.CAND_CAP}, 8)
        ok &= compile_one(f"finish {dt}", N._finish_kernel,
            {"w_ptr": f"*{dt}", "stride": "i32", "L": "i32", "S": "i32", "dec_i_ptr": "*i32", "dec_f_ptr": "*fp64",
             "above_ptr": "*fp64", "cnt_ptr": "*i32", "cand_ptr": "*i32", "theta_ptr": "*fp64", "tkey_ptr": "*i32",
             "scratch_ptr": "*i32"},
            {"SB": 16, "CAP": N.CAND_CAP, "TILE": 4096, "MAXIT": 40, "CT": N.CT_FINISH}, 16)
        ok &= compile_one(f"chunk_max {dt}", N._chunk_max_kernel,
            {"w_ptr": f"*{dt}", "stride": "i32", "L": "i32", "cmax_ptr": "*i32", "n_chunks": "i32", "C": "i32"},
            {"CB": 64, "CP": 32}, 4)
    ok &= compile_one("decide", N._decide_kernel,
        {"L": "i32", "S": "i32", "p_bits": "i64", "ssum_ptr": "*fp64", "smax_ptr": "*i32", "smin_ptr": "*i32",
         "hist_ptr": "*i32", "dec_i_ptr": "*i32", "dec_f_ptr": "*fp64", "cnt_ptr": "*i32", "theta_ptr": "*fp64",
         "tkey_ptr": "*i32"}, {"SB": 16, "NB": N.NBINS, "SHIFT": N.BIN_SHIFT, "CAP": N.CAND_CAP, "P_ONE": False}, 4)
    ok &= compile_one("union", N._chunk_union_kernel,
        {"cmax_ptr": "*i32", "tkey_ptr": "*i32", "out_ptr": "*u8", "R": "i32", "n_groups": "i32",
         "n_chunks": "i32", "GROUP": "i32"}, {"BLOCK_C": 256}, 4)
    return ok


#: the kernel modules whose ``_aot_check(compile_one)`` lists their own cases (the largest first: parts run in
#: parallel, each in a process of its own, and are printed in this order)
MODULES = ["sparse_attn", "fused_llama", "projection_epilogues", "draft_rows", "skinny_gemm", "bsr", "tail",
           "chunk_list", "score_rows", "rmsnorm", "stream_read", "gather_read", "budget_top", "quest_bound",
           "quest_fold"]


def run_part(part: str) -> tuple[bool, str]:
    """One part of the check (``nucleus``, a name of MODULES, or ``radix``): whether it passed, and its lines."""
    import contextlib
    import importlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if part == "nucleus":
            ok = nucleus_check()
        elif part == "radix":
            ok = radix_check() & radix_check(("-DSPECATTN_RADIX_PROFILE",))
        else:
            ok = importlib.import_module(f"specattn.gpu.kernels.{part}")._aot_check(compile_one)
    return bool(ok), out.getvalue()


def main():
    import argparse
    from concurrent.futures import ProcessPoolExecutor

    parser = argparse.ArgumentParser(prog="python -m specattn.gpu.kernels.aot_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parts compiled at once, a process each (default: the CPU count)")
    jobs = parser.parse_args().jobs
    if jobs < 1:
        parser.error(f"--jobs {jobs}: give 1 or more")
    parts = [*MODULES, "nucleus", "radix"]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = dict(zip(parts, pool.map(run_part, parts)))
    ok = True
    for part in ["nucleus", *MODULES, "radix"]:  # the order of the report
        passed, lines = results[part]
        print(lines, end="")
        ok &= passed
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
