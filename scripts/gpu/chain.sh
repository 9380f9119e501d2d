#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The nineteenth stop": the next session's list), started detached by the
# call that assembles the weights: it waits (up to 240 s) for the background job's kernel profile to end, then, with the
# GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map), (b) the same
# point unmatched with every merge launch capped at 128 registers (merge_registers: 4 merge programs an SM; its step
# times against run A's, same machine), (c) the bounded maps (maps.sh) at 16K and 8K batch 16 and at 32K batch 4 (does
# the 7-layer map's gain at 32K batch 16 hold?), then the sparse kernel's and the decoder's GPU test files. Each step's
# runs resume from their parts when started again. $1: each run's limit (s).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^profile_kernel rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.batches=[16]" "$MAP" \
               experiment.draft_dense_layers=0 experiment.match_p=0.9 "experiment.p_values=[0.9]"
step merge_cap; bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.batches=[16]" "$MAP" \
               experiment.draft_dense_layers=0 experiment.match_p=0.9 "experiment.p_values=[0.9]" experiment.matched=false \
               experiment.split.merge_registers=128 experiment.sparse_split.merge_registers=128 \
               experiment.draft_split.merge_registers=128
for point in "16384 16" "8192 16" "32768 4"; do
  step "maps $point"; POINT="$point" bash scripts/gpu/maps.sh "${1:-300}"
done
step gpu_tests  # the decoder's GPU test files the background job did not pass before the chain stopped it
TESTS="test_attention_sparse test_graph_methods test_draft_rows test_real_decode test_graph_engine" \
  bash scripts/gpu/after.sh maps.done
step done
touch "$GPU_OUT/q/chain.done"
