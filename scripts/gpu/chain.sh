#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-fourth session": the next session's list), started detached by
# the call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then,
# with the GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; the
# twentieth session ran it on an H100: this is its H200 twin, comparable with the earlier H200 tables; FIRST=none skips
# it on an H100); (b) the js point at 32K batch 16, the first end-to-end timing of the twenty-third and twenty-fourth
# sessions' kernel (the merge at one row a program with its rounds sized to the lists and launched as the split's
# programmatic dependent, the split's chunk ids loaded a block ahead, the sparse launch at 8 chunks a program); (c) the
# same at batch 4, where a verifier list's partials now merge in one round of 32 (two of 16 before: the kernel
# profile's batch-1 gain; compare with the twentieth session's 32K batch 4 run); then the kernel's GPU test files.
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
step js_b16;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[16]" experiment.matched=false
step js_b4;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[4]" experiment.matched=false
if [ -s "$GPU_OUT/q/steal" ]; then  # written by a poll call once the A/B shows a dynamic-range setting winning
step js_b16_steal;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.batches=[16]" \
  experiment.matched=false "experiment.sparse_split.steal=$(cat "$GPU_OUT/q/steal")"
fi
touch "$GPU_OUT/q/js_b4.done"
step gpu_tests  # the kernel's GPU test files (changed in the twenty-third and twenty-fourth sessions; passed there)
TESTS="test_attention_sparse test_graph_methods test_draft_rows" bash scripts/gpu/after.sh js_b4.done
step done
touch "$GPU_OUT/q/chain.done"
