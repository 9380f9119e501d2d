"""Where the real pair's step time goes, class by class against the bytes each class must read: the ~5 ms a 32K
batch-16 step spends above its byte floor in every speculative mode (docs/benchmarks.md, thirty-first and
thirty-second sessions).

qwen_coder's staged weights, python_packages prompts, the modes of ``experiment=decode_real`` at one point (by default
the measured policy point: AR, dense speculative decoding, SpecAttn p=0.9 and SpecAttn p=0.9 with the first_window
draft (2,048-key window, every draft layer under it), the js map; any decode_real override replaces its default). For
each mode: its step time in a full decoding of the group (256 new tokens, as the tables time it), then each phase
(draft, verify) replayed from its CUDA graph (median ms of 5) and profiled in one replay (CUPTI records the kernels a
graph launches), split by :func:`specattn.bench.phase_profile.phase_breakdown` into the kernel classes' time against
their byte floors (the roofline's components at the measured kept fractions over the measured read bandwidth), the
gaps between kernels and the replay's start, with the kernels of most time. The step in the full decoding less the
two phases replayed alone is printed too (within 0.3-0.44 ms at 32K: each replay alone carries its own start).

Run on the GPU machine after the staging: ``python3 scripts/gpu/profile_real.py [CONTEXT] [BATCH] [OVERRIDES...]
[--csv=FILE]`` (defaults 32768 16; ``--csv``: every breakdown row, with its mode and phase, to a CSV).
``python scripts/gpu/profile_real.py 256 2 --tiny`` runs the same code on the CPU with the tiny random pair (eager
phases, no graphs, operators in place of kernels: a smoke check of the script, not a measurement)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.bench.decode_bench import Clock, phase_ms  # noqa: E402
from specattn.bench.phase_profile import Kernel, floor_bytes, phase_breakdown, top_kernels  # noqa: E402
from specattn.bench.real_decode import PointRunner, modes, roofline_row  # noqa: E402
from specattn.data.windows import token_windows  # noqa: E402
from specattn.experiments.decode_real import bench_config, fuse_pair  # noqa: E402
from specattn.experiments.evaluation import layer_mapping, load_pair_for  # noqa: E402
from specattn.runs.validate import register_resolvers  # noqa: E402

#: the measured policy point (docs/benchmarks.md, thirty-first session); an override of the same key replaces one
DEFAULTS = ("experiment.p_values=[0.9]", "experiment.match_p=0.9", "experiment.matched=false",
            "experiment.draft_reads=[first_window]", "experiment.draft_window=2048", "experiment.draft_dense_layers=0",
            "layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml")
TINY = ("model=tiny_random", "dataset=python_source", "device=cpu", "dtype=float32", "experiment.draft_window=64",
        "experiment.draft_sinks=8", "layer_map=proportional")


def overrides_with(defaults: tuple[str, ...], extra: list[str]) -> list[str]:
    """``defaults`` with each key that ``extra`` sets replaced by its value there, then ``extra``'s other keys."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in extra}
    return [o for o in defaults if o.split("=", 1)[0] not in keys] + list(extra)


def replay_kernels(run, cuda: bool) -> list[Kernel]:
    """The kernels (CUDA) or operators (CPU) of one call of ``run``, with their start and end (us)."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    return [Kernel(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
            if (e.device_type.name == "CUDA") == cuda]


def main(context: int, batch: int, tiny: bool, extra: list[str], csv: str | None) -> None:
    register_resolvers()
    base = ("model=qwen_coder", "dataset=python_packages", "device=cuda", "dtype=bfloat16", "experiment=decode_real")
    overrides = overrides_with(tuple(overrides_with(base + DEFAULTS, list(TINY) if tiny else [])), extra)
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    documents = instantiate(cfg.dataset.source).documents()
    pair = load_pair_for(cfg)
    if not tiny:
        fuse_pair(pair, cfg.experiment)  # as decode_real fuses them (its default: norms folded)
    bench = bench_config(cfg, layer_mapping(cfg, pair))
    cuda = pair.verifier.device.type == "cuda"
    if cuda:
        from specattn.bench.timing import measure_read_bandwidth

        bandwidth = measure_read_bandwidth()
    else:
        bandwidth = 1e11  # nominal: the CPU smoke check's floors mean nothing
    print(f"overrides {overrides}\nread bandwidth {bandwidth / 1e12:.3f} TB/s{' (nominal)' if not cuda else ''}; "
          f"split {bench.split}, sparse_split {bench.sparse_split}, draft_split {bench.draft_split}")
    prompts = torch.stack([s.input_ids for s in token_windows(documents, pair.tokenizer, context, batch, "profile")])
    runner = PointRunner(pair, bench, context, batch, bandwidth, print)
    runner.prefill(prompts)
    rows = []
    for label, settings in modes(bench, 0.4):
        full = runner.run_mode(label, settings, prompts)  # captures (CUDA) and decodes the group once, timed
        dec = runner.decoders[label]
        dec.resume(prompts)
        for _ in range(3):
            dec.step()
            dec.record(dec.kept.tolist())
        verifier_kept, draft_kept = dec.kept_fractions()
        tau = 1 + full["accepted_steps"] / full["steps"]  # tokens a sequence gains a step
        parts = {k.removeprefix("bytes_"): v for k, v in roofline_row(
            bench, settings, runner.v_shape, runner.d_shape, batch, context, tau, verifier_kept, draft_kept,
            bandwidth).items() if k.startswith("bytes_")}
        phases = dict(zip(("draft", "verify") if dec.draft is not None else ("verify",),
                          dec.graphs if cuda else ((dec._draft_phase, dec._verify_phase) if dec.draft is not None
                                                   else (dec._verify_phase,))))
        walls = {}
        for phase, graph in phases.items():
            run = graph.replay if cuda else torch.inference_mode()(graph)
            walls[phase] = phase_ms(run, 5, Clock(pair.verifier.device))
            kernels = replay_kernels(run, cuda)
            table = phase_breakdown(kernels, walls[phase], floor_bytes(parts, phase), bandwidth)
            rows.append(table.assign(mode=label, phase=phase, step_ms=full["step_ms"], tau=tau, kept=verifier_kept,
                                     read_tbs=bandwidth / 1e12))
            print(f"\n=== {label}, {context} tokens, batch {batch}: {phase} phase, {walls[phase]:.3f} ms "
                  f"(median of 5), "
                  f"{len(kernels)} {'kernels' if cuda else 'operators'} in one replay")
            print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
            print(top_kernels(kernels).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        phase_sum = sum(walls.values())
        print(f"\n=== {label}: step {full['step_ms']:.3f} ms in the timed decoding (tau {tau:.2f} tokens a "
              f"sequence, kept {verifier_kept:.3f} / draft {draft_kept:.3f}); phases replayed alone {phase_sum:.3f} ms "
              f"(step less phases {full['step_ms'] - phase_sum:.3f} ms); "
              f"byte floor {parts['total'] / bandwidth * 1e3:.3f} ms")
    if csv:
        pd.concat(rows, ignore_index=True).to_csv(csv, index=False)
        print(f"breakdown rows: {csv}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--") and "=" not in a]
    csv_out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--csv=")), None)
    main(int(args[0]) if args else 32768, int(args[1]) if len(args) > 1 else 16, "--tiny" in sys.argv,
         [a for a in sys.argv[1:] if "=" in a and not a.startswith("--")], csv_out)
