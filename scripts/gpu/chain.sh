#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-first session": the next session's list), started detached by the
# call that assembles the weights: it waits (up to 240 s) for the background job's kernel profile to end, then, with the
# GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; the twentieth
# session ran it on an H100: this is its H200 twin, comparable with the earlier H200 tables); then, side by side (neither
# is timed), the evaluator's bounded-map alignment (quality.sh align_bounded: the CPU/GPU disagreement on the 7-layer
# map's quality, log in q/align_bounded.log) and the sparse kernel's and the decoder's GPU test files. FIRST=none (on an
# H100, where run A and the 7-layer map beside js ran in the twentieth and twenty-first sessions) skips run A.
# Each step's runs resume from their parts when started again. $1: run A's limit (s); the alignment's is
# quality.sh's ($LIMIT, 780 s).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^profile_kernel rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A and the 7-layer map's twin ran there already
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.batches=[16]" "$MAP" \
               experiment.draft_dense_layers=0 experiment.match_p=0.9 "experiment.p_values=[0.9]"
fi
touch "$GPU_OUT/q/run_a.done"
step align_bounded
if [ -n "$PRECHECK" ]; then bash scripts/gpu/quality.sh align_bounded
else bash scripts/gpu/quality.sh align_bounded > "$GPU_OUT/q/align_bounded.log" 2>&1 & fi
step gpu_tests  # the decoder's GPU test files the background job did not pass before the chain stopped it
TESTS="test_attention_sparse test_graph_methods test_draft_rows test_real_decode test_graph_engine" \
  bash scripts/gpu/after.sh run_a.done
wait
step done
touch "$GPU_OUT/q/chain.done"
