#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The thirtieth session": the next session's list), started detached by the
# call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then, with the
# GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; its H200 twin;
# FIRST=none skips it on an H100); (b) the draft read policies on the current kernel with the norms folded
# (scripts/gpu/breadth.sh: first_window with its 2,048-key window and reuse, every draft layer under the policy, under
# SpecAttn p=0.9, beside AR, dense speculative decoding and SpecAttn p=0.9 / 0.95 of the same run, 32 prompts) at 32K
# batch 16 and 32, 16K and 8K batch 16 (on an H100 first in the thirty-first session, docs/benchmarks.md; before, H200
# runs of the fifteenth and eighteenth sessions); then the GPU test files. $1: each run's limit (s); $POLICY_POINTS:
# (b)'s points when fewer fit the session's device time (breadth.sh's POINTS format).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^kernel_ab rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A ran there in the twentieth session
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.p_values=[0.9]" \
  layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml experiment.draft_dense_layers=0 \
  experiment.match_p=0.9 "experiment.batches=[16]"
fi
step policies;  POINTS="${POLICY_POINTS:-32768 16;32768 32;16384 16;8192 16}" EXTRA="experiment.match_p=0.9" \
  REFRESH16=0 bash scripts/gpu/breadth.sh "${1:-300}"
touch "$GPU_OUT/q/policies.done"
step gpu_tests  # the decoder's and the kernel's GPU test files (skipped if the background job passed them)
TESTS="test_real_decode test_graph_methods test_attention_sparse test_draft_rows" bash scripts/gpu/after.sh policies.done
step done
touch "$GPU_OUT/q/chain.done"
