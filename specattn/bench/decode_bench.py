"""End-to-end decoding throughput (``python run.py experiment=decode_bench``): autoregressive, dense
speculative decoding and SpecAttn at several kept fractions, on the graph decoder
(:mod:`specattn.decode.graph_engine`), against the roofline (:mod:`specattn.decode.roofline`).

No paper-scale weights reach the GPU machine, so each pair is built from its real shapes with random
weights (bf16, on the device; rotary embeddings at their default base, which moves no byte); with
``fused_layers`` the layers are fused for fewer launches (:func:`specattn.hooks.fused_llama.fuse_llama`). Random
weights make acceptance and attention meaningless, hence two labelled controls in every row: forced
acceptance (the accepted counts cycle through :func:`~specattn.decode.graph_engine.forced_schedule` of
mean ``tau - 1``) and, for SpecAttn, forced density (the selection runs on the draft's real rows, and
each sparse layer then reads a fixed random ``kept`` fraction of the prefix chunks). The KV caches hold
random values (never zeros) and every sequence of the batch sits at the same context length.

Per (pair, batch, context), all modes share the caches and run in one process: each mode's two phases
are captured as CUDA graphs, then ``reps`` times ``steps`` pipelined steps are timed with events (the
host reads each step's accepted counts after launching the next; warm-up excluded); tokens/s is the
median over the reps. Each phase is also replayed alone (and SpecAttn's selection captured alone) to
say where the time goes. The copy bandwidth measured first turns every roofline into tokens/s.
"""

from __future__ import annotations

import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..core.errors import SpecAttnError
from ..decode import roofline
from ..decode.draft_reads import WINDOWED
from ..decode.graph_engine import GraphDecoder, GraphSettings, forced_schedule, free_device_memory
from ..decode.kv_cache import SequenceKVCache

#: LlamaConfig arguments of the paper-scale models (their real shapes)
SHAPES = {
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    # the real pair's shapes (Qwen2.5-Coder-0.5B -> 1.5B, conf/model/qwen_coder.yaml): q/k/v biases, tied embeddings;
    # for launch A/Bs on a machine without the staged weights
    "qwen2.5-coder-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6),
    "qwen2.5-coder-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6),
    # a small pair for the CPU tests of this module
    "tiny-draft": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True),
    "tiny-verifier": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=5, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=300, tie_word_embeddings=False),
}
PAIRS = {  # name -> (draft, verifier)
    "tinyllama-llama2": ("tinyllama-1.1b", "llama-2-7b"),
    "llama3.2-llama3.1": ("llama-3.2-1b", "llama-3.1-8b"),
    "qwen-coder": ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"),
    "tiny": ("tiny-draft", "tiny-verifier"),
}
#: the transformers family of a shape that is not Llama's (its config and causal-LM classes: ``Qwen2Config``, ...)
FAMILY = {"qwen2.5-coder-0.5b": "Qwen2", "qwen2.5-coder-1.5b": "Qwen2"}


@dataclass
class DecodeBenchConfig:
    """Every setting (filled from ``conf/experiment/decode_bench.yaml``; no defaults here)."""

    pairs: tuple[str, ...]
    batches: tuple[int, ...]
    contexts: tuple[int, ...]  # measured in this order within a pair (targets first)
    kept: tuple[float, ...]  # SpecAttn's forced kept fractions
    tau: float  # forced acceptance: mean tokens per step
    gamma: int
    chunk_size: int
    dense_layers: int
    p: float
    head_agg: str
    warmup_steps: int
    reps: int
    steps: int
    profile_reps: int
    max_mem_gib: float
    fused_layers: bool  # fewer launches per layer (specattn.hooks.fused_llama: norms, q/k/v, rotary + cache, MLP)
    device: str  # cuda | cpu (the CPU runs eagerly, for tests)
    dtype: str  # bfloat16 | float32
    seed: int
    draft_reads: tuple[str, ...] = ()  # draft read policies run with SpecAttn at each kept (forced, labelled)
    draft_refresh: int = 8
    draft_window: int = 1024
    draft_sinks: int = 16
    fold_norms: bool = True  # with fused_layers: each layer's RMSNorms folded into its projections (2 launches fewer)
    draft_epilogue_rows: int = 0  # with fused_layers: the draft's one-launch q/k/v + rotary + cache write
    draft_down_split: int = 0  # with fused_layers: the draft's down projection + residual add in one launch (K ranges)


