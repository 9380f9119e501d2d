"""Nucleus selection benchmarks (table 1 of docs/benchmarks.md) and per-launch profiles.

Timed with ``triton.testing.do_bench`` (median after warm-up, L2 flushed before every run); the
profile also replays each launch in a CUDA graph (``do_bench_cudagraph``: no CPU launch overhead).
Selection input: ``softmax(3 * randn)`` rows; baselines: torch sort + cumsum top-p, its mask, and
``torch.topk`` at the mean nucleus size.
"""

from __future__ import annotations

import pandas as pd
import torch


def _bench(fn, cfg) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms, return_mode="median"))


def _bench_backend(K, backend: str, fn, cfg) -> float:
    """Time ``fn`` with the nucleus kernels forced to ``backend``; NaN where it cannot run."""
    from ..gpu.kernels import radix

    if backend == "cuda" and not radix.available():
        return float("nan")
    saved, K.BACKEND = K.BACKEND, backend
    try:
        return _bench(fn, cfg)
    finally:
        K.BACKEND = saved


def sort_threshold(w: torch.Tensor, p: float) -> torch.Tensor:
    """The usual torch top-p: sort descending, cumulative sum, first index reaching p * mass."""
    s = w.sort(dim=-1, descending=True).values
    c = s.cumsum(dim=-1)
    idx = (c < p * c[..., -1:]).sum(dim=-1, keepdim=True).clamp_(max=w.shape[-1] - 1)
    return s.gather(-1, idx)


def sort_mask(w: torch.Tensor, p: float) -> torch.Tensor:
    return w >= sort_threshold(w, p)


