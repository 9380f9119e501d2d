"""Timing on the GPU: medians of event-timed passes over rotating inputs, CUDA-graph replays, the
device-to-device copy bandwidth that every floor divides by, and the hardware line of the tables.

Rules (docs/benchmarks.md): warm-up excluded; every timed call reads its own input set, and the sets
together span several times the L2 cache, so no call finds its data in L2 (the cache is never
flushed between calls, which would idle the GPU while the host runs ahead); the median over ``reps``
passes of ``(time of one pass over all sets) / sets``. Eager passes include whatever host time the
GPU waits for; graph passes replay one captured graph per set.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from ..core.errors import SpecAttnError


def require_gpu(what: str = "kernel_bench") -> None:
    if not torch.cuda.is_available():
        raise SpecAttnError(f"{what} needs a CUDA GPU and none is available: run it on the GPU machine")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise SpecAttnError(f"{what} needs triton (it ships with CUDA builds of torch)") from None


def median_ms(calls: list[Callable[[], object]], reps: int, warmup: int = 2) -> float:
    """Median over ``reps`` passes of the per-call time (ms) of running ``calls`` back to back."""
    for _ in range(warmup):
        for call in calls:
            call()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for call in calls:
            call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    return statistics.median(times)


def capture(fn: Callable[[], object], warmup: int = 2) -> torch.cuda.CUDAGraph:
    """``fn`` recorded in a CUDA graph (after ``warmup`` eager runs on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def graph_ms(fns: list[Callable[[], object]], reps: int) -> float:
    """Median per-call time of replaying one captured graph per function (one per input set)."""
    graphs = [capture(fn) for fn in fns]
    try:
        return median_ms([g.replay for g in graphs], reps)
    finally:
        del graphs


def graph_call_us(calls: list[Callable[[], object]], reps: int = 20) -> float:
    """Median GPU microseconds a call of ``calls`` captured back to back in one CUDA graph (``reps`` replays): launch
    gaps and any overlap of a kernel with the next included."""
    return graph_ms([lambda: [call() for call in calls]], reps) * 1e3 / len(calls)


def reps_for(ms_guess: float, budget_ms: float, least: int = 10, most: int = 100) -> int:
    """Passes that fit ``budget_ms`` at ``ms_guess`` per pass, within [least, most]."""
    return int(min(most, max(least, budget_ms / max(ms_guess, 1e-3))))


def measure_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device memory bandwidth in bytes/s from a D2D copy (bytes read + bytes written)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = median_ms([lambda: dst.copy_(src)], reps=50, warmup=3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3)


def measure_read_bandwidth(nbytes: int = 4 << 30) -> float:
    """Device memory read bandwidth in bytes/s: the fastest of a few settings of a streaming read that
    reads ``nbytes`` once and writes one float per 16-64 KiB (:mod:`specattn.gpu.kernels.stream_read`), the
    floor a kernel that only reads its inputs can reach (a copy reads and writes)."""
    from ..gpu.kernels.stream_read import CONFIGS, partial_sums

    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").uniform_()
    best = float("inf")
    for block, iters, warps in CONFIGS:
        out = partial_sums(src, block, iters, warps)
        best = min(best, median_ms([lambda: partial_sums(src, block, iters, warps, out=out)], reps=30, warmup=3))
    del src, out
    torch.cuda.empty_cache()
    return nbytes / (best * 1e-3)


def hardware() -> dict:
    import triton

    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sms": p.multi_processor_count, "mem_gib": round(p.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__}


GPU_STATE_FIELDS = {"sm_mhz": "clocks.sm", "mem_mhz": "clocks.mem", "temp_c": "temperature.gpu",
                    "power_w": "power.draw"}


def gpu_state(index: int = 0) -> dict[str, float]:
    """The GPU's SM and memory clocks (MHz), temperature (C) and power draw (W) now, from ``nvidia-smi`` (about
    30 ms of host time); NaN for each where there is no ``nvidia-smi`` or it fails (the CPU, a driver without
    the field). Read after a timed pass, it tells a slow pass from a throttled GPU."""
    import shutil
    import subprocess

    nan = {key: float("nan") for key in GPU_STATE_FIELDS}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return nan
    try:
        out = subprocess.run([smi, f"--id={index}", f"--query-gpu={','.join(GPU_STATE_FIELDS.values())}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10, check=True)
        values = [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]
    except (OSError, subprocess.SubprocessError, IndexError):
        return nan
    if len(values) != len(GPU_STATE_FIELDS):
        return nan
    return {key: _number(v) for key, v in zip(GPU_STATE_FIELDS, values)}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return float("nan")