def build_model(name: str, device, dtype):
    """A randomly initialised causal LM of ``SHAPES[name]`` on ``device``, eval mode: ``LlamaForCausalLM``, or the
    ``FAMILY``'s class (``Qwen2ForCausalLM``, with its q/k/v biases)."""
    import transformers

    family = FAMILY.get(name, "Llama")
    config = getattr(transformers, f"{family}Config")(**SHAPES[name], max_position_embeddings=262144)
    with torch.device(device):
        model = getattr(transformers, f"{family}ForCausalLM")(config).to(dtype)
    return model.eval()


def proportional_map(n_draft: int, n_verifier: int) -> tuple[int, ...]:
    from ..core.layer_maps import proportional

    return tuple(proportional(n_draft, n_verifier))


def capacity_for(cfg: DecodeBenchConfig, context: int) -> int:
    """Cache capacity of a point: the context + every step the point runs + margin, in 64-token units."""
    steps = cfg.warmup_steps + cfg.reps * cfg.steps + 2 * cfg.profile_reps + 4
    need = context + steps * (cfg.gamma + 1) + cfg.gamma + 2
    return -(-need // 64) * 64


def point_bytes(cfg, draft_shape, verifier_shape, batch, context) -> int:
    """Device memory a point needs beyond the weights: both caches and SpecAttn's row buffers."""
    cap = capacity_for(cfg, context)
    caches = batch * cap * (draft_shape.kv_bytes_per_token + verifier_shape.kv_bytes_per_token)
    rows = draft_shape.layers * batch * cfg.gamma * cap * (roofline.ROW_BYTES * 3)
    return caches + rows


class Clock:
    """CUDA events on a GPU (device time between marks), ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wait(self, mark) -> None:
        if self.cuda:
            mark.synchronize()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def timed_steps(dec: GraphDecoder, n: int, clock: Clock) -> tuple[float, int]:
    """(ms, tokens) of ``n`` steps; the host reads each step's accepted counts (its one device-to-host
    read) after launching the next step, so the GPU never waits for the host's bookkeeping."""
    kept = torch.empty((n, dec.batch), dtype=torch.long, pin_memory=clock.cuda)
    start = clock.mark()
    marks = []
    for i in range(n):
        dec.step()
        kept[i].copy_(dec.kept, non_blocking=clock.cuda)
        marks.append(clock.mark())
        if i:
            clock.wait(marks[i - 1])
            dec.record(kept[i - 1].tolist())
    clock.wait(marks[-1])
    dec.record(kept[-1].tolist())
    return clock.ms(start, marks[-1]), int((kept + 1).sum())


def phase_ms(fn, reps: int, clock: Clock) -> float:
    """Median ms of ``fn()`` (a graph replay, or an eager call on the CPU) over ``reps`` calls."""
    times = []
    fn()
    for _ in range(reps):
        start = clock.mark()
        fn()
        end = clock.mark()
        clock.wait(end)
        times.append(clock.ms(start, end))
    return statistics.median(times)


def modes(cfg: DecodeBenchConfig, layer_map: tuple[int, ...]) -> list[tuple[str, float, GraphSettings]]:
    """(mode, kept, settings) of every mode a point runs; with ``draft_reads``, SpecAttn at each kept also with
    each draft read policy (the draft's read sets forced to the same kept fraction; window's are its own)."""
    schedule = forced_schedule(cfg.tau, cfg.gamma)
    common = dict(chunk_size=cfg.chunk_size, dense_layers=cfg.dense_layers, head_agg=cfg.head_agg,
                  layer_map=layer_map, forced_kept=schedule)
    out = [("ar", float("nan"), GraphSettings(0, cfg.chunk_size, cfg.dense_layers, cfg.head_agg, layer_map)),
           ("dense", float("nan"), GraphSettings(cfg.gamma, **common))]
    out += [("specattn", k, GraphSettings(cfg.gamma, p=cfg.p, forced_density=k, **common)) for k in cfg.kept]
    policy = dict(draft_refresh=cfg.draft_refresh, draft_window=cfg.draft_window, draft_sinks=cfg.draft_sinks)
    out += [("specattn", k, GraphSettings(cfg.gamma, p=cfg.p, forced_density=k, draft_reads=reads,
                                          forced_draft_density=None if reads in WINDOWED else k, **policy, **common))
            for reads in cfg.draft_reads for k in cfg.kept]
    return out


