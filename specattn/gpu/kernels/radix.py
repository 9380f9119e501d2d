"""Build, load and launch the CUDA radix nucleus kernel (``nucleus_radix.cu``).

The kernel is compiled once per GPU architecture with ``nvcc`` (found on ``PATH``, in ``$CUDA_HOME``
or ``/usr/local/cuda``) into ``$SPECATTN_CACHE/cuda`` (default ``~/.cache/specattn/cuda``) and loaded
with :mod:`ctypes`: no ninja, no pybind, no Python build at install time. Where no ``nvcc`` exists,
:func:`available` is False and :mod:`.nucleus` keeps its Triton kernels.

Launch cost is one ctypes call; the launch goes to the current torch stream, so it can be captured
in a CUDA graph.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

from ...core.cache_dir import cache_root
from ...core.errors import SpecAttnError

SOURCE = Path(__file__).with_name("nucleus_radix.cu")
MAX_LENGTH = (1 << 20) - 1  # the per-bin key count is packed into 20 bits
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def nvcc_path() -> str | None:
    """The ``nvcc`` to build with, or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


@functools.cache
def _library(arch: str, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile (once, cached by source hash, arch and extra nvcc ``defines``, e.g. the profiling build's
    ``("-DSPECATTN_RADIX_PROFILE",)``) and load the kernel library."""
    nvcc = nvcc_path()
    if nvcc is None:
        raise SpecAttnError("the CUDA radix nucleus kernel needs nvcc (set CUDA_HOME); "
                            "set SPECATTN_NUCLEUS=triton to use the Triton kernels instead")
    digest = hashlib.sha256(SOURCE.read_bytes() + arch.encode() + "".join(defines).encode()).hexdigest()[:16]
    lib = cache_root() / "cuda" / f"nucleus_radix_{arch}_{digest}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [nvcc, "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", *defines, "-o", str(tmp), str(SOURCE)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise SpecAttnError(f"nvcc failed to build {SOURCE.name} for {arch}: {res.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)  # atomic: concurrent builders never load a half-written file
    dll = ctypes.CDLL(str(lib))
    dll.specattn_nucleus_radix.restype = ctypes.c_int
    dll.specattn_nucleus_radix.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
        ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
    ]
    dll.specattn_cuda_error_string.restype = ctypes.c_char_p
    dll.specattn_cuda_error_string.argtypes = [ctypes.c_int]
    return dll


@functools.cache
def _arch(device_index: int) -> str:
    major, minor = torch.cuda.get_device_capability(device_index)
    return f"sm_{major}{minor}"


@functools.cache
def available(device_index: int = 0) -> bool:
    """True when a CUDA GPU and nvcc exist and the kernel builds (the build is tried once)."""
    if not torch.cuda.is_available() or nvcc_path() is None:
        return False
    try:
        _library(_arch(device_index))
    except (SpecAttnError, OSError):  # failed build, unreadable source or library
        return False
    return True


def thresholds(w: torch.Tensor, p: float, theta: torch.Tensor, tkey: torch.Tensor,
               cmax: torch.Tensor | None = None, chunk: int = 0) -> bool:
    """Fill ``theta`` (rows,) float64 and ``tkey`` (rows,) int32 with the nucleus thresholds of the rows
    of ``w`` (rows, L), unit stride along L, float32/float16/bfloat16, L <= MAX_LENGTH.

    With ``cmax`` (rows, ceil(L / chunk)) int32, also writes each chunk's largest key when that can be
    fused into the kernel's first pass (16-byte aligned rows, a chunk of 1, 2, 4, ..., 32 16-byte
    vectors); returns whether it did (decided on the host, no synchronisation).
    """
    rows, length = w.shape
    if length > MAX_LENGTH:
        raise SpecAttnError(f"radix nucleus kernel: rows of {length} keys exceed {MAX_LENGTH}")
    dll = _library(_arch(w.device.index or 0))  # both cached: a few us of host time saved per call
    stream = torch.cuda.current_stream(w.device).cuda_stream
    fused = ctypes.c_int(0)
    err = dll.specattn_nucleus_radix(
        w.data_ptr(), _DTYPES[w.dtype], rows, length, w.stride(0), float(p), int(float(p) == 1.0),
        theta.data_ptr(), tkey.data_ptr(), None if cmax is None else cmax.data_ptr(),
        0 if cmax is None else cmax.shape[1], int(chunk), ctypes.byref(fused), stream,
    )
    if err != 0:
        raise SpecAttnError(f"radix nucleus kernel launch failed: {dll.specattn_cuda_error_string(err).decode()}")
    return bool(fused.value)
