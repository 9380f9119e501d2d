"""Where the real pair's step time goes (issue 24): the fixed ~6-8 ms per step that the byte roofline does not
count (docs/benchmarks.md, fourth session: ``specattn.results.step_costs``). qwen_coder's staged weights,
python_packages prompts, batch 16, as ``experiment=decode_real`` runs them; for each mode: the draft and verify
phases replayed from their CUDA graphs (median ms of 5), each phase's kernel count, and the kernels by total
time in one replay of each (CUPTI records the kernels a graph launches). Run on the GPU machine after the
staging: ``python3 scripts/gpu/profile_real.py [CONTEXT] [BATCH] [OVERRIDES...]`` (defaults 32768 16; Hydra
overrides such as ``layer_map=FILE.yaml`` or ``experiment.sparse_split.ctas_per_sm=4`` /
``experiment.draft_dense_layers=0`` (decode_real's kernel and draft settings) after them; prints tables). first_window
runs twice: row 0 from forward 0's saved scores (the default) and from the keys again (``row0_from_scores=False``);
Quest matched to 40% of the reads runs last (its selection per sparse layer: the page bounds' kernel, the chunk choice
by ``methods.budget.top_chunks``'s dispatch, the lists, and the step's fold of its keys into the bounds).
``python scripts/gpu/profile_real.py 256 2 --tiny`` runs the same code on the CPU with the tiny random pair
(eager phases, no graphs: a smoke check of the script, not a measurement)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from specattn.bench.decode_bench import Clock, phase_ms  # noqa: E402
from specattn.bench.real_decode import PointRunner, RealBenchConfig, modes  # noqa: E402
from specattn.data.windows import token_windows  # noqa: E402
from specattn.experiments.decode_real import kernel_launch  # noqa: E402
from specattn.experiments.evaluation import layer_mapping, load_pair_for  # noqa: E402
from specattn.gpu.kernels.rows_config import RowsConfig  # noqa: E402
from specattn.gpu.kernels.split_config import SplitConfig  # noqa: E402
from specattn.runs.validate import register_resolvers  # noqa: E402

FIRST_WINDOW = "specattn p=0.95 draft=first_window"
KEYS_ROW0 = f"{FIRST_WINDOW} (row 0 from the keys)"
QUEST = "quest match=specattn p=0.95"  # at 40% of the reads: where Quest's verify phase goes (its per-layer selection)
MODES = ("ar", "dense", "specattn p=0.95", "specattn p=0.95 draft=window", FIRST_WINDOW, KEYS_ROW0, QUEST)


def main(context: int, batch: int, tiny: bool, extra: list[str]) -> None:
    register_resolvers()
    overrides = (["model=tiny_random", "dataset=python_source", "device=cpu", "dtype=float32"] if tiny else
                 ["model=qwen_coder", "dataset=python_packages", "device=cuda", "dtype=bfloat16"]) + [
        "experiment=decode_real"] + extra
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    documents = instantiate(cfg.dataset.source).documents()
    pair = load_pair_for(cfg)
    if not tiny:
        from specattn.hooks.fused_llama import fuse_llama

        fold = bool(cfg.experiment.fold_norms)  # decode_real's setting (its default: folded)
        fuse_llama(pair.draft, fold), fuse_llama(pair.verifier, fold)
    bench = RealBenchConfig((context,), (batch,), batch, 256, (0.95,), 0.95, ("window", "first_window"), 8, 1024, 16,
                            int(cfg.gamma), int(cfg.chunk_size), int(cfg.dense_layers), "mean",
                            tuple(layer_mapping(cfg, pair)), not tiny, 120.0, 0)
    e = cfg.experiment
    bench = dataclasses.replace(bench, split=kernel_launch(e, "split", SplitConfig),
                                sparse_split=kernel_launch(e, "sparse_split", SplitConfig),
                                draft_split=kernel_launch(e, "draft_split", SplitConfig),
                                rows=kernel_launch(e, "rows", RowsConfig), draft_dense_layers=e.draft_dense_layers)
    print(f"split {bench.split}, sparse_split {bench.sparse_split}, draft_split {bench.draft_split}, rows {bench.rows}, "
          f"draft_dense_layers {bench.draft_dense_layers} (None: the defaults)")
    if tiny:
        bench = dataclasses.replace(bench, draft_window=64, draft_sinks=8)
    prompts = torch.stack([s.input_ids for s in token_windows(documents, pair.tokenizer, context, batch, "profile")])
    runner = PointRunner(pair, bench, context, batch, 1e12, print)
    runner.prefill(prompts)
    cuda = pair.verifier.device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    settings = dict(modes(bench, 0.4))
    settings[KEYS_ROW0] = dataclasses.replace(settings[FIRST_WINDOW], row0_from_scores=False)
    for label in MODES:
        runner.run_mode(label, settings[label], prompts)  # captures (CUDA) and decodes once: warm
        dec = runner.decoders[label]
        dec.resume(prompts)
        for _ in range(3):
            dec.step()
            dec.record(dec.kept.tolist())
        phases = dict(zip(("draft", "verify") if dec.draft is not None else ("verify",),
                          dec.graphs if cuda else ((dec._draft_phase, dec._verify_phase) if dec.draft is not None
                                                   else (dec._verify_phase,))))
        print(f"\n=== {label}, {context} tokens, batch {batch}")
        for phase, graph in phases.items():
            run = graph.replay if cuda else torch.inference_mode()(graph)
            ms = phase_ms(run, 5, Clock(pair.verifier.device))
            with torch.inference_mode(), profile(activities=activities) as prof:
                run()
                if cuda:
                    torch.cuda.synchronize()
            events = [e for e in prof.events() if (e.device_type.name == "CUDA") == cuda]
            print(f"--- {phase} phase: {ms:.3f} ms (median of 5), {len(events)} "
                  f"{'kernels' if cuda else 'ops'} in one replay")
            print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=12,
                                            max_name_column_width=60))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--") and "=" not in a]
    main(int(args[0]) if args else 32768, int(args[1]) if len(args) > 1 else 16, "--tiny" in sys.argv,
         [a for a in sys.argv[1:] if "=" in a])
