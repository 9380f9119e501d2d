"""``experiment=decode_real``: end-to-end decoding with the real pair's weights on the GPU
(:mod:`specattn.bench.real_decode`): tokens/s, measured tau and kept fractions of every mode against the
roofline at those values, agreement with dense speculative decoding, and the lossless check.

Writes ``modes.csv`` (one row per context, batch and mode; rewritten after every point), ``agreement.csv``,
``prompts.csv`` (one row per point, mode and prompt: its window's ``source``, steps, tau, continuation NLL,
agreement; the paired input of ``python -m specattn.results decoding``'s intervals), ``timings.csv`` (one row per
point, mode, prompt group and timed pass, in the order they ran: ms and the GPU's clocks, temperature and power after
it), ``lossless.csv`` and ``summary.md`` in the run folder. Settings: ``conf/experiment/decode_real.yaml``;
``gamma``, ``chunk_size``, ``dense_layers``, ``head_agg``, ``layer_map`` and ``seed`` from the root config.
"""

from __future__ import annotations

import math
import re
import time

import pandas as pd
import torch
from hydra.utils import instantiate

from ..bench.decode_tables import markdown_table
from ..bench.real_decode import (
    RealBenchConfig,
    agreement,
    check_free_memory,
    lossless,
    pass_timings,
    per_prompt,
    run_point,
    skip_reason,
)
from ..bench.timing import (
    hardware,
    measure_bandwidth,
    measure_read_bandwidth,
    require_gpu,
)
from ..core import layer_maps
from ..core.checks import flag, fractions, nonnegative_int, positive_int
from ..core.errors import SpecAttnError
from ..data.windows import Sample, token_windows
from ..decode.graph_engine import free_device_memory
from ..gpu.kernels.rows_config import RowsConfig
from ..gpu.kernels.split_config import SplitConfig
from ..models.layers import layer_counts
from ..models.pair import load_tokenizer
from ..results.plots import plot_decoding_by_context, plot_policy_tradeoff
from ..decode.draft_reads import DRAFT_READS
from ..runs.context import ExperimentResult, RunContext
from ..runs.outputs import GroupParts, SampleParts
from .evaluation import layer_mapping, load_pair_for


