"""One verification step per verifier layer (docs/benchmarks.md, tables 2-6) and the split-config sweep.

A case is a model's layer shape, a batch B of sequences whose caches hold L keys each (the last T =
gamma + 1 the step's own), bf16, chunk 16. Per case:

- dense: our split-KV kernel with every prefix chunk listed implicitly (``dense_verify``), eager and
  graph-replayed, and FlashInfer's dense variants (:mod:`.flashinfer_dense`, graph-replayed); "dense"
  in every ratio is the fastest graph-replayed one;
- per kept fraction: synthetic draft rows (``head_agg`` mean: one list per sequence from gamma rows;
  kv_group: one per KV head) built so that the nucleus at p keeps the wanted random chunks; then the
  selection alone (nucleus + list; also per layer when ``layers`` layers are selected in one launch),
  the sparse attention alone, and the whole step (selection + list + attention), eager and
  graph-replayed.

Every time is also a fraction of its own floor: the bytes it must read (selected or all KV, the
tail, q, out, and for the step the draft rows) over the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import traceback
from dataclasses import fields, replace

import pandas as pd
import torch

from ..gpu.attention import AttentionShape
from ..gpu.attention.sparse import (
    ChunkLists,
    dense_verify,
    n_chunks_capacity,
    sparse_verify,
)
from ..gpu.kernels.split_config import SplitConfig
from ..gpu.step import SpecAttnStep
from .timing import graph_ms, median_ms, reps_for

MODELS = {  # attention shapes: (query heads, kv heads, head dim); drafts (head dim 64) for their sparse reads
    "llama-3.1-8b": (32, 8, 128),
    "llama-2-7b": (32, 32, 128),
    "qwen2.5-coder-1.5b": (12, 2, 128),
    "llama-3.2-1b": (32, 8, 64),
    "qwen2.5-coder-0.5b": (14, 2, 64),
}
DTYPE = torch.bfloat16


def random_masks(batch: int, heads: int, n_chunks: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """``(B, H, NC)`` bool: ``round(density * NC)`` random chunks (at least one) per list."""
    keep = max(1, round(density * n_chunks))
    mask = torch.zeros(batch * heads, n_chunks, dtype=torch.bool)
    for row in mask:
        row[torch.randperm(n_chunks, generator=gen)[:keep]] = True
    return mask.view(batch, heads, n_chunks)


def draft_rows_for(masks: torch.Tensor, prefix: int, rows: int, chunk: int, width: int, p: float,
                   gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Synthetic draft attention ``(B, H, rows, width)`` on ``gen``'s device whose nucleus at ``p`` keeps
    the chunks of ``masks (B, H, NC)``.

    Keys of kept chunks get weights in [1, 1.5), the others tiny weights whose total is a quarter of
    (1-p)/p of the kept mass, so each row's nucleus drops all of those and a few percent of the kept
    keys, never a whole kept chunk in practice; zeros past the prefix; rows normalised.
    """
    b, h, _ = masks.shape
    dev = gen.device
    hot = masks.repeat_interleave(chunk, dim=-1)[..., :prefix].to(dev)[:, :, None, :]  # (B, H, 1, prefix)
    w = 1 + 0.5 * torch.rand((b, h, rows, prefix), generator=gen, device=dev)
    n_hot = hot.sum(-1, keepdim=True).float()
    cold_total = 0.25 * (1 - p) / p * 1.25 * n_hot
    cold = torch.rand((b, h, rows, prefix), generator=gen, device=dev) * 2 * cold_total / (prefix - n_hot).clamp(min=1)
    w = torch.where(hot, w, cold)
    out = torch.zeros((b, h, rows, width), device=dev)
    out[..., :prefix] = w / w.sum(-1, keepdim=True)
    return out.to(dtype)


