"""Where a draft phase's time goes (issue 24's 25%-kept anomaly): the random-weight Llama-3.2-1B -> 3.1-8B
pair at 32K tokens, batch 16, as ``experiment=decode_bench`` runs it (forced acceptance and density,
labelled), with a dense draft and with ``draft_reads=first_dense`` at 25% and 10% kept. For each, the draft
phase replayed from its CUDA graph (device ms, median of 5), then one replay and one eager draft phase under
``torch.profiler``: the CUDA kernels by total time in each (CUPTI records the kernels a graph launches), so
a kernel slower inside the graph than outside shows by name. Run on the GPU machine:
``python3 scripts/gpu/profile_draft.py`` (prints tables; about a minute after the models are built)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from specattn.bench.decode_bench import (Clock, DecodeBenchConfig, build_model, capacity_for, modes, phase_ms,
                                         proportional_map)
from specattn.decode.graph_engine import GraphDecoder
from specattn.decode.kv_cache import SequenceKVCache
from specattn.hooks.fused_llama import fuse_llama

BATCH, CONTEXT = 16, 32768
cfg = DecodeBenchConfig(pairs=("llama3.2-llama3.1",), batches=(BATCH,), contexts=(CONTEXT,), kept=(0.25, 0.1),
                        tau=3.0, gamma=4, chunk_size=16, dense_layers=2, p=0.95, head_agg="mean", warmup_steps=2,
                        reps=1, steps=4, profile_reps=5, max_mem_gib=128, fused_layers=True, device="cuda",
                        dtype="bfloat16", seed=0, draft_reads=("first_dense",))
draft, verifier = (build_model(n, "cuda", torch.bfloat16) for n in ("llama-3.2-1b", "llama-3.1-8b"))
fuse_llama(draft, cfg.fold_norms), fuse_llama(verifier, cfg.fold_norms)
cap = capacity_for(cfg, CONTEXT)
caches = (SequenceKVCache.for_model(verifier, BATCH, cap), SequenceKVCache.for_model(draft, BATCH, cap))
for cache in caches:
    for buffer in (cache.keys, cache.values):
        buffer.normal_()
layer_map = proportional_map(draft.config.num_hidden_layers, verifier.config.num_hidden_layers)
for mode, kept, settings in modes(cfg, layer_map):
    if mode == "ar" or (mode == "specattn" and settings.draft_reads == "dense" and kept != 0.25):
        continue
    dec = GraphDecoder(draft, verifier, settings, BATCH, cap, caches)
    dec.reset_to(CONTEXT, 0)
    dec.capture()
    dec.reset_to(CONTEXT, 0)
    for _ in range(3):
        dec.step()
        dec.record(dec.kept.tolist())
    graph = dec.graphs[0]
    replay_ms = phase_ms(graph.replay, 5, Clock(torch.device("cuda")))  # as decode_bench times its phases
    with profile(activities=[ProfilerActivity.CUDA]) as replayed:
        graph.replay()
        torch.cuda.synchronize()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as eager:
        dec._draft_phase()
        torch.cuda.synchronize()
    print(f"\n=== {mode} kept={kept} draft_reads={settings.draft_reads}: draft phase (graph) "
          f"{replay_ms:.2f} ms")
    for name, prof in (("replay", replayed), ("eager", eager)):
        print(f"--- {name}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
    del dec, graph
    torch.cuda.empty_cache()