def bench_mode(draft, verifier, settings: GraphSettings, batch: int, context: int, caches, cfg, clock) -> dict:
    """Throughput and phase times of one mode at one point (see the module docstring)."""
    dec = GraphDecoder(draft, verifier, settings, batch, capacity_for(cfg, context), caches)
    dec.reset_to(context, cfg.seed)
    if clock.cuda:
        dec.capture()
        dec.reset_to(context, cfg.seed)
    for _ in range(cfg.warmup_steps):
        dec.step()
        dec.record(dec.kept.tolist())
    runs = [timed_steps(dec, cfg.steps, clock) for _ in range(cfg.reps)]
    row = {"step_ms": statistics.median(ms / cfg.steps for ms, _ in runs),
           "tokens_per_s": statistics.median(tokens / ms * 1e3 for ms, tokens in runs),
           "tokens_per_step": statistics.median(tokens / cfg.steps for _, tokens in runs)}
    if settings.mode == "specattn":
        n_cols = -(-context // settings.chunk_size)
        row["forced_frac"] = float(dec.forced_lists.n.float().mean()) / n_cols
        now = -(-(sum(dec.host_last) / batch + settings.gamma) // settings.chunk_size)
        row["nucleus_frac"] = float(dec.lists.n.float().mean()) / now  # what the p-nucleus kept (random rows)
    phases = dec.graphs if dec.graphs is not None else (
        ([dec._draft_phase] if settings.gamma else []) + [dec._verify_phase])
    names = (["draft_ms"] if settings.gamma else []) + ["verify_ms"]
    with torch.inference_mode():
        for name, phase in zip(names, phases):
            row[name] = phase_ms(getattr(phase, "replay", phase), cfg.profile_reps, clock)
        if settings.mode == "specattn":
            if clock.cuda:
                from .timing import capture

                graph = capture(dec._select)
                row["select_ms"] = phase_ms(graph.replay, cfg.profile_reps, clock)
                del graph
            else:
                row["select_ms"] = phase_ms(dec._select, cfg.profile_reps, clock)
    del dec
    return row


def bench_point(draft, verifier, pair: str, batch: int, context: int, cfg, bandwidth: float, clock, log) -> list[dict]:
    """Every mode at one (pair, batch, context), sharing one pair of random caches."""
    cap = capacity_for(cfg, context)
    caches = (SequenceKVCache.for_model(verifier, batch, cap), SequenceKVCache.for_model(draft, batch, cap))
    gen = torch.Generator(device=caches[0].keys.device).manual_seed(cfg.seed)
    for cache in caches:
        for buffer in (cache.keys, cache.values):
            buffer.normal_(generator=gen)
    v_shape, d_shape = (roofline.ModelShape.from_config(m.config, m.dtype.itemsize) for m in (verifier, draft))
    layer_map = proportional_map(d_shape.layers, v_shape.layers)
    rows = []
    for mode, kept, settings in modes(cfg, layer_map):
        needed, shared = settings.roofline_layers(v_shape.layers, d_shape.layers)
        base = {"pair": pair, "draft": PAIRS[pair][0], "verifier": PAIRS[pair][1], "batch": batch, "context": context,
                "mode": mode, "kept": kept, "draft_reads": settings.draft_reads, "gamma": settings.gamma,
                "tau": settings.tau or 1.0, "p": settings.p, "needed_layers": needed,
                "bandwidth_TBps": bandwidth / 1e12}
        policy = {} if settings.draft_reads == "dense" else dict(
            draft_reads=settings.draft_reads, draft_kept=kept, draft_refresh=settings.draft_refresh,
            draft_window=settings.draft_window, draft_sinks=settings.draft_sinks, shared_layers=shared)
        parts = roofline.step_bytes(v_shape, d_shape if settings.gamma else None, batch, context, settings.gamma,
                                    None if mode != "specattn" else kept, cfg.dense_layers, needed, cfg.chunk_size,
                                    cap if mode == "specattn" else None, **policy)
        base.update({f"bytes_{k}": v for k, v in parts.items()})
        tokens = batch * (settings.tau or 1.0)
        base["roof_ms"] = parts["total"] / bandwidth * 1e3
        base["roof_tokens_per_s"] = roofline.roofline_tokens_per_s(parts["total"], tokens, bandwidth)
        draft_bytes = parts.get("draft_weights", 0) + parts.get("draft_kv", 0)
        base["draft_roof_ms"] = draft_bytes / bandwidth * 1e3
        base["verify_roof_ms"] = (parts["total"] - draft_bytes) / bandwidth * 1e3
        try:
            base.update(bench_mode(draft, verifier, settings, batch, context, caches, cfg, clock))
            base["roof_frac"] = base["tokens_per_s"] / base["roof_tokens_per_s"]
            log(f"  {pair} B={batch} L={context} {mode}{'' if kept != kept else f' kept={kept}'}: "
                f"{base['tokens_per_s']:.1f} tok/s, {base['step_ms']:.3f} ms/step, {base['roof_frac']:.0%} of roofline")
        except Exception as error:  # noqa: BLE001 (one failed mode must not lose the others)
            base["error"] = f"{type(error).__name__}: {error}"
            log(f"  {pair} B={batch} L={context} {mode} kept={kept}: FAILED {base['error']}\n{traceback.format_exc()}")
        rows.append(base)
    del caches
    return rows


def run_all(cfg: DecodeBenchConfig, log=print, out_csv: Path | None = None) -> dict:
    """Every point of the grid; returns {'hardware', 'bandwidth_TBps', 'results', 'skipped'} (the tables
    come from :mod:`.decode_tables`). ``out_csv`` is rewritten after every point."""
    unknown = [p for p in cfg.pairs if p not in PAIRS]
    if unknown:
        raise SpecAttnError(f"experiment.pairs has {unknown}: choose from {', '.join(PAIRS)}")
    device = torch.device(cfg.device)
    if device.type == "cuda":
        from .timing import hardware, measure_bandwidth, require_gpu

        require_gpu("decode_bench")
        bandwidth, hw = measure_bandwidth(), hardware()
    else:
        bandwidth, hw = 1e11, {"gpu": "none (CPU)"}
    log(f"copy bandwidth {bandwidth / 1e12:.3f} TB/s; {hw}")
    clock = Clock(device)
    dtype = getattr(torch, cfg.dtype)
    rows, skipped = [], []
    for pair in cfg.pairs:
        draft_name, verifier_name = PAIRS[pair]
        tick = time.perf_counter()
        draft, verifier = build_model(draft_name, device, dtype), build_model(verifier_name, device, dtype)
        if cfg.fused_layers:
            from ..hooks.fused_llama import fuse_llama

            fuse_llama(draft, cfg.fold_norms, cfg.draft_epilogue_rows, cfg.draft_down_split)
            fuse_llama(verifier, cfg.fold_norms)
        log(f"{pair}: random {draft_name} + {verifier_name} built in {time.perf_counter() - tick:.1f} s")
        shapes = [roofline.ModelShape.from_config(m.config, m.dtype.itemsize) for m in (draft, verifier)]
        weights = sum(s.weight_bytes + s.vocab * s.hidden * s.dtype_bytes for s in shapes)
        for context in cfg.contexts:
            for batch in cfg.batches:
                need = weights + point_bytes(cfg, *shapes, batch, context)
                if need > cfg.max_mem_gib * 2**30:
                    skipped.append({"pair": pair, "batch": batch, "context": context, "need_gib": need / 2**30})
                    log(f"  {pair} B={batch} L={context}: skipped, needs {need / 2**30:.0f} GiB")
                    continue
                rows += bench_point(draft, verifier, pair, batch, context, cfg, bandwidth, clock, log)
                free_device_memory(device)
                if out_csv is not None:
                    pd.DataFrame(rows).to_csv(out_csv, index=False)
        del draft, verifier
        free_device_memory(device)
    return {"hardware": hw, "bandwidth_TBps": bandwidth / 1e12, "results": pd.DataFrame(rows),
            "skipped": pd.DataFrame(skipped)}