class Inputs:
    """One input set of a case: q, the KV cache, lengths (all L)."""

    def __init__(self, hq: int, hkv: int, d: int, batch: int, n_keys: int, t: int, gen: torch.Generator):
        self.q = torch.randn((batch, hq, t, d), generator=gen, device="cuda", dtype=DTYPE)
        self.k = torch.randn((batch, hkv, n_keys, d), generator=gen, device="cuda", dtype=DTYPE)
        self.v = torch.randn((batch, hkv, n_keys, d), generator=gen, device="cuda", dtype=DTYPE)
        self.lengths = torch.full((batch,), n_keys, dtype=torch.int32, device="cuda")
        self.out = torch.empty((batch, t, hq, d), device="cuda", dtype=DTYPE)


def n_sets(bytes_per_set: int, rotate_bytes: int, most: int = 16) -> int:
    """Input sets to rotate through so that together they span ``rotate_bytes``."""
    return max(1, min(most, math.ceil(rotate_bytes / max(bytes_per_set, 1))))


def timed(calls, cfg, graph: bool) -> float:
    """Median per-call ms (eager or graph-replayed), with the repetitions fitted to ``cfg.budget_ms``."""
    first = median_ms(calls, reps=3, warmup=1)
    reps = reps_for(first * len(calls), cfg.budget_ms, least=cfg.min_reps, most=cfg.max_reps)
    return graph_ms(calls, reps) if graph else median_ms(calls, reps)