def check(cfg) -> None:
    """Pre-load checks of ``experiment.*``."""
    e = cfg.experiment
    for key in ("contexts", "batches"):
        values = list(e[key])
        if not values:
            raise SpecAttnError(f"experiment.{key} is empty: list at least one value")
        for value in values:
            positive_int(value, f"experiment.{key}", "[2048]")
    for key in ("prompts", "new_tokens", "lossless_context", "draft_refresh", "repeats"):
        positive_int(e[key], f"experiment.{key}", "32")
    nonnegative_int(e.lossless_prompts, "experiment.lossless_prompts", "32")  # 0 skips the check
    nonnegative_int(e.draft_refresh_below, "experiment.draft_refresh_below", "2")
    if e.get("draft_dense_layers") is not None:
        nonnegative_int(e.draft_dense_layers, "experiment.draft_dense_layers", "0")
    fractions(e.p_values, "experiment.p_values", "[0.9,0.95]")
    if float(e.match_p) not in [float(p) for p in e.p_values]:
        raise SpecAttnError(f"experiment.match_p={e.match_p} is not one of experiment.p_values={list(e.p_values)}")
    bad = [r for r in e.draft_reads if r not in DRAFT_READS or r == "dense"]
    if bad:
        raise SpecAttnError(f"experiment.draft_reads={list(e.draft_reads)}: allowed are "
                            f"{', '.join(r for r in DRAFT_READS if r != 'dense')}")
    if cfg.head_agg not in ("mean", "max"):
        raise SpecAttnError(f"head_agg={cfg.head_agg} : the graph decoder supports mean and max")
    kernel_launch(e, "split", SplitConfig)  # refused here, before weights load
    kernel_launch(e, "sparse_split", SplitConfig)
    kernel_launch(e, "draft_split", SplitConfig)
    kernel_launch(e, "rows", RowsConfig)
    flag(e.get("matched", True), "experiment.matched")
    flag(e.get("row0_from_scores", True), "experiment.row0_from_scores")
    flag(e.get("fold_norms", True), "experiment.fold_norms")  # applies where the layers are fused
    draft_epilogue_rows(e)
    draft_down_split(e)
    n_draft, n_verifier = layer_counts(cfg.model)
    for name, spec in (e.get("layer_maps") or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise SpecAttnError(f"experiment.layer_maps has the name {name!r}: use letters, digits, '_', '.', '-' "
                                "(it labels the modes: 'specattn p=0.9 map=<name>')")
        if str(spec) == "auto":
            raise SpecAttnError(f"experiment.layer_maps.{name}=auto: name a layer_map file (python -m specattn.align "
                                "writes one from a saved similarity) or proportional")
        try:
            layer_maps.check(str(spec), n_draft, n_verifier, cfg.model.draft.get("layers"))
        except SpecAttnError as error:
            raise SpecAttnError(f"experiment.layer_maps.{name}: {error}") from None


def draft_epilogue_rows(e) -> int:
    """``experiment.draft_epilogue_rows``: the most rows (batch x tokens) a draft forward runs its q/k/v projection
    with the rotary and cache write in one launch (:mod:`specattn.gpu.kernels.projection_epilogues`; 0, the
    default: two launches); anything but an integer in 0..32 is refused before weights load."""
    from ..hooks.fused_llama import MAX_EPILOGUE_ROWS

    return nonnegative_int(e.get("draft_epilogue_rows", 0), "experiment.draft_epilogue_rows", "32", MAX_EPILOGUE_ROWS,
                           "the most rows a one-launch projection takes")


def draft_down_split(e) -> int:
    """``experiment.draft_down_split``: a draft forward's down projection and its residual add in one launch, ``K`` in
    this many ranges (:meth:`specattn.hooks.fused_llama.FusedMLP.down`; 0, the default: cuBLAS's split-K GEMM and
    reduction); anything but an integer in 0..32 is refused before weights load."""
    from ..hooks.fused_llama import MAX_DOWN_SPLIT

    return nonnegative_int(e.get("draft_down_split", 0), "experiment.draft_down_split", "4", MAX_DOWN_SPLIT,
                           "the most K ranges of the one-launch down projection")


def fuse_pair(pair, e) -> None:
    """Both models' layers fused for the graph decoder (:func:`specattn.hooks.fused_llama.fuse_llama`), in place, with
    ``e``'s (``cfg.experiment``) settings: ``fold_norms`` for both, the draft's one-launch ``draft_epilogue_rows`` and
    ``draft_down_split``."""
    from ..hooks.fused_llama import fuse_llama

    fold = bool(e.get("fold_norms", True))
    fuse_llama(pair.draft, fold, draft_epilogue_rows(e), draft_down_split(e))
    fuse_llama(pair.verifier, fold)


def other_layer_maps(cfg, pair) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``experiment.layer_maps`` resolved for the loaded pair: ``((name, map), ...)``."""
    return tuple((str(name), tuple(layer_maps.resolve(str(spec), pair.n_draft_layers, pair.n_verifier_layers,
                                                      pair.draft_layers)))
                 for name, spec in (cfg.experiment.get("layer_maps") or {}).items())


def bench_config(cfg, layer_map, others: tuple = ()) -> RealBenchConfig:
    e = cfg.experiment
    ints = lambda xs: tuple(int(x) for x in xs)  # noqa: E731
    return RealBenchConfig(ints(e.contexts), ints(e.batches), int(e.prompts), int(e.new_tokens),
                           tuple(float(p) for p in e.p_values), float(e.match_p), tuple(str(r) for r in e.draft_reads),
                           int(e.draft_refresh), int(e.draft_window), int(e.draft_sinks), int(cfg.gamma),
                           int(cfg.chunk_size), int(cfg.dense_layers), str(cfg.head_agg), tuple(layer_map),
                           bool(e.fused_layers), float(e.max_mem_gib), int(cfg.seed), int(e.repeats),
                           int(e.draft_refresh_below), kernel_launch(e, "split", SplitConfig),
                           kernel_launch(e, "rows", RowsConfig), kernel_launch(e, "sparse_split", SplitConfig),
                           None if e.get("draft_dense_layers") is None else int(e.draft_dense_layers),
                           flag(e.get("matched", True), "experiment.matched"),
                           flag(e.get("row0_from_scores", True), "experiment.row0_from_scores"),
                           kernel_launch(e, "draft_split", SplitConfig), others)


def kernel_launch(e, key: str, kind):
    """A kernel launch ``kind`` from ``experiment.<key>`` (null fields: the default's); None when every field is
    null (the kernel's default)."""
    given = {k: int(v) for k, v in (e.get(key) or {}).items() if v is not None}
    if not given:
        return None
    try:
        return kind(**given)
    except (TypeError, ValueError) as err:
        raise SpecAttnError(f"experiment.{key}={given}: {err}") from None


LIST_COLUMNS = ["tokens", "prompt_ids", "prompt_nll", "prompt_steps", "passes"]  # lists: prompts.csv and timings.csv
NEAR_TIE = 0.5  # a bfloat16 divergence is "explained" when the verifier's top-2 logits there differ by less


def targets(rows: pd.DataFrame, loss: pd.DataFrame, context: int = 32768, batch: int = 16) -> list[str]:
    """The issues' targets at (context, batch) (or the largest batch measured there), met or not."""
    lines = []
    at = rows[(rows["context"] == context)]
    if "error" in at:
        at = at[at["error"].isna()]
    if at.empty:
        return [f"no point at {context} tokens was measured"]
    batch = batch if (at["batch"] == batch).any() else int(at["batch"].max())
    at = at[at["batch"] == batch].set_index("mode")
    if "dense" not in at.index:
        return [f"dense speculative decoding was not measured at {context} tokens, batch {batch}"]
    dense = at.loc["dense"]

    def steady(r) -> str:  # the same ratio without each group's wait for its slowest sequence (rows since 12-03)
        if pd.isna(r.get("steady_tokens_per_s")) or pd.isna(dense.get("steady_tokens_per_s")):
            return ""
        return f" (steady state {r['steady_tokens_per_s'] / dense['steady_tokens_per_s']:.2f}x)"

    for mode, r in at.iterrows():
        if r["verify"] == "specattn" and r["draft_reads"] == "dense":
            speedup = r["tokens_per_s"] / dense["tokens_per_s"]
            predicted = r["roof_tokens_per_s"] / dense["roof_tokens_per_s"]
            lines.append(f"{mode}, {context} tokens, batch {batch}: roofline at the measured tau {r['tau']:.2f} and "
                         f"kept {r['verifier_kept']:.3f}: {predicted:.2f}x dense speculative decoding; measured "
                         f"{speedup:.2f}x{steady(r)} = {speedup / predicted:.0%} of it (target >= 85%: "
                         f"{'met' if speedup >= 0.85 * predicted else 'NOT met'}; >= 1.15x: "
                         f"{'met' if speedup >= 1.15 else 'NOT met'})")
        elif r["draft_reads"] != "dense":
            speedup = r["tokens_per_s"] / dense["tokens_per_s"]
            keep = r["tau"] / dense["tau"]
            ppl = ""  # tau alone does not judge a policy whose verifier selects from what its draft read
            if not pd.isna(r.get("cont_ppl", math.nan)) and not pd.isna(dense.get("cont_ppl", math.nan)):
                ppl = f"; the dense verifier's continuation ppl {r['cont_ppl'] / dense['cont_ppl'] - 1:+.1%} over dense's"
            lines.append(f"{mode}, {context} tokens, batch {batch}: {speedup:.2f}x{steady(r)} dense speculative "
                         f"decoding with tau {keep:.1%} of dense's (target >= 1.6x with tau >= 95%: "
                         f"{'met' if speedup >= 1.6 and keep >= 0.95 else 'NOT met'}){ppl}")
    if not loss.empty:
        diff = loss[~loss["identical"]]
        unexplained = diff[~(diff["top2_margin"].abs() < NEAR_TIE)]
        lines.append(f"lossless: {len(diff)} of {len(loss)} comparisons differ, {len(unexplained)} not explained by a "
                     f"near-tie (top-2 logit margin < {NEAR_TIE}) (target 0: {'met' if unexplained.empty else 'NOT met'})")
    return lines


def render(rows: pd.DataFrame, agree: pd.DataFrame, loss: pd.DataFrame, hw: dict, copy_bw: float,
           read_bw: float, skipped: tuple[str, ...] | list[str] = ()) -> str:
    """The markdown summary: one table per point, the points ``experiment.max_mem_gib`` skipped, the agreement and the
    lossless check."""
    lines = [f"Hardware: {hw}; copy bandwidth {copy_bw / 1e12:.3f} TB/s, read bandwidth {read_bw / 1e12:.3f} TB/s "
             "(the roofline divides by the read bandwidth). Real weights, real acceptance and selection.", "",
             "### Targets", *[f"- {line}" for line in targets(rows, loss)], ""]
    columns = ["mode", "tokens_per_s", "timing_spread", "step_ms", "steady_tokens_per_s", "tau", "acceptance", "cont_ppl",
               "verifier_kept", "draft_kept", "rows_layers", "roof_tokens_per_s", "roof_frac", "prompts"]
    for (context, batch), group in rows.groupby(["context", "batch"], sort=False):
        ok = group[group.get("error", pd.Series(index=group.index, dtype=object)).isna()] if "error" in group else group
        dense = ok[ok["mode"] == "dense"]
        lines.append(f"### {context} tokens, batch {batch}")
        table = ok[[c for c in columns if c in ok]].copy()
        if not dense.empty:
            table["vs_dense_sd"] = ok["tokens_per_s"] / float(dense["tokens_per_s"].iloc[0])
            if "steady_tokens_per_s" in ok:
                table["steady_vs_dense_sd"] = ok["steady_tokens_per_s"] / float(dense["steady_tokens_per_s"].iloc[0])
            table["roof_vs_dense_sd"] = ok["roof_tokens_per_s"] / float(dense["roof_tokens_per_s"].iloc[0])
        lines += [markdown_table(table), ""]
        for _, r in group[group["error"].notna()].iterrows() if "error" in group else []:
            lines.append(f"- {r['mode']}: FAILED {r['error']}")
    if skipped:
        lines += ["### Skipped for memory", *[f"- {reason}" for reason in skipped], ""]
    if not agree.empty:
        lines += ["### Agreement with dense speculative decoding", markdown_table(agree), ""]
    if not loss.empty:
        summary = loss.groupby(["reference", "compared"]).agg(prompts=("prompt", "count"),
                                                               identical=("identical", "sum")).reset_index()
        lines += ["### Lossless check (greedy, bfloat16)", markdown_table(summary), ""]
        diff = loss[~loss.identical]
        if not diff.empty:
            lines += [markdown_table(diff), ""]
    return "\n".join(lines)


def prompt_windows(cfg, documents, tokenizer) -> dict[int, list[Sample]]:
    """Each context's prompt windows: as many as its largest point takes (``max(experiment.prompts, batch)``; a
    point takes the first of them), cut before any weights load, so too little text is refused naming the key."""
    e = cfg.experiment
    n, batch = int(e.prompts), max(int(b) for b in e.batches)
    key = "experiment.prompts" if n >= batch else "experiment.batches"
    return {int(c): token_windows(documents, tokenizer, int(c), max(n, batch), cfg.dataset.name,
                                  int(cfg.dataset.get("first_sample", 0)), count_key=key,
                                  length_key="experiment.contexts") for c in e.contexts}


def with_sources(prompts: pd.DataFrame, windows: dict[int, list[Sample]]) -> pd.DataFrame:
    """``prompts`` (:func:`per_prompt`'s rows) with a ``source`` column after ``prompt``: the name of the window
    each prompt index took at its context (``file#round``: the document and which of its windows)."""
    if prompts.empty:
        return prompts
    out = prompts.copy()
    out.insert(out.columns.get_loc("prompt") + 1, "source",
               [windows[int(c)][int(i)].sample_id for c, i in zip(out["context"], out["prompt"])])
    return out


def run(ctx: RunContext) -> ExperimentResult:
    cfg = ctx.cfg
    require_gpu("decode_real")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    e = cfg.experiment
    documents = instantiate(cfg.dataset.source).documents()
    tokenizer = load_tokenizer(cfg.model)  # the windows are cut (too few refused) before any weights load
    windows = prompt_windows(cfg, documents, tokenizer)
    lossless_windows = None
    if e.lossless_prompts and not (ctx.run_dir / "lossless.csv").is_file():
        lossless_windows = token_windows(documents, tokenizer, int(e.lossless_context), int(e.lossless_prompts),
                                         cfg.dataset.name, count_key="experiment.lossless_prompts",
                                         length_key="experiment.lossless_context")
    tick = time.perf_counter()
    pair = load_pair_for(cfg)
    if e.fused_layers:
        fuse_pair(pair, e)
    bench = bench_config(cfg, layer_mapping(cfg, pair), other_layer_maps(cfg, pair))
    log(f"{cfg.model.name} loaded in {time.perf_counter() - tick:.1f} s ({pair.verifier.dtype})")
    copy_bw, read_bw, hw = measure_bandwidth(), measure_read_bandwidth(), hardware()
    log(f"copy {copy_bw / 1e12:.3f} TB/s, read {read_bw / 1e12:.3f} TB/s; {hw}")
    loss = pd.DataFrame()
    if lossless_windows is not None:
        loss = lossless(pair, bench, torch.stack([s.input_ids for s in lossless_windows]), log)
        loss.to_csv(ctx.run_dir / "lossless.csv", index=False)
    elif e.lossless_prompts:
        loss = pd.read_csv(ctx.run_dir / "lossless.csv")
    rows = []
    parts = SampleParts(ctx.run_dir)  # one part per point (and per group until the point ends): a killed run resumes
    points = [(c, b) for c in bench.contexts for b in bench.batches]
    skipped = []
    for index, (context, batch) in enumerate(points):
        done = parts.load(index)
        if done is None:
            reason = skip_reason(pair, bench, context, batch)
            if reason is not None:
                log(reason)
                skipped.append(reason)
                continue
            free_device_memory()
            check_free_memory(pair, bench, context, batch, torch.cuda.mem_get_info()[0])
            ids = torch.stack([s.input_ids for s in windows[context][:max(bench.prompts, batch)]])
            groups = [ids[i:i + batch] for i in range(0, len(ids) - batch + 1, batch)]
            groups_done = GroupParts(ctx.run_dir, f"point-{index:05d}")  # at the next group
            done = pd.DataFrame(run_point(pair, bench, context, batch, groups, read_bw, log, groups_done))
            parts.save(index, done)
            groups_done.clear()
        rows += done.to_dict("records")
        pd.DataFrame(rows).drop(columns=LIST_COLUMNS, errors="ignore").to_csv(ctx.run_dir / "modes.csv", index=False)
    if not rows:
        raise SpecAttnError(f"every point is skipped ({'; '.join(skipped)}): raise experiment.max_mem_gib or choose "
                            "smaller experiment.contexts / batches")
    agree = agreement(rows)
    agree.to_csv(ctx.run_dir / "agreement.csv", index=False)
    with_sources(per_prompt(rows, int(e.new_tokens)), windows).to_csv(ctx.run_dir / "prompts.csv", index=False)
    pass_timings(rows).to_csv(ctx.run_dir / "timings.csv", index=False)
    results = pd.DataFrame(rows).drop(columns=LIST_COLUMNS, errors="ignore")
    (ctx.run_dir / "summary.md").write_text(render(results, agree, loss, hw, copy_bw, read_bw, skipped) + "\n")
    title = f"{cfg.model.name}, real weights"
    artifacts = {"summary": ctx.run_dir / "summary.md",
                 "policy_tradeoff": plot_policy_tradeoff(results, ctx.run_dir / "policy_tradeoff.png", title)}
    if results["context"].nunique() > 1:
        artifacts["decoding_by_context"] = plot_decoding_by_context(results, ctx.run_dir / "decoding_by_context.png", title)
    return ExperimentResult(results, artifacts=artifacts,
                            metrics={"copy_bandwidth_TBps": copy_bw / 1e12, "read_bandwidth_TBps": read_bw / 1e12})
