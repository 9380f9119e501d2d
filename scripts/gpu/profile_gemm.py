"""The real pair's projections at decoding's row counts: cuBLAS (``F.linear``, what the fused layers call) against
:mod:`specattn.gpu.kernels.skinny_gemm` at each of its configs, cold (each call of a captured graph reads another copy
of the weight, the copies together past the L2, as a decoding step reads each layer's weights once), as GPU us a call
(median of 20 replays) and as a share of the read floor (weight bytes / measured read bandwidth); beside them the
per-launch time of a graph of tiny launches (an elementwise add; the draft's q/k/v projection with its weight hot in
L2), and the draft's q/k/v projection with its rotary + cache write and its gate/up projection with the SiLU-mul,
each in one launch (:mod:`specattn.gpu.kernels.projection_epilogues`), against the fused layer's two; last the output
and down projections onto the residual as the fused layer calls them (cuBLAS ``addmm_`` in place: a split-K GEMM and
its reduction for the down projection) against the skinny GEMM with its ``K`` split in one launch. Random weights.

``python3 scripts/gpu/profile_gemm.py [projections] [epilogues] [residual]`` on the GPU machine (all three
without arguments); prints tables (the error against a float32 product in the
last column)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from specattn.bench.attention import n_sets  # noqa: E402
from specattn.bench.timing import graph_call_us, measure_read_bandwidth  # noqa: E402
from specattn.gpu.kernels.fused_llama import rope_into_cache, silu_mul  # noqa: E402
from specattn.gpu.kernels.projection_epilogues import CONFIGS as EPILOGUE_CONFIGS  # noqa: E402
from specattn.gpu.kernels.projection_epilogues import (gate_up_silu, gate_up_workspace,  # noqa: E402
                                                       qkv_rope_into_cache, qkv_rope_workspace)
from specattn.gpu.kernels.skinny_gemm import CONFIGS, skinny_linear, splitk_workspace  # noqa: E402

#: (projection, rows, N, K): Qwen2.5-Coder-0.5B's at batch 16 (one token; forward 0: two) and 1.5B's (five tokens)
SHAPES = (("draft qkv", 16, 1152, 896), ("draft o", 16, 896, 896), ("draft gate_up", 16, 9728, 896),
          ("draft down", 16, 896, 4864), ("draft gate_up fwd0", 32, 9728, 896),
          ("verifier qkv", 80, 2048, 1536), ("verifier o", 80, 1536, 1536), ("verifier gate_up", 80, 17920, 1536),
          ("verifier down", 80, 1536, 8960), ("draft qkv b1", 1, 1152, 896), ("draft down b1", 1, 896, 4864))
PAST_L2 = 160 << 20  # bytes of weight copies a graph rotates over


def weight_copies(n: int, k: int) -> list[torch.Tensor]:
    """Random ``(n, k)`` bfloat16 weights (scaled as a layer's), enough copies to span :data:`PAST_L2`."""
    return [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
            for _ in range(n_sets(n * k * 2, PAST_L2, most=128))]


def best_of(configs, calls_for) -> tuple[tuple, float]:
    """The config whose calls (``calls_for(config)``) take the fewest us, and those us; a config the kernel cannot
    launch at these rows (shared memory: BLOCK_K x stages too large) is skipped."""
    timed = []
    for config in configs:
        try:
            timed.append((config, graph_call_us(calls_for(config))))
        except triton.runtime.errors.OutOfResources:
            continue
    return min(timed, key=lambda pair: pair[1])


def main(parts: list[str]) -> None:
    """The tables of ``parts`` (``projections``, ``epilogues``, ``residual``; all if empty), in that order."""
    unknown = set(parts) - {"projections", "epilogues", "residual"}
    if unknown:
        raise SystemExit(f"profile_gemm: parts {sorted(unknown)}: choose from projections, epilogues, residual")
    bandwidth = measure_read_bandwidth()
    print(f"read bandwidth {bandwidth / 1e12:.3f} TB/s; {torch.cuda.get_device_name()}")
    if not parts or "projections" in parts:
        projections(bandwidth)
    if not parts or "epilogues" in parts:
        epilogues()
    if not parts or "residual" in parts:
        onto_residual(bandwidth)


def projections(bandwidth: float) -> None:
    """Each projection of :data:`SHAPES`: cuBLAS against the skinny GEMM's best config, and the launch costs."""
    rows = []
    for label, m, n, k in SHAPES:
        nbytes = n * k * 2
        ws = weight_copies(n, k)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        ref = x.float() @ ws[0].float().T
        floor = nbytes / bandwidth * 1e6
        row = {"projection": label, "M": m, "N": n, "K": k, "MB": nbytes / 1e6, "floor_us": floor,
               "cublas_us": graph_call_us([lambda w=w: F.linear(x, w) for w in ws])}
        best = best_of(CONFIGS, lambda config, ws=ws: [lambda w=w: skinny_linear(x, w, out=out, config=config)
                                                       for w in ws])
        err = (skinny_linear(x, ws[0], config=best[0]).float() - ref).abs().max().item()
        row.update(skinny_us=best[1], config="x".join(map(str, best[0])), max_err=err)
        rows.append(row)
        del ws
        torch.cuda.empty_cache()
    tiny = torch.zeros(16, 896, device="cuda", dtype=torch.bfloat16)
    w_hot = torch.randn(1152, 896, device="cuda", dtype=torch.bfloat16)
    x_hot = torch.randn(16, 896, device="cuda", dtype=torch.bfloat16)
    add_us = graph_call_us([lambda: tiny.add_(1)] * 200)
    hot_us = graph_call_us([lambda: F.linear(x_hot, w_hot)] * 200)
    print(f"a graph of 200 launches, us a launch: elementwise add on 16 x 896 {add_us:.2f}; "
          f"F.linear 16 x 896 -> 1152 with its weight hot in L2 {hot_us:.2f}")
    print(f"{'projection':20} {'M':>3} {'N':>6} {'K':>5} {'MB':>6} {'floor':>7} {'cuBLAS us (floor)':>18} "
          f"{'skinny us (floor)':>18} {'config':>14} {'max err':>8}")
    for r in rows:
        print(f"{r['projection']:20} {r['M']:>3} {r['N']:>6} {r['K']:>5} {r['MB']:>6.2f} {r['floor_us']:>7.2f} "
              f"{r['cublas_us']:>9.2f} ({r['floor_us'] / r['cublas_us']:>5.1%}) {r['skinny_us']:>9.2f} "
              f"({r['floor_us'] / r['skinny_us']:>5.1%}) {r['config']:>14} {r['max_err']:>8.4f}")


EPILOGUE_SPLITS = (1, 2, 4, 8)  # the K ranges the one-launch epilogues try


def epilogues() -> None:
    """The draft's projections with their next kernel (Qwen2.5-Coder-0.5B: 14 + 2 + 2 heads of 64, hidden 896,
    intermediate 4,864, the norms folded, q/k/v biases; batch 16, one and two tokens a sequence), cold: cuBLAS then the
    fused layer's kernel (two launches) against :mod:`specattn.gpu.kernels.projection_epilogues` (one), best of its
    configs and ``K`` splits; at that choice the one launch without the folded norm (what the norm's row sums cost);
    the largest difference of their outputs."""
    hq, hkv, d, k = 14, 2, 64, 896
    n = (hq + 2 * hkv) * d
    ws = weight_copies(n, k)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    keys = torch.zeros(16, hkv, 64, d, device="cuda", dtype=torch.bfloat16)
    values = torch.zeros_like(keys)
    lengths = torch.full((16,), 8, device="cuda", dtype=torch.int32)
    choices = [(c, s) for c in EPILOGUE_CONFIGS for s in EPILOGUE_SPLITS]
    header = f"{'two launches us':>16} {'one launch us':>14} {'config':>10} {'split':>5} {'no norm us':>10}"
    print(f"\n{'draft q/k/v + rotary/cache, batch 16':40} {header} {'max |q diff|':>12}")
    for t in (1, 2):
        x = torch.randn(16, t, k, device="cuda", dtype=torch.bfloat16)
        angle = torch.rand(16, t, d // 2, device="cuda") * 6.3
        cos = torch.cat([angle.cos()] * 2, -1).to(torch.bfloat16)
        sin = torch.cat([angle.sin()] * 2, -1).to(torch.bfloat16)
        work = {(c, s): qkv_rope_workspace(16 * t, hq, hkv, d, s, c, "cuda") for c, s in choices if s > 1}

        def two(w):
            return rope_into_cache(F.linear(x, w), cos, sin, lengths, hq, hkv, keys, values, x, 1e-6, bias)

        def one(w, choice, eps=1e-6):
            return qkv_rope_into_cache(x, w, cos, sin, lengths, hq, hkv, keys, values, eps, bias, config=choice[0],
                                       split_k=choice[1], workspace=work.get(choice))

        two_us = graph_call_us([lambda w=w: two(w) for w in ws])
        best = best_of(choices, lambda choice: [lambda w=w: one(w, choice) for w in ws])
        no_norm = graph_call_us([lambda w=w: one(w, best[0], None) for w in ws])
        diff = (one(ws[0], best[0]).float() - two(ws[0]).float()).abs().max().item()
        print(f"{f'T = {t}':40} {two_us:>16.2f} {best[1]:>14.2f} {'x'.join(map(str, best[0][0])):>10} "
              f"{best[0][1]:>5} {no_norm:>10.2f} {diff:>12.4f}")
    inter = 4864
    wg = weight_copies(2 * inter, k)
    print(f"{'draft gate/up + SiLU-mul, batch 16':40} {header} {'max |diff|':>12}")
    for t in (1, 2):
        x = torch.randn(16, t, k, device="cuda", dtype=torch.bfloat16)
        work = {(c, s): gate_up_workspace(16 * t, inter, s, c, "cuda") for c, s in choices if s > 1}

        def one(w, choice, eps=1e-6):
            return gate_up_silu(x, w, eps, config=choice[0], split_k=choice[1], workspace=work.get(choice))

        two_us = graph_call_us([lambda w=w: silu_mul(F.linear(x, w), x, 1e-6) for w in wg])
        best = best_of(choices, lambda choice: [lambda w=w: one(w, choice) for w in wg])
        no_norm = graph_call_us([lambda w=w: one(w, best[0], None) for w in wg])
        diff = (one(wg[0], best[0]).float() - silu_mul(F.linear(x, wg[0]), x, 1e-6).float()).abs().max().item()
        print(f"{f'T = {t}':40} {two_us:>16.2f} {best[1]:>14.2f} {'x'.join(map(str, best[0][0])):>10} "
              f"{best[0][1]:>5} {no_norm:>10.2f} {diff:>12.4f}")


def onto_residual(bandwidth: float) -> None:
    """The projections the fused layer adds onto the residual (``project_onto``: cuBLAS ``addmm_`` in place), cold,
    against :func:`skinny_linear` in place with ``K`` in 1-8 ranges (one launch), best of configs and splits; the
    largest difference of their outputs."""
    print(f"\n{'onto the residual, in place':26} {'M':>3} {'floor us':>8} {'cuBLAS addmm_ us':>16} {'skinny us':>9} "
          f"{'config':>10} {'split':>5} {'max |diff|':>10}")
    for label, m, n, k in (s for s in SHAPES if s[0].split()[1] in ("o", "down")):
        ws = weight_copies(n, k)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        res = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        cublas = graph_call_us([lambda w=w: res.addmm_(x, w.t()) for w in ws])
        scratch = {(c, s): splitk_workspace(m, n, s, c[0], "cuda") for c in CONFIGS for s in (2, 4, 8)}

        def calls(choice, ws=ws, x=x, res=res):
            config, split = choice
            work = scratch.get(choice)
            return [lambda w=w: skinny_linear(x, w, residual=res, out=res, config=config, split_k=split,
                                              workspace=work) for w in ws]

        best = best_of([(c, s) for c in CONFIGS for s in (1, 2, 4, 8)], calls)
        base = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        ours = skinny_linear(x, ws[0], residual=base, config=best[0][0], split_k=best[0][1],
                             workspace=scratch.get(best[0]))
        diff = (ours.float() - base.clone().addmm_(x, ws[0].t()).float()).abs().max().item()
        print(f"{label:26} {m:>3} {n * k * 2 / bandwidth * 1e6:>8.2f} {cublas:>16.2f} {best[1]:>9.2f} "
              f"{'x'.join(map(str, best[0][0])):>10} {best[0][1]:>5} {diff:>10.4f}")
        del ws
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
