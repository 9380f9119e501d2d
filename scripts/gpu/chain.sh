#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-eighth session": the next session's list), started detached by
# the call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then, with
# the GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; its H200
# twin; FIRST=none skips it on an H100); (b) the real table again with the folded norms, decode_real's default since
# the twenty-eighth session (every mode's step 0.5 ms shorter at 32K batch 16): batch 16 and 32 at 32K, 16K, 8K and
# 2K with SpecAttn p=0.9 and 0.95 and Quest and StreamingLLM matched, 32 prompts (batch 32 below 32K is new; about
# 14 minutes against a limit of 10: start it again from a poll, it resumes from its groups); (c) batch 1 at the four
# lengths with every mode, 8 prompts (the table's last batch size: only 32K has run, dense and SpecAttn); then the GPU
# test files. $1: run A's and batch 1's limit (s); the table's twice it.
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
step table;  bash scripts/gpu/decode.sh $(( 2 * ${1:-300} )) "experiment.contexts=[32768,16384,8192,2048]" \
  "experiment.p_values=[0.9,0.95]" "${POINT[@]}" "experiment.batches=[16,32]" "experiment.draft_reads=[]"
touch "$GPU_OUT/q/table.done"
step b1_table;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768,16384,8192,2048]" \
  "experiment.p_values=[0.9,0.95]" "${POINT[@]}" "experiment.batches=[1]" "experiment.draft_reads=[]" \
  experiment.prompts=8
touch "$GPU_OUT/q/b1_table.done"
step gpu_tests  # the decoder's and the kernel's GPU test files (test_fused_llama and test_graph_methods passed in the
#               twenty-eighth session, the kernel's in the twenty-seventh; skipped if the background job passed them)
TESTS="test_fused_llama test_graph_methods test_attention_sparse test_draft_rows" bash scripts/gpu/after.sh b1_table.done
step done
touch "$GPU_OUT/q/chain.done"
