"""Kernel benchmarks: nucleus selection and sparse verification attention (GPU).

Everything is timed in one process with ``triton.testing.do_bench`` (median of repeated runs after
warm-up; it flushes the L2 cache before every run), and every ratio is taken between numbers of the
same run. Floors are "bytes that must cross device memory once / measured bandwidth", the
bandwidth being a large device-to-device copy measured in the same run (bytes read + written).

    python -m specattn.bench.kernel_bench                  # both tables, default sizes
    python -m specattn.bench.kernel_bench --part selection --rows 32 256 --lengths 8192 131072
    python -m specattn.bench.kernel_bench --smoke          # tiny sizes, checks the wiring

Selection: rows x L of ``softmax(3 * randn)`` float32 rows (p = 0.95): our kernel (threshold; token
mask; fused chunk mask with gamma = 4 union) vs a torch.sort-based top-p (sort, cumsum, threshold;
and its mask) vs ``torch.topk`` at the mean nucleus size.

Attention: one verification step (T = gamma + 1 = 5 query rows over a cache of L keys, the last 5
being the step's own) per verifier layer, bf16, chunk 16: dense FlashInfer (``single_prefill``,
causal; and our block-sparse path at 100%), block-sparse at 50/25/10/5% kept chunks (plan outside
the timing), ``plan`` alone (host wall clock: it synchronises), and the whole pipeline (draft
weights -> nucleus chunk mask -> BSR -> plan -> sparse attention + tail). The draft weights (128 rows
= 32 draft heads x gamma 4, over the prefix) are synthetic, built so that the nucleus at p = 0.95
keeps the wanted chunks; the table reports the density the kernel actually selected.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ...errors import SpecAttnError

MODELS = {  # verifier attention shapes: (query heads, kv heads, head dim)
    "llama-3.1-8b": (32, 8, 128),
    "llama-2-7b": (32, 32, 128),
}


@dataclass
class BenchConfig:
    rows: tuple[int, ...] = (32, 256, 4096)
    lengths: tuple[int, ...] = (2048, 8192, 32768, 131072)
    p: float = 0.95
    sel_dtype: str = "float32"
    attn_lengths: tuple[int, ...] = (2048, 8192, 32768, 131072)
    densities: tuple[float, ...] = (0.5, 0.25, 0.1, 0.05)
    models: tuple[str, ...] = ("llama-3.1-8b", "llama-2-7b")
    chunk_size: int = 16
    gamma: int = 4
    draft_rows: int = 128
    max_sel_bytes: int = 4 << 30  # skip selection sizes whose input is larger (none by default)
    warmup_ms: int = 25
    rep_ms: int = 100


def _require_gpu():
    if not torch.cuda.is_available():
        raise SpecAttnError("kernel_bench needs a CUDA GPU and none is available: run it on the GPU machine")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise SpecAttnError("kernel_bench needs triton (it ships with CUDA builds of torch)") from None


def _bench(fn, cfg: BenchConfig) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms, return_mode="median"))


def measure_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device memory bandwidth in bytes/s from a D2D copy (bytes read + bytes written)."""
    from triton.testing import do_bench

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3)


