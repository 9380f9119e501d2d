#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-ninth session": the next session's list), started detached by
# the call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then, with
# the GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; its H200
# twin; FIRST=none skips it on an H100); (b) 32K at batch 16 then 32 in one process, every mode, 32 prompts, norms
# folded: the twenty-ninth session's table ran out of memory there (the batch-16 point's caches were still allocated:
# fixed by free_device_memory), so this is both the fix's check on the GPU and the folded 32K batch-32 row; (c) batch
# 4 at the four lengths with the fold, every mode, 16 prompts (the table's one batch size still unfolded); then the GPU
# test files. $1: run A's and batch 4's limit (s); (b)'s twice it.
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
# every run's settings: the js map, Quest and StreamingLLM matched to SpecAttn p=0.9, every draft layer under its policy
POINT=(layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml experiment.draft_dense_layers=0
       experiment.match_p=0.9)
AT32K=("experiment.contexts=[32768]" "experiment.p_values=[0.9]")
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^kernel_ab rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A ran there in the twentieth session
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "${AT32K[@]}" "${POINT[@]}" "experiment.batches=[16]"
fi
step b32;  bash scripts/gpu/decode.sh $(( 2 * ${1:-300} )) "experiment.contexts=[32768]" "experiment.p_values=[0.9,0.95]" \
  "${POINT[@]}" "experiment.batches=[16,32]" "experiment.draft_reads=[]"
touch "$GPU_OUT/q/b32.done"
step b4_table;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768,16384,8192,2048]" \
  "experiment.p_values=[0.9,0.95]" "${POINT[@]}" "experiment.batches=[4]" "experiment.draft_reads=[]" \
  experiment.prompts=16
touch "$GPU_OUT/q/b4_table.done"
step gpu_tests  # the decoder's and the kernel's GPU test files (test_graph_methods passed in the twenty-eighth session,
#               the kernel's in the twenty-seventh; skipped if the background job passed them)
TESTS="test_real_decode test_graph_methods test_attention_sparse test_draft_rows" bash scripts/gpu/after.sh b4_table.done
step done
touch "$GPU_OUT/q/chain.done"