def _softmax_rows(rows: int, length: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = torch.empty((rows, length), dtype=dtype, device="cuda")
    step = max(1, (256 << 20) // (4 * length))
    for r in range(0, rows, step):
        x = torch.randn((min(step, rows - r), length), generator=g, device="cuda")
        out[r:r + step] = torch.softmax(3 * x, dim=-1).to(dtype)
    return out


def bench_selection(cfg, bandwidth: float, log=print) -> pd.DataFrame:
    from ..gpu.kernels import nucleus as K

    dtype = getattr(torch, cfg.sel_dtype)
    recs = []
    for rows in cfg.rows:
        for length in cfg.lengths:
            nbytes = rows * length * torch.finfo(dtype).bits // 8
            rec = {"rows": rows, "L": length, "dtype": cfg.sel_dtype, "input_MB": nbytes / 1e6}
            if nbytes > cfg.max_sel_bytes:
                rec["skipped"] = f"input {nbytes / 2**30:.1f} GiB > max_sel_bytes"
                recs.append(rec)
                continue
            w = _softmax_rows(rows, length, dtype)
            theta = K.nucleus_threshold(w, cfg.p)
            kept = (w >= theta[:, None].to(dtype)).sum(-1).double()
            rec["nucleus_frac"] = (kept.mean() / length).item()
            k_top = max(1, int(kept.mean().item()))
            rec["ours_threshold_ms"] = _bench(lambda: K.nucleus_threshold(w, cfg.p), cfg)
            for backend in ("triton", "cuda"):  # the two backends behind the default ("auto")
                rec[f"{backend}_threshold_ms"] = _bench_backend(K, backend, lambda: K.nucleus_threshold(w, cfg.p), cfg)
            rec["ours_mask_ms"] = _bench(lambda: K.nucleus_mask(w, cfg.p), cfg)
            rec["ours_chunkmask_ms"] = _bench(
                lambda: K.nucleus_chunk_mask(w.view(-1, min(cfg.gamma, rows), length), cfg.p, cfg.chunk_size, cfg.gamma), cfg)
            rec["sort_threshold_ms"] = _bench(lambda: sort_threshold(w, cfg.p), cfg)
            rec["sort_mask_ms"] = _bench(lambda: sort_mask(w, cfg.p), cfg)
            rec["topk_ms"] = _bench(lambda: torch.topk(w, k_top, dim=-1), cfg)
            rec["floor_ms"] = nbytes / bandwidth * 1e3
            rec["speedup_vs_sort"] = rec["sort_threshold_ms"] / rec["ours_threshold_ms"]
            rec["speedup_vs_topk"] = rec["topk_ms"] / rec["ours_threshold_ms"]
            rec["x_floor"] = rec["ours_threshold_ms"] / rec["floor_ms"]
            rec["chunkmask_x_floor"] = rec["ours_chunkmask_ms"] / rec["floor_ms"]
            log(f"selection rows={rows} L={length}: ours {rec['ours_threshold_ms']:.4f} ms, sort "
                f"{rec['sort_threshold_ms']:.4f} ms ({rec['speedup_vs_sort']:.1f}x), floor {rec['floor_ms']:.4f} ms "
                f"({rec['x_floor']:.1f}x)")
            recs.append(rec)
            del w
            torch.cuda.empty_cache()
    return pd.DataFrame(recs)


def profile_selection(rows: int, length: int, p: float = 0.95, dtype: torch.dtype = torch.float32,
                      log=print) -> pd.DataFrame:
    """Time each launch of our selection separately, eager (do_bench) and replayed in a CUDA graph
    (do_bench_cudagraph: no CPU launch overhead), next to the sort baseline."""
    from triton.testing import do_bench, do_bench_cudagraph

    from ..gpu.kernels import nucleus as K

    w = _softmax_rows(rows, length, dtype)
    recs = []

    def both(stage, fn):
        fn()
        torch.cuda.synchronize()
        eager = do_bench(fn, warmup=25, rep=100, return_mode="median")
        try:
            graph = do_bench_cudagraph(fn, rep=100, return_mode="median")
        except Exception as e:  # noqa: BLE001
            log(f"  graph timing of {stage} failed: {type(e).__name__}: {e}")
            graph = float("nan")
        recs.append({"rows": rows, "L": length, "stage": stage, "eager_ms": eager, "graph_ms": graph})
        log(f"profile {rows}x{length} {stage}: eager {eager:.4f} ms, graph {graph:.4f} ms")

    both("ours: threshold, all launches", lambda: K.nucleus_threshold(w, p))
    both("ours: fused chunk mask (gamma 4)", lambda: K.nucleus_chunk_mask(w.view(-1, 4, length), p, 16, 4))
    both("sort baseline threshold", lambda: sort_threshold(w, p))
    theta = torch.empty(rows, dtype=torch.float64, device="cuda")
    tkey = torch.empty(rows, dtype=torch.int32, device="cuda")
    if length > K.ONCHIP_MAX:
        launches = K._long_path(w, K._p_bits(p), False, theta, tkey, None, 0)
        for _, launch in launches:  # fill the intermediate buffers in order once
            launch()
        for name, launch in launches:
            both(f"  long path: {name}", launch)
    else:
        block = max(triton_next_pow2(length), 256)
        warps, precomp = K._onchip_config(block)
        ct = K.CT_ONCHIP if K.ONCHIP_TWO_PHASE and block > 2 * K.CT_ONCHIP else block
        scratch = torch.empty((rows, ct), dtype=torch.int32, device="cuda")
        both("  on-chip kernel", lambda: K._onchip_kernel[(rows,)](
            w, w.stride(0), length, K._p_bits(p), theta, tkey, tkey, 0, scratch, BLOCK=block, CHUNK=1,
            WRITE_CMAX=False, P_ONE=False, PRECOMP=precomp, MAXIT=K.MAX_IT, CT=ct, num_warps=warps))
    tiny_mask = torch.zeros(1, 16, dtype=torch.int32, device="cuda")
    tiny_out = torch.empty(1, 16, dtype=torch.uint8, device="cuda")
    both("launch overhead (tiny triton kernel)", lambda: K._chunk_union_kernel[(1, 1)](
        tiny_mask, tkey, tiny_out, 1, 1, 16, 1, BLOCK_C=16, num_warps=1))
    return pd.DataFrame(recs)


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def targets(sel: pd.DataFrame) -> list[str]:
    """Whether the issue's two selection targets were met, from the table."""
    lines = []
    for rows, length, what, col, goal, better in [
        (32, 8192, ">= 20x faster than the sort baseline", "speedup_vs_sort", 20.0, "ge"),
        (256, 131072, "within 4x of the bandwidth floor", "x_floor", 4.0, "le"),
    ]:
        r = sel[(sel["rows"] == rows) & (sel["L"] == length)] if len(sel) else sel
        if not len(r) or col not in r or pd.isna(r[col].iloc[0]):
            lines.append(f"target {rows}x{length} {what}: not measured")
            continue
        val = float(r[col].iloc[0])
        met = val >= goal if better == "ge" else val <= goal
        lines.append(f"target {rows}x{length} {what}: {val:.2f} -> {'MET' if met else 'NOT MET'}")
    return lines