def hardware() -> dict:
    p = torch.cuda.get_device_properties(0)
    import triton

    return {"gpu": p.name, "sms": p.multi_processor_count, "mem_gib": round(p.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__}


# ------------------------------------------------------------------------------------- selection
def _bench_backend(K, backend: str, fn, cfg: BenchConfig) -> float:
    """Time ``fn`` with the nucleus kernels forced to ``backend``; NaN where it cannot run."""
    from ..kernels import radix

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


def bench_selection(cfg: BenchConfig, bandwidth: float, log=print) -> pd.DataFrame:
    from ..kernels import nucleus as K

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

    from ..kernels import nucleus as K

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


# ------------------------------------------------------------------------------------- attention
def _pick_chunks(n_chunks: int, density: float, gen: torch.Generator) -> torch.Tensor:
    keep = max(1, round(density * n_chunks))
    mask = torch.zeros(n_chunks, dtype=torch.bool)
    mask[torch.randperm(n_chunks, generator=gen)[:keep]] = True
    return mask


def draft_weights_for(mask: torch.Tensor, prefix: int, rows: int, chunk: int, p: float,
                      gen: torch.Generator) -> torch.Tensor:
    """Synthetic draft attention rows (rows, prefix) float32 whose nucleus at p keeps ``mask``'s chunks.

    Keys of kept chunks get weights in [1, 1.5), the others tiny weights whose total is a quarter of
    (1-p)/p of the kept mass, so the nucleus drops all of those and the smallest few percent of the
    kept keys, never a whole kept chunk in practice. Rows are then normalised.
    """
    hot = mask.repeat_interleave(chunk)[:prefix].cuda()
    n_hot = int(hot.sum())
    n_cold = prefix - n_hot
    w = 1 + 0.5 * torch.rand((rows, prefix), generator=gen, device="cuda")
    if n_cold:
        cold_total = 0.25 * (1 - p) / p * 1.25 * n_hot
        w = torch.where(hot, w, torch.rand((rows, prefix), generator=gen, device="cuda") * (2 * cold_total / n_cold))
    return w / w.sum(-1, keepdim=True)


def bench_attention(cfg: BenchConfig, bandwidth: float, log=print) -> pd.DataFrame:
    import flashinfer

    from ..attention import AttentionShape, chunk_mask_to_bsr, n_prefix_chunks
    from ..attention.flashinfer_backend import FlashInferVerify
    from ..kernels import nucleus as K

    t = cfg.gamma + 1
    c = cfg.chunk_size
    dtype = torch.bfloat16
    recs = []
    gen = torch.Generator().manual_seed(0)
    ggen = torch.Generator(device="cuda").manual_seed(0)
    for model in cfg.models:
        hq, hkv, d = MODELS[model]
        attn = FlashInferVerify(AttentionShape(hq, hkv, d, c, dtype))
        for n in cfg.attn_lengths:
            prefix = n - t
            nch = n_prefix_chunks(n, t, c)
            n_full = prefix // c
            q = torch.randn((t, hq, d), device="cuda", dtype=dtype)
            k = torch.randn((n, hkv, d), device="cuda", dtype=dtype)
            v = torch.randn((n, hkv, d), device="cuda", dtype=dtype)
            kv_bytes = 2 * n * hkv * d * 2
            io_bytes = 2 * t * hq * d * 2
            dense_fi = _bench(lambda: flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True), cfg)
            full = torch.ones(nch, dtype=torch.bool, device="cuda")
            attn.plan(full, n, t)
            dense_bsr = _bench(lambda: attn.run(q, k, v), cfg)
            dense = min(dense_fi, dense_bsr)
            base = {"model": model, "L": n, "dense_fi_ms": dense_fi, "dense_bsr_ms": dense_bsr,
                    "dense_floor_ms": (kv_bytes + io_bytes) / bandwidth * 1e3}
            log(f"attention {model} L={n}: dense flashinfer {dense_fi:.4f} ms, dense via bsr {dense_bsr:.4f} ms")
            for dens in cfg.densities:
                mask = _pick_chunks(nch, dens, gen).cuda()
                rec = dict(base, density=dens)
                rec["kept_frac"] = mask.float().mean().item()
                attn.plan(mask, n, t)
                rec["sparse_run_ms"] = _bench(lambda: attn.run(q, k, v), cfg)
                plans = []
                bsr = chunk_mask_to_bsr(mask[:n_full])
                for _ in range(20):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    attn.plan(mask, n, t, bsr=bsr)
                    torch.cuda.synchronize()
                    plans.append((time.perf_counter() - t0) * 1e3)
                rec["plan_ms_host"] = float(pd.Series(plans[5:]).median())
                draft = draft_weights_for(mask.cpu(), prefix, cfg.draft_rows, c, cfg.p, ggen)
                sel = K.nucleus_chunk_mask(draft, cfg.p, c, cfg.draft_rows)[0]
                rec["selected_frac"] = sel.float().mean().item()
                rec["selection_ms"] = _bench(lambda: K.nucleus_chunk_mask(draft, cfg.p, c, cfg.draft_rows), cfg)
                rec["csr_ms"] = _bench(lambda: chunk_mask_to_bsr(sel[:n_full]), cfg)

                def pipeline():
                    m = K.nucleus_chunk_mask(draft, cfg.p, c, cfg.draft_rows)[0]
                    attn.plan(m, n, t, bsr=chunk_mask_to_bsr(m[:n_full]))
                    return attn.run(q, k, v)

                rec["pipeline_ms"] = _bench(pipeline, cfg)
                sel_frac = rec["selected_frac"]
                floor_sparse = (sel_frac * kv_bytes + io_bytes) / bandwidth * 1e3
                rec["sparse_floor_ms"] = floor_sparse
                rec["pipeline_floor_ms"] = floor_sparse + draft.numel() * 4 / bandwidth * 1e3
                rec["sparse_speedup"] = dense / rec["sparse_run_ms"]
                rec["pipeline_speedup"] = dense / rec["pipeline_ms"]
                rec["pipeline_share_of_floor"] = rec["pipeline_floor_ms"] / rec["pipeline_ms"]
                log(f"  density {dens:.2f} (selected {sel_frac:.3f}): run {rec['sparse_run_ms']:.4f} ms, plan "
                    f"{rec['plan_ms_host']:.4f} ms, selection {rec['selection_ms']:.4f} ms, pipeline "
                    f"{rec['pipeline_ms']:.4f} ms -> {rec['pipeline_speedup']:.2f}x dense")
                recs.append(rec)
                del draft
            del q, k, v
            torch.cuda.empty_cache()
    return pd.DataFrame(recs)


