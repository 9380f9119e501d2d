"""End-to-end decoding with real weights (``python run.py experiment=decode_real``): the graph decoder
(:mod:`specattn.decode.graph_engine`) on a real pair, real prompts, real acceptance and real selections.

For each (context, batch) point, the prompts are the dataset's token windows of ``context`` tokens, taken
``batch`` at a time (``prompts`` per point). Every mode decodes every prompt group for ``new_tokens``
greedy tokens from the same prefilled caches:

* ``ar`` (the verifier alone), ``dense`` (dense speculative decoding), ``specattn`` at each ``p``;
* ``streaming`` and ``quest`` with ``kv_budget_frac`` = the verifier kept fraction SpecAttn ``p = match_p``
  measured at this point (matched on the point, not per prompt: labelled);
* SpecAttn ``p = match_p`` with each draft read policy of ``draft_reads``, and ``window`` with a dense
  verifier (MagicDec's StreamingLLM draft);
* under each other layer map of ``layer_maps`` (``name``): SpecAttn ``p = match_p`` and each of its draft read
  policies again (``... map=<name>``), beside the same dense baselines (column ``layer_map``: the name, ``run`` for the
  run's own map; ``rows_layers``: the distinct draft layers whose rows the step recomputes, one slot each, the
  policy layers' included under ``first_dense`` and ``reuse``).

Per mode the two phases are captured once as CUDA graphs and replayed for every group; a group's
decoding is timed with CUDA events from its first step to the step at which every sequence has its
``new_tokens`` (steps pipelined, one host read per step; prefill and capture excluded), ``repeats`` times (the
median counts; ``timing_spread``: the largest (max - min) / median of a group). Reported per mode:
tokens/s (``batch * new_tokens`` per group over its time, median over groups; a group steps until its slowest
sequence has its tokens, so this includes that wait), ``step_ms`` (a group's time over the steps it took, median
over groups) and ``steady_tokens_per_s`` (``batch * tau / step_ms``: a batch whose finished sequences are replaced
at once, as the roofline assumes), the measured ``tau``
(new tokens kept per step: ``new_tokens`` over the steps each sequence took until it had them; ``tau_steps``
counts the last step's tokens past ``new_tokens`` too) and ``acceptance`` (drafted tokens accepted up to the
output's end; ``acceptance_steps`` over every drafted token of those steps), as
:mod:`specattn.decode.decode_metrics` defines them for the CPU decoder, the verifier's and the
draft's kept fractions (chunk reads over dense chunk reads in their sparse / policy layers), ``cont_ppl`` (the
dense verifier's perplexity of the generated tokens given the prompt, after the timing, teacher-forced over
the prompt's shared cache: :func:`cached_continuation_nll`), and the
roofline's tokens/s at those measured values (:mod:`specattn.decode.roofline`; prefix = context + half
the new tokens) with the share of it reached.

:func:`lossless` checks that greedy dense speculative decoding gives the verifier's own greedy tokens
(autoregressive decoding) and that SpecAttn ``p = 1`` gives dense speculative decoding's, explaining each
difference by the verifier's top-2 logit margin at the first divergence (bfloat16 near-ties).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import traceback
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.errors import SpecAttnError
from ..decode import roofline
from ..decode.decode_metrics import drafts_to_output_end
from ..decode.engine import prefill_groups
from ..decode.graph_engine import GraphDecoder, GraphSettings, capacity_for, free_device_memory
from ..decode.kv_cache import SequenceKVCache
from ..gpu.kernels.rows_config import RowsConfig
from ..gpu.kernels.split_config import SplitConfig
from ..hooks.forward import cache_kwargs
from .decode_bench import Clock
from .timing import GPU_STATE_FIELDS, gpu_state


@dataclass
class RealBenchConfig:
    """Every setting (from ``conf/experiment/decode_real.yaml`` and the root config)."""

    contexts: tuple[int, ...]
    batches: tuple[int, ...]
    prompts: int  # prompts per point (rounded up to whole batches)
    new_tokens: int
    p_values: tuple[float, ...]
    match_p: float
    draft_reads: tuple[str, ...]  # policies run with SpecAttn p=match_p (window also with a dense verifier)
    draft_refresh: int
    draft_window: int
    draft_sinks: int
    gamma: int
    chunk_size: int
    dense_layers: int
    head_agg: str
    layer_map: tuple[int, ...]
    fused_layers: bool
    max_mem_gib: float
    seed: int
    repeats: int = 1  # timed decodings of each group per mode (the median counts; tokens from the first)
    draft_refresh_below: int = 0  # reuse: also refresh after a step that accepted fewer drafted tokens
    split: SplitConfig | None = None  # the attention kernel's launch (None: its default), every mode
    rows: RowsConfig | None = None  # the draft-row kernel's launch (None: its default)
    sparse_split: SplitConfig | None = None  # the attention kernel's launch where a layer reads chunk lists (None: split)
    draft_dense_layers: int | None = None  # the first draft layers read densely under a draft policy (None: dense_layers)
    matched: bool = True  # StreamingLLM and Quest matched to SpecAttn p=match_p (False: a run of the other modes only)
    row0_from_scores: bool = True  # first_* policies: row 0 from forward 0's saved scores (False: from the keys)
    draft_split: SplitConfig | None = None  # the attention kernel's launch in the draft's dense layers (None: split)
    layer_maps: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, map): SpecAttn p=match_p and each policy again


def base_settings(cfg: RealBenchConfig) -> GraphSettings:
    """Dense speculative decoding with the run's kernel launches: every mode's settings start from these."""
    return GraphSettings(cfg.gamma, cfg.chunk_size, cfg.dense_layers, cfg.head_agg, cfg.layer_map, split=cfg.split,
                         rows=cfg.rows, sparse_split=cfg.sparse_split, draft_split=cfg.draft_split)


def modes(cfg: RealBenchConfig, matched_frac: float | None) -> list[tuple[str, GraphSettings]]:
    """``(label, settings)`` of every mode at a point (``matched_frac``: the budget of the matched rows,
    None before SpecAttn p=match_p was measured)."""
    base = base_settings(cfg)
    policy = dict(draft_refresh=cfg.draft_refresh, draft_window=cfg.draft_window, draft_sinks=cfg.draft_sinks,
                  draft_refresh_below=cfg.draft_refresh_below, draft_dense_layers=cfg.draft_dense_layers,
                  row0_from_scores=cfg.row0_from_scores)
    out = [("ar", dataclasses.replace(base, gamma=0)), ("dense", base)]
    out += [(f"specattn p={p}", dataclasses.replace(base, p=p)) for p in cfg.p_values]
    if matched_frac is None:
        return out
    for verify in ("streaming", "quest") if cfg.matched else ():
        out.append((f"{verify} match=specattn p={cfg.match_p}",
                    dataclasses.replace(base, verify=verify, kv_budget_frac=matched_frac)))
    for reads in cfg.draft_reads:
        out.append((f"specattn p={cfg.match_p} draft={reads}",
                    dataclasses.replace(base, p=cfg.match_p, draft_reads=reads, **policy)))
        if reads == "window":
            out.append(("dense draft=window", dataclasses.replace(base, p=cfg.match_p, verify="dense",
                                                                 draft_reads="window", **policy)))
    for name, mapping in cfg.layer_maps:  # the same SpecAttn modes under another map, beside the same dense baseline
        other = dataclasses.replace(base, p=cfg.match_p, layer_map=tuple(mapping))
        out.append((f"specattn p={cfg.match_p} map={name}", other))
        out += [(f"specattn p={cfg.match_p} draft={reads} map={name}", dataclasses.replace(other, draft_reads=reads,
                                                                                        **policy))
                for reads in cfg.draft_reads]
    return out


def rows_layers(settings: GraphSettings, verifier_layers: int, draft_layers: int) -> int:
    """The distinct draft layers whose rows a step recomputes (:meth:`GraphSettings.row_layers`: the map's under
    SpecAttn, and every policy layer's under ``first_dense`` and ``reuse``)."""
    return len(settings.row_layers(verifier_layers, draft_layers)[0])


def timed_generate(dec: GraphDecoder, new_tokens: int) -> dict:
    """Decode until every sequence has ``new_tokens`` tokens: ms (from the first step to the step that
    completed the last sequence: CUDA events, steps pipelined: the host reads a step's accepted counts after
    launching the next, so one step past the end is launched and not timed; on the CPU a host clock) and,
    per sequence, the accepted count of each step it took until it had its tokens (``accepted``)."""
    b, cuda = dec.batch, dec.device.type == "cuda"
    produced, accepted = [0] * b, [[] for _ in range(b)]
    host = torch.empty((2, b), dtype=torch.long, pin_memory=cuda)
    clock = Clock(dec.device)
    marks = [clock.mark(), None, None]
    i, done_at = 0, None
    while done_at is None:
        dec.step()
        host[i % 2].copy_(dec.kept, non_blocking=cuda)
        marks[1 + i % 2] = clock.mark()
        if i or not cuda:
            j = i - 1 if cuda else i  # the step whose counts are read now
            clock.wait(marks[1 + j % 2])
            kept = host[j % 2].tolist()
            dec.record(kept)
            for s, k in enumerate(kept):
                if produced[s] < new_tokens:
                    accepted[s].append(k)
                    produced[s] += k + 1
            if min(produced) >= new_tokens:
                done_at = marks[1 + j % 2]
        i += 1
    ms = clock.ms(marks[0], done_at)
    if cuda:  # the step launched past the end
        clock.wait(marks[1 + (i - 1) % 2])
        dec.record(host[(i - 1) % 2].tolist())
    return {"ms": ms, "accepted": accepted}


def roofline_row(cfg, settings: GraphSettings, v_shape, d_shape, batch: int, context: int, tau: float,
                 verifier_kept: float, draft_kept: float, bandwidth: float) -> dict:
    """The roofline at the measured tau and kept fractions (bytes per step, tokens/s), counting the row layers
    as the decoder computes them (:meth:`GraphSettings.row_layers`)."""
    prefix = context + cfg.new_tokens // 2
    speculative = settings.gamma > 0
    kept = verifier_kept if settings.mode not in ("ar", "dense") else None
    needed, shared = settings.roofline_layers(v_shape.layers, d_shape.layers)
    kwargs = {}
    if settings.draft_reads != "dense" and speculative:
        kwargs = dict(draft_reads=settings.draft_reads, draft_kept=draft_kept, draft_refresh=settings.draft_refresh,
                      draft_window=settings.draft_window, draft_sinks=settings.draft_sinks,
                      draft_dense_layers=settings.draft_dense_layers, row0_from_scores=settings.row0_from_scores,
                      shared_layers=shared)
    parts = roofline.step_bytes(v_shape, d_shape if speculative else None, batch, prefix, settings.gamma, kept,
                                settings.dense_layers, needed, settings.chunk_size, **kwargs)
    tokens = batch * (tau if speculative else 1.0)
    return {**{f"bytes_{k}": v for k, v in parts.items()},
            "roof_tokens_per_s": roofline.roofline_tokens_per_s(parts["total"], tokens, bandwidth)}


def point_bytes(pair, cfg: RealBenchConfig, context: int, batch: int) -> int:
    """Device memory a point allocates beside the weights, estimated: both shared caches at capacity (exact) and the
    prefill's largest activations (the verifier's MLP on :func:`~specattn.decode.engine.prefill_groups`' largest
    group: its gate/up and SiLU-mul outputs and four hidden-state rows a token). The modes' own buffers and graphs are
    not counted (a few GB at 32K batch 32)."""
    shapes = [roofline.ModelShape.from_config(m.config, m.dtype.itemsize) for m in (pair.verifier, pair.draft)]
    caches = batch * capacity_for(context, cfg.new_tokens, cfg.gamma) * sum(s.kv_bytes_per_token for s in shapes)
    v = shapes[0]
    rows = max(b - a for a, b in prefill_groups(batch, context)) * context
    return caches + rows * (3 * v.intermediate + 4 * v.hidden) * v.dtype_bytes


def weight_bytes(pair) -> int:
    """Bytes of both models' parameters and buffers as loaded."""
    return sum(t.numel() * t.element_size() for m in (pair.verifier, pair.draft)
               for t in (*m.parameters(), *m.buffers()))


def skip_reason(pair, cfg: RealBenchConfig, context: int, batch: int) -> str | None:
    """Why ``experiment.max_mem_gib`` skips a point (the weights and :func:`point_bytes` over it), or ``None``."""
    need, weights, gib = point_bytes(pair, cfg, context, batch), weight_bytes(pair), 2 ** 30
    if weights + need <= cfg.max_mem_gib * gib:
        return None
    return (f"L={context} B={batch}: skipped, the weights ({weights / gib:.1f} GiB) and the point's caches and prefill "
            f"({need / gib:.1f} GiB) exceed experiment.max_mem_gib={cfg.max_mem_gib:g}")


def check_free_memory(pair, cfg: RealBenchConfig, context: int, batch: int, free_bytes: int) -> None:
    """Refuse a point whose :func:`point_bytes` exceed the device's free memory (measured once the previous point's is
    freed), before it allocates anything: a one-line error in place of running out of memory mid-point."""
    need, gib = point_bytes(pair, cfg, context, batch), 2 ** 30
    if need > free_bytes:
        raise SpecAttnError(f"L={context} B={batch} needs about {need / gib:.1f} GiB for its caches and prefill and the "
                            f"device has {free_bytes / gib:.1f} GiB free: lower experiment.max_mem_gib to skip such "
                            "points, or drop them from experiment.contexts / batches (the points done are kept; the "
                            "run resumes after them)")


class PointRunner:
    """Every mode at one (context, batch) point, over the prompt groups (module docstring)."""

    def __init__(self, pair, cfg: RealBenchConfig, context: int, batch: int, bandwidth: float, log):
        self.pair, self.cfg, self.context, self.batch, self.bandwidth, self.log = pair, cfg, context, batch, bandwidth, log
        cap = capacity_for(context, cfg.new_tokens, cfg.gamma)
        self.caches = (SequenceKVCache.for_model(pair.verifier, batch, cap), SequenceKVCache.for_model(pair.draft, batch, cap))
        self.capacity = cap
        self.decoders: dict[str, GraphDecoder] = {}
        self.v_shape = roofline.ModelShape.from_config(pair.verifier.config, pair.verifier.dtype.itemsize)
        self.d_shape = roofline.ModelShape.from_config(pair.draft.config, pair.draft.dtype.itemsize)

    def prefill(self, prompts: torch.Tensor) -> float:
        """Fill both shared caches with ``prompts`` (seconds)."""
        tick = time.perf_counter()
        dec = GraphDecoder(self.pair.draft, self.pair.verifier, GraphSettings(self.cfg.gamma, self.cfg.chunk_size),
                           self.batch, self.capacity, self.caches)
        dec.prefill(prompts)
        if dec.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tick

    def run_mode(self, label: str, settings: GraphSettings, prompts: torch.Tensor) -> dict:
        dec = self.decoders.get(label)
        if dec is None:
            dec = GraphDecoder(self.pair.draft, self.pair.verifier, settings, self.batch, self.capacity, self.caches)
            dec.resume(prompts)
            if dec.device.type == "cuda":
                dec.capture()
            self.decoders[label] = dec  # once captured: a failed capture is never replayed eagerly by the next group
        dec.resume(prompts)
        first, out = self.timed_pass(dec, 0)
        passes = [first]
        verifier_kept, draft_kept = dec.kept_fractions()
        tokens = self.cfg.new_tokens
        to_end = [drafts_to_output_end(steps, tokens, settings.gamma) for steps in out["accepted"]]
        generated = self.tokens_of(dec, prompts.shape[1])
        for index in range(1, self.cfg.repeats):  # the same decoding again: only its time counts
            dec.resume(prompts)
            passes.append(self.timed_pass(dec, index)[0])
        times = [p["ms"] for p in passes]
        ms = statistics.median(times)
        group_steps = max(len(steps) for steps in out["accepted"])  # the steps timed: until the slowest sequence
        return {"ms": ms, "ms_spread": (max(times) - min(times)) / ms, "tokens_per_s": self.batch * tokens / ms * 1e3,
                "step_ms": ms / group_steps,
                "steps": sum(len(steps) for steps in out["accepted"]),
                "seq_steps": [len(steps) for steps in out["accepted"]],
                "accepted_steps": sum(sum(steps) for steps in out["accepted"]),
                "drafted": sum(d for d, _ in to_end), "accepted": sum(a for _, a in to_end),
                "tokens_out": generated,
                "cont_nll": cached_continuation_nll(self.pair, self.caches[0], prompts, generated, settings.gamma + 1,
                                                    settings.chunk_size),
                "verifier_kept": verifier_kept, "draft_kept": draft_kept, "passes": passes}

    def timed_pass(self, dec: GraphDecoder, index: int) -> tuple[dict, dict]:
        """One timed decoding of the group: what :func:`pass_timings` keeps of it (its index, host clock at its start
        in Unix seconds, ms, and the GPU's clocks, temperature and power right after it:
        :func:`~specattn.bench.timing.gpu_state`) and :func:`timed_generate`'s result."""
        at = time.time()
        out = timed_generate(dec, self.cfg.new_tokens)
        return {"pass": index, "at": at, "ms": out["ms"], **gpu_state()}, out

    def tokens_of(self, dec: GraphDecoder, length: int) -> list[list[int]]:
        return dec.tokens[:, length: length + self.cfg.new_tokens].tolist()


def run_point(pair, cfg: RealBenchConfig, context: int, batch: int, groups: list[torch.Tensor], bandwidth: float,
              log, store=None) -> list[dict]:
    """Rows of every mode at one point: a first pass over the groups with the unmatched modes, then the
    matched and draft-policy modes, budgets from SpecAttn p=match_p's kept fraction over the first pass.
    ``store`` (e.g. :class:`specattn.runs.outputs.GroupParts`): ``load(pass, group)`` gives a group's finished
    ``{mode: result}`` (then it is not decoded again), ``save(pass, group, results)`` keeps each as it finishes."""
    runner = PointRunner(pair, cfg, context, batch, bandwidth, log)
    results: dict[str, list[dict]] = {}
    settings_of: dict[str, GraphSettings] = {}
    first = modes(cfg, None)
    passes = [first]
    for index in range(2):
        settings_of.update(passes[index])
        for group, prompts in enumerate(groups if passes[index] else []):
            done = store.load(index, group) if store is not None else None
            if done is None:
                done = group_results(runner, passes[index], group, prompts)
                if store is not None:
                    store.save(index, group, done)
            else:  # timed by the process that ran it (another machine's, if its parts were copied over)
                log(f"  L={context} B={batch} pass {index} group {group}: resumed from its part")
            for label, result in done.items():
                results.setdefault(label, []).append(result)
        if index == 0:
            target = [r for r in results.get(f"specattn p={cfg.match_p}", []) if "error" not in r]
            matched = statistics.fmean(r["verifier_kept"] for r in target) if target else None
            passes.append(modes(cfg, matched)[len(first):] if matched is not None else [])
    rows = []
    for label, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        settings = settings_of[label]
        row = {"context": context, "batch": batch, "mode": label, "verify": settings.mode,
               "draft_reads": settings.draft_reads, "p": settings.p, "gamma": settings.gamma,
               "layer_map": label.partition(" map=")[2] or "run",  # experiment.layer_maps' name, or the run's map
               "rows_layers": rows_layers(settings, runner.v_shape.layers, runner.d_shape.layers),
               "groups": len(ok), "prompts": len(ok) * batch, "new_tokens": cfg.new_tokens}
        if not ok:
            row["error"] = runs[-1]["error"]
            rows.append(row)
            continue
        steps, accepted_steps = sum(r["steps"] for r in ok), sum(r["accepted_steps"] for r in ok)
        drafted, accepted = sum(r["drafted"] for r in ok), sum(r["accepted"] for r in ok)
        tau = len(ok) * batch * cfg.new_tokens / steps  # new tokens kept per step
        step_ms = statistics.median(r["step_ms"] for r in ok)
        row.update({"tokens_per_s": statistics.median(r["tokens_per_s"] for r in ok), "tau": tau,
                    "step_ms": step_ms, "steady_tokens_per_s": batch * tau / step_ms * 1e3,
                    "timing_spread": max(r["ms_spread"] for r in ok),  # (max - min) / median of a group's repeats
                    "tau_steps": (accepted_steps + steps) / steps,  # the last step's overshoot too
                    "acceptance": accepted / drafted if drafted else math.nan,  # up to the output's end
                    "acceptance_steps": accepted_steps / (steps * settings.gamma) if settings.gamma else math.nan,
                    "verifier_kept": statistics.fmean(r["verifier_kept"] for r in ok),
                    "draft_kept": statistics.fmean(r["draft_kept"] for r in ok),
                    "cont_ppl": math.exp(sum(sum(r["cont_nll"]) for r in ok) / (len(ok) * batch * cfg.new_tokens)),
                    "prompt_ids": [r["group"] * batch + i for r in ok for i in range(batch)],  # window index
                    "prompt_nll": [x for r in ok for x in r["cont_nll"]],
                    "prompt_steps": [x for r in ok for x in r["seq_steps"]],
                    "passes": [{"group": r["group"], **p} for r in ok for p in r.get("passes", ())],
                    "kv_budget_frac": settings.kv_budget_frac})
        row.update(roofline_row(cfg, settings, runner.v_shape, runner.d_shape, batch, context, tau,
                                row["verifier_kept"], row["draft_kept"], bandwidth))
        row["roof_frac"] = row["tokens_per_s"] / row["roof_tokens_per_s"]
        row["tokens"] = [t for r in ok for t in r["tokens_out"]]
        rows.append(row)
        log(f"  L={context} B={batch} {label}: {row['tokens_per_s']:.1f} tok/s, tau {tau:.2f}, kept "
            f"v {row['verifier_kept']:.3f} d {row['draft_kept']:.3f}, {row['roof_frac']:.0%} of roofline")
    del runner
    free_device_memory()
    return rows


def group_results(runner: PointRunner, mode_settings: list[tuple[str, GraphSettings]], group: int,
                  prompts: torch.Tensor) -> dict[str, dict]:
    """``{mode: result}`` of one prompt group, prefilled once for every mode of ``mode_settings`` (a failed mode:
    its error)."""
    runner.prefill(prompts)
    done = {}
    for label, settings in mode_settings:
        try:
            done[label] = {**runner.run_mode(label, settings, prompts), "group": group}
        except Exception as error:  # noqa: BLE001 (one failed mode must not lose the others)
            done[label] = {"error": f"{type(error).__name__}: {error}"}
            runner.log(f"  L={runner.context} B={runner.batch} {label}: FAILED {error}\n{traceback.format_exc()}")
    return done


def _sequences(value) -> list[list[int]] | None:
    """A row's ``tokens`` as lists (a row read back from a part holds arrays), None where it has none."""
    if value is None or isinstance(value, float):
        return None
    return [list(map(int, t)) for t in value]


def per_prompt(rows: list[dict], new_tokens: int) -> pd.DataFrame:
    """One row per point, mode and prompt: the verification steps it took for its ``new_tokens``, its tau, the
    dense verifier's NLL of its output (nats, summed), and against dense speculative decoding's tokens for the
    same prompt the share of equal positions and the first divergence. The paired inputs of
    :mod:`specattn.results.decoding_intervals`."""
    out = []
    frame = pd.DataFrame(rows)
    if "prompt_nll" not in frame:
        return pd.DataFrame()
    for (context, batch), group in frame.groupby(["context", "batch"], sort=False):
        ref = group[group["mode"] == "dense"]
        dense = None
        if not ref.empty and "tokens" in ref and _sequences(ref["tokens"].iloc[0]) is not None:
            dense = dict(zip(map(int, ref["prompt_ids"].iloc[0]), _sequences(ref["tokens"].iloc[0])))
        for _, r in group.iterrows():
            if r.get("prompt_nll") is None or isinstance(r.get("prompt_nll"), float):
                continue  # a failed mode (NaN in the frame)
            tokens = _sequences(r.get("tokens"))
            for i, (prompt, nll, steps) in enumerate(zip(r["prompt_ids"], r["prompt_nll"], r["prompt_steps"])):
                row = {"context": context, "batch": batch, "mode": r["mode"], "prompt": int(prompt), "steps": int(steps),
                       "tau": new_tokens / int(steps), "cont_nll": float(nll)}
                if dense is not None and tokens is not None and int(prompt) in dense:
                    x, y = tokens[i], dense[int(prompt)]
                    row["match_rate"] = sum(a == b for a, b in zip(x, y)) / max(1, len(x))
                    row["first_divergence"] = next((k for k, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
                out.append(row)
    return pd.DataFrame(out)


def pass_timings(rows: list[dict]) -> pd.DataFrame:
    """One row per point, mode, prompt group and timed pass (``repeats`` a group): the pass's index, its start
    (``at``, Unix seconds: the order the passes ran in), ``ms`` and the GPU's state right after it (``sm_mhz``,
    ``mem_mhz``, ``temp_c``, ``power_w``; NaN without ``nvidia-smi``), in the order they ran. A mode's tokens/s is
    the median over its groups of the median over each group's passes; this table shows what those medians hide
    (a pass, a group or a stretch of the run that was slower, and whether the GPU's clocks moved with it)."""
    out = []
    for r in rows:
        passes = r.get("passes")  # a list of dicts; read back from a parquet part, an array of them; a failed mode: NaN
        for timing in passes if isinstance(passes, (list, tuple, np.ndarray)) else ():
            out.append({"context": r["context"], "batch": r["batch"], "mode": r["mode"], **dict(timing)})
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    floats = [c for c in ("at", "ms", *GPU_STATE_FIELDS) if c in frame]  # all-NaN fields come back from parquet as None
    frame[floats] = frame[floats].astype(float)
    return frame.sort_values("at", kind="stable").reset_index(drop=True)


def agreement(rows: list[dict]) -> pd.DataFrame:
    """Per point and mode: the share of generated tokens equal to dense speculative decoding's, position by
    position, and the mean first divergence (tokens)."""
    out = []
    frame = pd.DataFrame(rows)
    for (context, batch), group in frame.groupby(["context", "batch"]):
        ref = group[group["mode"] == "dense"]
        dense = _sequences(ref["tokens"].iloc[0]) if not ref.empty and "tokens" in ref else None
        if dense is None:
            continue
        for _, r in group.iterrows():
            tokens = _sequences(r.get("tokens"))
            if tokens is None:
                continue
            same = [sum(a == b for a, b in zip(x, y)) / max(1, len(x)) for x, y in zip(tokens, dense)]
            first = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(tokens, dense)]
            out.append({"context": context, "batch": batch, "mode": r["mode"], "match_rate": statistics.fmean(same),
                        "first_divergence": statistics.fmean(first)})
    return pd.DataFrame(out)


def _dense_hidden(pair, ids: torch.Tensor) -> torch.Tensor:
    """The verifier's final hidden states ``(N, d)`` of ``ids (N,)``: one dense prefill forward through the graph
    decoder's attention, on its own cache."""
    from ..hooks.graph_attention import GRAPH_ATTENTION, ForwardPlan

    pair.verifier.set_attn_implementation(GRAPH_ATTENTION)  # (as a graph decoder sets it; none may exist yet)
    device = pair.verifier.device
    ids = ids.to(device)[None]
    cache = SequenceKVCache.for_model(pair.verifier, 1, ids.shape[1] + 8)
    return pair.verifier.base_model(input_ids=ids, position_ids=torch.arange(ids.shape[1], device=device)[None],
                                    **cache_kwargs(pair.verifier, cache),
                                    specattn_graph=ForwardPlan("prefill")).last_hidden_state[0]


@torch.inference_mode()
def top2_margin(pair, prompt: torch.Tensor, tokens: list[int], position: int) -> float:
    """The verifier's top-1 minus top-2 logit when predicting generated token ``position``."""
    hidden = _dense_hidden(pair, torch.cat([prompt.cpu(), torch.tensor(tokens[:position], dtype=torch.long)]))
    top = pair.verifier.get_output_embeddings()(hidden[-1]).float().topk(2).values
    return float(top[0] - top[1])


@torch.inference_mode()
def cached_continuation_nll(pair, cache: SequenceKVCache, prompts: torch.Tensor, tokens: list[list[int]],
                            rows: int, chunk_size: int) -> list[float]:
    """:func:`continuation_nll` of every sequence from the verifier's shared cache, which holds the prefill of
    ``prompts (B, L)`` at positions ``[0, L-1)`` (as after :meth:`GraphDecoder.resume`): the generated ``tokens`` (B lists of
    N) are teacher-forced through the dense verifier ``rows`` query tokens per forward (the verify step's shape,
    so on CUDA the decoder's own dense kernel), writing their keys at positions ``>= L-1``, which every mode
    overwrites from there; so the prompt is never re-read by a prefill (at 32K batch 16: 52 small forwards
    instead of 16 prefills of 32K tokens). Summed nats per sequence."""
    from ..hooks.graph_attention import GRAPH_ATTENTION, ForwardPlan

    pair.verifier.set_attn_implementation(GRAPH_ATTENTION)
    device, (batch, length) = pair.verifier.device, prompts.shape
    target = torch.tensor(tokens, dtype=torch.long, device=device)  # (B, N)
    inputs = torch.cat([prompts[:, -1:].to(device), target[:, :-1]], dim=1)  # position L-1 + i predicts token i
    lm_head, nll = pair.verifier.get_output_embeddings(), torch.zeros(batch, dtype=torch.float64, device=device)
    for start in range(0, inputs.shape[1], rows):
        piece = inputs[:, start:start + rows]
        first = length - 1 + start
        cache.set_lengths(torch.full((batch,), first, dtype=torch.long, device=device))
        positions = (first + torch.arange(piece.shape[1], device=device)).expand(batch, -1)
        plan = ForwardPlan("decode", torch.full((batch,), first + piece.shape[1], dtype=torch.int32, device=device),
                           chunk_size)
        hidden = pair.verifier.base_model(input_ids=piece, position_ids=positions, **cache_kwargs(pair.verifier, cache),
                                          specattn_graph=plan).last_hidden_state
        logits = lm_head(hidden).float()
        nll += torch.nn.functional.cross_entropy(logits.transpose(1, 2), target[:, start:start + piece.shape[1]],
                                                 reduction="none").sum(dim=1).double()
    cache.set_lengths(torch.full((batch,), length - 1, dtype=torch.long, device=device))
    return nll.tolist()


@torch.inference_mode()
def continuation_nll(pair, prompt: torch.Tensor, tokens: list[int]) -> float:
    """The dense verifier's summed negative log-likelihood (nats) of the generated ``tokens`` given ``prompt (L,)``
    (as the CPU decoder's ``cont_ppl``, :mod:`specattn.decode.decode_metrics`)."""
    target = torch.tensor(tokens, dtype=torch.long)
    hidden = _dense_hidden(pair, torch.cat([prompt.cpu(), target[:-1]]))[prompt.numel() - 1:]
    logits = pair.verifier.get_output_embeddings()(hidden).float()
    return float(torch.nn.functional.cross_entropy(logits, target.to(logits.device), reduction="sum"))


def lossless(pair, cfg: RealBenchConfig, prompts: torch.Tensor, log) -> pd.DataFrame:
    """Greedy dense speculative decoding vs the verifier's own greedy decoding, and SpecAttn p=1 vs dense, on
    ``prompts (N, L)`` decoded together; one row per prompt and comparison with the first divergence and
    the verifier's top-2 logit margin there (a near-tie explains a bfloat16 difference)."""
    n, length = prompts.shape
    cap = capacity_for(length, cfg.new_tokens, cfg.gamma)
    base = base_settings(cfg)
    outputs = {}
    for label, settings in (("ar", dataclasses.replace(base, gamma=0)), ("dense", base),
                            ("specattn p=1.0", dataclasses.replace(base, p=1.0))):
        dec = GraphDecoder(pair.draft, pair.verifier, settings, n, cap)
        dec.prefill(prompts)
        if dec.device.type == "cuda":
            dec.capture()
        outputs[label] = dec.generate(prompts, cfg.new_tokens, prefilled=True).tokens
        del dec
        free_device_memory()
    rows = []
    for ref, other in (("ar", "dense"), ("dense", "specattn p=1.0")):
        for i in range(n):
            a, b = outputs[ref][i], outputs[other][i]
            first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
            margin = top2_margin(pair, prompts[i], a, first) if first is not None else math.nan
            rows.append({"reference": ref, "compared": other, "prompt": i, "identical": first is None,
                         "first_divergence": first if first is not None else len(a), "top2_margin": margin})
    frame = pd.DataFrame(rows)
    for (ref, other), g in frame.groupby(["reference", "compared"]):
        diff = g[~g.identical]
        log(f"lossless {other} vs {ref}: {int(g.identical.sum())}/{len(g)} identical; divergences at tokens "
            f"{diff.first_divergence.tolist()} with top-2 margins {[round(m, 3) for m in diff.top2_margin]}")
    return frame
