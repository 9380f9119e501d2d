#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-sixth session": the next session's list), started detached by
# the call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then,
# with the GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; the
# twentieth and twenty-sixth sessions ran it on an H100: this is its H200 twin, comparable with the earlier H200 tables;
# FIRST=none skips it on an H100); (b) the js point at 32K batch 16 with the lossless check on 32 prompts (last run in
# the twelfth session: the merge and its launch changed the order of additions since, and tau with it); (c) the js
# point at 32K batch 4, dense and SpecAttn only, 32 prompts (the twenty-sixth session's every-mode run at batch 4 did
# not fit 300 s: 8 modes of 8 groups); then the kernel's GPU test files.
# Each step's runs resume from their parts when started again. $1: each decode run's limit (s).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
# every run's settings: 32K, the js map, SpecAttn p=0.9, the draft's layers all under its policy
POINT=("experiment.contexts=[32768]" layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
       experiment.draft_dense_layers=0 experiment.match_p=0.9 "experiment.p_values=[0.9]")
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^kernel_ab rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A ran there in the twentieth session
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[16]"
fi
step lossless;  LOSSLESS=32 bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[16]" \
  experiment.matched=false "experiment.draft_reads=[]"
step js_b4;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[4]" experiment.matched=false \
  "experiment.draft_reads=[]"
touch "$GPU_OUT/q/js_b4.done"
step gpu_tests  # the kernel's GPU test files (passed in the twenty-sixth session; skipped where the background passed them)
TESTS="test_attention_sparse test_graph_methods test_draft_rows test_gather_read" bash scripts/gpu/after.sh js_b4.done
step done
touch "$GPU_OUT/q/chain.done"