def breakeven(attn: pd.DataFrame) -> pd.DataFrame:
    """Per model and density: the smallest L at which the whole pipeline beats dense (per layer)."""
    out = []
    for (model, dens), g in attn.groupby(["model", "density"]):
        wins = g[g["pipeline_speedup"] > 1].sort_values("L")
        out.append({"model": model, "density": dens,
                    "first_L_pipeline_beats_dense": int(wins["L"].iloc[0]) if len(wins) else None,
                    "first_L_sparse_run_beats_dense": int(g[g["sparse_speedup"] > 1]["L"].min())
                    if (g["sparse_speedup"] > 1).any() else None})
    frame = pd.DataFrame(out)
    for col in ("first_L_pipeline_beats_dense", "first_L_sparse_run_beats_dense"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame


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


def run_all(cfg: BenchConfig, parts=("selection", "attention"), log=print) -> dict:
    """Run the benchmarks; returns {'hardware', 'bandwidth', 'selection', 'attention', 'breakeven', 'targets'}."""
    _require_gpu()
    torch.backends.cuda.matmul.allow_tf32 = False
    bw = measure_bandwidth()
    log(f"device-to-device copy bandwidth: {bw / 1e12:.3f} TB/s (read + write)")
    res = {"hardware": hardware(), "bandwidth_TBps": bw / 1e12}
    if "selection" in parts:
        res["selection"] = bench_selection(cfg, bw, log)
        res["targets"] = targets(res["selection"])
    if "attention" in parts:
        res["attention"] = bench_attention(cfg, bw, log)
        res["breakeven"] = breakeven(res["attention"])
    return res


def kernel_bench(cfg: BenchConfig | None = None, parts=("selection", "attention")) -> pd.DataFrame:
    """All rows of all parts as one DataFrame (column ``part``); see :func:`run_all` for the pieces."""
    res = run_all(cfg or BenchConfig(), parts)
    frames = [res[p].assign(part=p) for p in parts if p in res]
    return pd.concat(frames, ignore_index=True)


SMOKE = BenchConfig(rows=(32,), lengths=(2048, 20000), attn_lengths=(2048,), densities=(0.25,),
                    models=("llama-3.1-8b",), warmup_ms=5, rep_ms=10)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m specattn.bench.kernel_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["selection", "attention", "all"], default="all")
    ap.add_argument("--rows", type=int, nargs="+")
    ap.add_argument("--lengths", type=int, nargs="+", help="selection L")
    ap.add_argument("--attn-lengths", type=int, nargs="+")
    ap.add_argument("--densities", type=float, nargs="+")
    ap.add_argument("--models", nargs="+", choices=list(MODELS))
    ap.add_argument("--p", type=float)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="selection input dtype")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes")
    ap.add_argument("--profile", type=int, nargs=2, action="append", metavar=("ROWS", "L"),
                    help="per-launch timings of the selection at ROWS x L (repeatable); no tables")
    ap.add_argument("--out", help="folder for selection.csv, attention.csv, breakeven.csv, summary.md")
    a = ap.parse_args(argv)
    cfg = SMOKE if a.smoke else BenchConfig()
    for field, val in [("rows", a.rows), ("lengths", a.lengths), ("attn_lengths", a.attn_lengths),
                       ("densities", a.densities), ("models", a.models)]:
        if val:
            setattr(cfg, field, tuple(val))
    if a.p:
        cfg.p = a.p
    if a.dtype:
        cfg.sel_dtype = a.dtype
    if a.profile:
        _require_gpu()
        frames = [profile_selection(r, n, cfg.p, getattr(torch, cfg.sel_dtype)) for r, n in a.profile]
        print(_fmt(pd.concat(frames, ignore_index=True), ["rows", "L", "stage", "eager_ms", "graph_ms"]))
        return
    parts = ("selection", "attention") if a.part == "all" else (a.part,)
    res = run_all(cfg, parts)
    text = render(res)
    print(text)
    if a.out:
        import os

        os.makedirs(a.out, exist_ok=True)
        for name in ("selection", "attention", "breakeven"):
            if name in res:
                res[name].to_csv(os.path.join(a.out, f"{name}.csv"), index=False)
        with open(os.path.join(a.out, "summary.md"), "w") as f:
            f.write(text + "\n")