def flashinfer_sparse(cfg, sets, steps, batch, n_keys, nc, kv_bytes, io_bytes, bandwidth, read_bandwidth, split, ws,
                      fi_ws, log) -> dict:
    """FlashInfer's page-table decode kernel on each set's selection (:class:`FlashInferPageTable`) beside
    ours on the same selection: graph-replayed GPU times, its host ``plan()`` apart, both against the read
    floor (bytes / read bandwidth) and the copy floor, and its output against ours."""
    from .flashinfer_dense import FlashInferPageTable, paged_cache

    t, c = cfg.gamma + 1, cfg.chunk_size
    try:
        caches = [(paged_cache(s.k, c), paged_cache(s.v, c)) for s in sets]
        runs = [FlashInferPageTable(s.q, kc, vc, n_keys, -(-n_keys // c), c, st.lists, fi_ws)
                for s, (kc, vc), st in zip(sets, caches, steps)]
        same = [r.same_selection(nc) for r in runs]
        ours = [lambda s=s, ls=ls: sparse_verify(s.q, s.k, s.v, s.lengths, ls.ids, ls.n, c, out=s.out, workspace=ws,
                                                 config=split) for s, ls in zip(sets, same)]
        ours[0]()
        runs[0]()
        out = {"fi_sparse_err": rel_err(runs[0].as_hf(batch, t), sets[0].out),
               "fi_sparse_ms": timed(runs, cfg, graph=True), "ours_same_ms": timed(ours, cfg, graph=True),
               "fi_plan_ms": statistics.median(r.plan_ms for r in runs)}
        read = sum(len(chosen) for r in runs for chosen in r.selected) / (len(runs) * batch * nc)
        same_bytes = (read * (n_keys - t) + t) / n_keys * kv_bytes + io_bytes  # selected chunks + tail + q, out
        for name in ("fi_sparse", "ours_same"):
            out[f"{name}_read_floor_frac"] = same_bytes / read_bandwidth * 1e3 / out[f"{name}_ms"]
            out[f"{name}_copy_floor_frac"] = same_bytes / bandwidth * 1e3 / out[f"{name}_ms"]
        out["ours_vs_fi_sparse"] = out["fi_sparse_ms"] / out["ours_same_ms"]
        log(f"    flashinfer page table {out['fi_sparse_ms']:.4f} ms (plan {out['fi_plan_ms']:.3f} ms host), ours on "
            f"the same chunks {out['ours_same_ms']:.4f} ms; read floor {out['fi_sparse_read_floor_frac']:.0%} vs "
            f"{out['ours_same_read_floor_frac']:.0%}; err {out['fi_sparse_err']:.1e}")
        return out
    except Exception as e:  # noqa: BLE001  (reported, not fatal)
        log(f"    flashinfer page table failed: {type(e).__name__}: {str(e)[:300]}")
        return {"fi_sparse_ms": float("nan")}


def bench_case(cfg, model: str, batch: int, n_keys: int, bandwidth: float, split: SplitConfig, log,
               read_bandwidth: float | None = None) -> list[dict]:
    """All rows (one per kept fraction) of one (model, batch, L) case."""
    from .flashinfer_dense import VARIANTS, FlashInferDense, paged_cache

    hq, hkv, d = MODELS[model]
    t, c = cfg.gamma + 1, cfg.chunk_size
    prefix = n_keys - t
    nc = n_chunks_capacity(n_keys, t, c)
    sel_heads = hkv if cfg.head_agg == "kv_group" else 1
    kv_bytes = 2 * batch * n_keys * hkv * d * 2
    io_bytes = 2 * batch * t * hq * d * 2
    sets_n = n_sets(kv_bytes, cfg.rotate_bytes)
    gen = torch.Generator(device="cuda").manual_seed(n_keys + batch)
    sets = [Inputs(hq, hkv, d, batch, n_keys, t, gen) for _ in range(sets_n)]
    from ..gpu.kernels.sparse_attn import (
        make_workspace,  # Triton: imported where it launches
    )

    ws = make_workspace(batch, hkv, hq // hkv, t, d, split, "cuda")
    dense_calls = [lambda s=s: dense_verify(s.q, s.k, s.v, s.lengths, c, out=s.out, workspace=ws, config=split)
                   for s in sets]
    read_bandwidth = read_bandwidth or bandwidth
    base = {"model": model, "batch": batch, "L": n_keys, "sets": sets_n,
            "dense_floor_ms": (kv_bytes + io_bytes) / bandwidth * 1e3,
            "dense_read_floor_ms": (kv_bytes + io_bytes) / read_bandwidth * 1e3}
    base["dense_ours_ms"] = timed(dense_calls, cfg, graph=True)
    base["dense_ours_eager_ms"] = timed(dense_calls, cfg, graph=False)
    dense_calls[0]()
    ours = sets[0].out.clone()
    fi_ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    if cfg.flashinfer:
        caches = [(paged_cache(s.k, cfg.page_size), paged_cache(s.v, cfg.page_size)) for s in sets]
        pages = -(-n_keys // cfg.page_size)
        for variant in VARIANTS:
            try:
                runs = [FlashInferDense(variant, s.q, kc, vc, n_keys, pages, cfg.page_size, fi_ws)
                        for s, (kc, vc) in zip(sets, caches)]
                runs[0]()
                base[f"fi_{variant}_err"] = rel_err(runs[0].as_hf(batch, t), ours)
                base[f"fi_{variant}_ms"] = timed(runs, cfg, graph=True)
            except Exception as e:  # noqa: BLE001  (a variant FlashInfer cannot plan or build is reported, not fatal)
                log(f"  flashinfer {variant} failed: {type(e).__name__}: {str(e)[:300]}")
                base[f"fi_{variant}_ms"] = float("nan")
            finally:
                runs = None
        del caches
    fi = [base.get(f"fi_{v}_ms", float("nan")) for v in VARIANTS]
    base["dense_fi_ms"] = min((x for x in fi if x == x), default=float("nan"))
    base["dense_ms"] = min(x for x in (base["dense_ours_ms"], base["dense_fi_ms"]) if x == x)
    base["dense_by"] = "ours" if base["dense_ms"] == base["dense_ours_ms"] else "flashinfer"
    base["dense_ours_floor_frac"] = base["dense_floor_ms"] / base["dense_ours_ms"]
    base["dense_fi_floor_frac"] = base["dense_floor_ms"] / base["dense_fi_ms"]
    log(f"{model} B={batch} L={n_keys}: dense ours {base['dense_ours_ms']:.4f} ms "
        f"({base['dense_ours_floor_frac']:.0%} of floor), flashinfer " +
        ", ".join(f"{v} {x:.4f}" for v, x in zip(VARIANTS, fi)) + " ms")
    shape = AttentionShape(hq, hkv, d, c, DTYPE)
    empty = ChunkLists.empty(batch, sel_heads, nc, "cuda")  # no chunk: the fixed cost of the two launches
    base["sparse_empty_ms"] = timed([lambda s=s: sparse_verify(s.q, s.k, s.v, s.lengths, empty.ids, empty.n, c,
                                                               out=s.out, workspace=ws, config=split)
                                     for s in sets], cfg, graph=True)
    width = nc * c
    draft_dtype = getattr(torch, cfg.draft_dtype)
    cgen = torch.Generator().manual_seed(n_keys * 7 + batch)
    recs = []
    for density in cfg.densities:
        steps, drafts = [], []
        for s in sets:
            masks = random_masks(batch, sel_heads, nc, density, cgen)
            drafts.append(draft_rows_for(masks, prefix, cfg.gamma, c, width, cfg.p, gen, draft_dtype))
            steps.append(SpecAttnStep(shape, batch, n_keys, t, cfg.p, sel_heads, config=split))
        for st, s, dr in zip(steps, sets, drafts):
            st(s.q, s.k, s.v, s.lengths, dr, out=s.out)
        kept = sum(int(st.lists.n.sum()) for st in steps) / (len(steps) * batch * sel_heads * nc)
        rec = dict(base, density=density, selected_frac=kept)
        sel_calls = [lambda st=st, dr=dr: st.select(dr) for st, dr in zip(steps, drafts)]
        attn_calls = [lambda st=st, s=s: st.attend(s.q, s.k, s.v, s.lengths, out=s.out) for st, s in zip(steps, sets)]
        step_calls = [lambda st=st, s=s, dr=dr: st(s.q, s.k, s.v, s.lengths, dr, out=s.out)
                      for st, s, dr in zip(steps, sets, drafts)]
        rec["selection_ms"] = timed(sel_calls, cfg, graph=True)
        rec["selection_batched_ms"] = batched_selection_ms(cfg, drafts, sel_heads, nc) / cfg.layers
        rec["sparse_ms"] = timed(attn_calls, cfg, graph=True)
        if cfg.flashinfer and sel_heads == 1:
            rec.update(flashinfer_sparse(cfg, sets, steps, batch, n_keys, nc, kv_bytes, io_bytes, bandwidth,
                                         read_bandwidth, split, ws, fi_ws, log))
        rec["step_eager_ms"] = timed(step_calls, cfg, graph=False)
        rec["step_graph_ms"] = timed(step_calls, cfg, graph=True)
        sparse_bytes = kept * prefix / n_keys * kv_bytes + 2 * batch * t * hkv * d * 2 + io_bytes
        draft_bytes = drafts[0].numel() * drafts[0].element_size()
        rec["sparse_floor_ms"] = sparse_bytes / bandwidth * 1e3
        rec["step_floor_ms"] = (sparse_bytes + draft_bytes) / bandwidth * 1e3
        rec["sparse_floor_frac"] = rec["sparse_floor_ms"] / rec["sparse_ms"]
        rec["sparse_read_floor_frac"] = sparse_bytes / read_bandwidth * 1e3 / rec["sparse_ms"]
        rec["step_graph_floor_frac"] = rec["step_floor_ms"] / rec["step_graph_ms"]
        rec["step_eager_floor_frac"] = rec["step_floor_ms"] / rec["step_eager_ms"]
        rec["sparse_speedup"] = base["dense_ms"] / rec["sparse_ms"]
        rec["pipeline_speedup"] = base["dense_ms"] / rec["step_graph_ms"]  # the whole step, graph-replayed
        rec["step_eager_speedup"] = base["dense_ms"] / rec["step_eager_ms"]
        log("RECORD " + json.dumps(rec))
        log(f"  keep {density:.2f} (selected {kept:.3f}): selection {rec['selection_ms']:.4f}, sparse "
            f"{rec['sparse_ms']:.4f} ({rec['sparse_floor_frac']:.0%} of floor), step eager {rec['step_eager_ms']:.4f}"
            f" / graph {rec['step_graph_ms']:.4f} ms -> {rec['pipeline_speedup']:.2f}x dense")
        recs.append(rec)
        del steps, drafts
    del sets
    torch.cuda.empty_cache()
    return recs


def batched_selection_ms(cfg, drafts: list[torch.Tensor], sel_heads: int, nc: int) -> float:
    """Graph-replayed time of selecting for ``cfg.layers`` layers at once (their draft rows stacked:
    the same rows here, the kernels' time does not depend on the values), as a decoder can do at the
    start of a verification step."""
    from ..gpu.step import select_chunks

    stacked = [d.expand(cfg.layers, *d.shape).contiguous() for d in drafts]
    lists = [ChunkLists.empty(cfg.layers * d.shape[0], sel_heads, nc, "cuda") for d in drafts]
    for ls in lists:
        ls.ids, ls.n = ls.ids.view(cfg.layers, -1, sel_heads, nc), ls.n.view(cfg.layers, -1, sel_heads)
    calls = [lambda d=d, ls=ls: select_chunks(d, cfg.p, cfg.chunk_size, ls) for d, ls in zip(stacked, lists)]
    return timed(calls, cfg, graph=True)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def fits(cfg, model: str, batch: int, n_keys: int) -> bool:
    """Whether a case's KV cache (and FlashInfer's paged copy) stays within ``cfg.max_kv_gib``."""
    hq, hkv, d = MODELS[model]
    return 2 * batch * n_keys * hkv * d * 2 * (2 if cfg.flashinfer else 1) <= cfg.max_kv_gib * 2**30


def bench_attention(cfg, bandwidth: float, split: SplitConfig, log=print, read_bandwidth: float | None = None) -> pd.DataFrame:
    recs = []
    for model, batch, n_keys in itertools.product(cfg.models, cfg.batches, cfg.attn_lengths):
        if not fits(cfg, model, batch, n_keys):
            log(f"{model} B={batch} L={n_keys}: skipped (KV over max_kv_gib={cfg.max_kv_gib})")
            continue
        try:
            recs += bench_case(cfg, model, batch, n_keys, bandwidth, split, log, read_bandwidth)
        except Exception as e:  # noqa: BLE001  (one failing case is reported in the table, the others still run)
            log(f"{model} B={batch} L={n_keys}: FAILED {type(e).__name__}: {e}\n{traceback.format_exc()}")
            recs.append({"model": model, "batch": batch, "L": n_keys, "error": f"{type(e).__name__}: {e}"})
            torch.cuda.empty_cache()
    return pd.DataFrame(recs)


def breakeven(attn: pd.DataFrame) -> pd.DataFrame:
    """Per model, batch and kept fraction: the smallest L at which the whole step (graph-replayed, and
    eager) and the sparse attention alone beat dense."""
    out = []
    if "density" not in attn:
        return pd.DataFrame(out)
    for (model, batch, dens), g in attn.groupby(["model", "batch", "density"]):
        row = {"model": model, "batch": batch, "density": dens}
        for col, name in [("pipeline_speedup", "first_L_step_graph"), ("step_eager_speedup", "first_L_step_eager"),
                          ("sparse_speedup", "first_L_sparse")]:
            wins = g[g[col] > 1]["L"]
            row[name] = int(wins.min()) if len(wins) else None
        out.append(row)
    frame = pd.DataFrame(out)
    for col in ("first_L_step_graph", "first_L_step_eager", "first_L_sparse"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------- tuning
def tile_configs(base: SplitConfig) -> list[SplitConfig]:
    """The tune's first stage: keys per iteration x warps, then pipeline stages, the merge's tile, the fused merge, the
    merge's programmatic dependent launch and a quarter of the work in dynamic ranges (or none), at the base split
    (each one compiled kernel more)."""
    tiles = [replace(base, block_n=bn, warps=w) for bn, w in itertools.product((32, 64, 128), (2, 4, 8))]
    return _distinct([base] + tiles + [replace(base, stages=st) for st in (2, 4)]
                     + [replace(base, merge_tile=mt) for mt in (8, 16)]
                     + [replace(base, fused_merge=not base.fused_merge, steal=0), replace(base, pdl=not base.pdl)]
                     + [replace(base, steal=share, fused_merge=False) for share in (0, 25)])


def split_configs(tile: SplitConfig) -> list[SplitConfig]:
    """The second stage: programs per SM x fewest chunks per program, at the first stage's best tile."""
    return _distinct([tile] + [replace(tile, ctas_per_sm=cta, min_chunks=mc)
                               for cta, mc in itertools.product((1, 2, 3, 4, 6, 8), (4, 8, 16, 32))])


def _distinct(configs: list[SplitConfig]) -> list[SplitConfig]:
    seen: set = set()
    return [c for c in configs if not (c in seen or seen.add(c))]


def bench_tune(cfg, base: SplitConfig, log=print) -> tuple[pd.DataFrame, SplitConfig]:
    """Graph-replayed time of dense and sparse attention for each config at ``cfg.tune_cases``, in two stages
    (:func:`tile_configs` at the base split, then :func:`split_configs` at the best tile); returns the table
    (column ``stage``) and the config with the best geometric mean of (time / best time of its case)."""
    tiles = tile_configs(base)
    first = _time_configs(cfg, tiles, log)
    tile = _best(first)
    second = _time_configs(cfg, [c for c in split_configs(tile) if c not in tiles], log)
    table = pd.concat([first.assign(stage=1), second.assign(stage=2)], ignore_index=True)
    best = _best(table)
    log(f"tune: best tile {tile}; best split config {best}")
    return table, best


KEYS = [f.name for f in fields(SplitConfig)]


def _best(table: pd.DataFrame) -> SplitConfig:
    """The config with the best geometric mean of (time / best time of its case and mode) in ``table``."""
    rel = table["ms"] / table.groupby(["model", "batch", "L", "mode"])["ms"].transform("min")
    score = rel.map(math.log).groupby([table[k] for k in KEYS]).mean()
    return SplitConfig(**dict(zip(KEYS, (int(x) for x in score.idxmin()))))


def _time_configs(cfg, configs: list[SplitConfig], log) -> pd.DataFrame:
    from ..gpu.kernels.sparse_attn import make_workspace

    recs = []
    for model, batch, n_keys in cfg.tune_cases:
        hq, hkv, d = MODELS[model]
        t, c = cfg.gamma + 1, cfg.chunk_size
        nc = n_chunks_capacity(n_keys, t, c)
        sets = [Inputs(hq, hkv, d, batch, n_keys, t, torch.Generator(device="cuda").manual_seed(i))
                for i in range(n_sets(2 * batch * n_keys * hkv * d * 2, cfg.rotate_bytes))]
        gen = torch.Generator().manual_seed(1)
        lists = {dens: [_lists(random_masks(batch, 1, nc, dens, gen)) for _ in sets] for dens in cfg.tune_densities}
        for config in configs:
            ws = make_workspace(batch, hkv, hq // hkv, t, d, config, "cuda")
            modes = [("dense", [lambda s=s: dense_verify(s.q, s.k, s.v, s.lengths, c, out=s.out, workspace=ws,
                                                         config=config) for s in sets])]
            for dens, per_set in lists.items():
                modes.append((f"sparse {dens}", [
                    lambda s=s, ls=ls: sparse_verify(s.q, s.k, s.v, s.lengths, ls.ids, ls.n, c, out=s.out,
                                                     workspace=ws, config=config) for s, ls in zip(sets, per_set)]))
            for mode, calls in modes:
                try:
                    ms = timed(calls, cfg, graph=True)
                except Exception as error:  # noqa: BLE001 (a tile that does not compile, e.g. out of shared memory)
                    log(f"tune {config} {mode}: {type(error).__name__}: {str(error).splitlines()[0]}")
                    ms = math.nan
                recs.append({"model": model, "batch": batch, "L": n_keys, "mode": mode, **config.__dict__, "ms": ms})
        log(f"tune {model} B={batch} L={n_keys}: {len(configs)} configs")
        del sets, lists
        torch.cuda.empty_cache()
    table = pd.DataFrame(recs)
    table["rel"] = table["ms"] / table.groupby(["model", "batch", "L", "mode"])["ms"].transform("min")
    return table


def _lists(mask: torch.Tensor) -> ChunkLists:
    from ..gpu.attention.sparse import chunk_lists

    return chunk_lists(mask.cuda())