def _fmt(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df]
    try:
        return df[cols].to_markdown(index=False, floatfmt=".4g")
    except ImportError:  # tabulate missing
        return df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")


def render(res: dict) -> str:
    parts = [f"hardware: {res['hardware']}", f"D2D copy bandwidth: {res['bandwidth_TBps']:.3f} TB/s (read+write)"]
    if "selection" in res:
        parts.append("\n## Selection (p=0.95, softmax(3*randn) rows)\n")
        parts.append(_fmt(res["selection"], ["rows", "L", "dtype", "nucleus_frac", "ours_threshold_ms",
                                             "triton_threshold_ms", "cuda_threshold_ms", "ours_mask_ms",
                                             "ours_chunkmask_ms", "sort_threshold_ms", "sort_mask_ms", "topk_ms",
                                             "floor_ms", "speedup_vs_sort", "speedup_vs_topk", "x_floor",
                                             "chunkmask_x_floor", "skipped"]))
        parts += ["", *res["targets"]]
    if "attention" in res:
        parts.append("\n## Verification attention, one step, one layer (T=5, bf16, chunk 16)\n")
        parts.append(_fmt(res["attention"], ["model", "L", "density", "selected_frac", "dense_fi_ms", "dense_bsr_ms",
                                             "sparse_run_ms", "plan_ms_host", "selection_ms", "csr_ms", "pipeline_ms",
                                             "sparse_speedup", "pipeline_speedup", "pipeline_share_of_floor",
                                             "dense_floor_ms", "sparse_floor_ms"]))
        parts.append("\n## Break-even (smallest L where the pipeline beats dense, per layer)\n")
        parts.append(_fmt(res["breakeven"], list(res["breakeven"].columns)))
    return "\n".join(parts)


if __name__ == "__main__":
    main()
