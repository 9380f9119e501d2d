#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-eighth session"), started detached by the call that assembles
# the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then, with the GPU alone: (a) run A
# (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; its H200 twin; FIRST=none skips it on
# an H100); (f) the folded norms' A/B at 32K batch 16 (dense and SpecAttn p=0.9, 32 prompts: the landed layers, then
# `experiment.fold_norms=true` with the lossless check on 32 prompts: two launches fewer a layer, 248 a step); (b) 32K
# batch 1, dense and SpecAttn only, 16 prompts (16 groups of one); (c) batch 4 at 32K, 16K, 8K and 2K with SpecAttn
# p=0.9 and 0.95 and Quest and StreamingLLM matched, 16 prompts (4 groups); then the GPU test files.
# Each step's runs resume from their parts when started again. $1: the A/B's and run A's limit (s); batch 1's and
# batch 4's twice it.
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
step fold_ab  # the same point twice: the landed layers, then the norms folded (with the lossless check)
AB=("${AT32K[@]}" "${POINT[@]}" "experiment.batches=[16]" experiment.matched=false "experiment.draft_reads=[]")
bash scripts/gpu/decode.sh "${1:-300}" "${AB[@]}"
LOSSLESS=32 bash scripts/gpu/decode.sh "${1:-300}" "${AB[@]}" experiment.fold_norms=true
touch "$GPU_OUT/q/fold_ab.done"
step b1;  bash scripts/gpu/decode.sh $(( 2 * ${1:-300} )) "${AT32K[@]}" "${POINT[@]}" "experiment.batches=[1]" \
  experiment.matched=false "experiment.draft_reads=[]" experiment.prompts=16
step b4_table;  bash scripts/gpu/decode.sh $(( 2 * ${1:-300} )) "experiment.contexts=[32768,16384,8192,2048]" \
  "experiment.p_values=[0.9,0.95]" "${POINT[@]}" "experiment.batches=[4]" "experiment.draft_reads=[]" \
  experiment.prompts=16
touch "$GPU_OUT/q/b4_table.done"
step gpu_tests  # the folded norms' and the decoder's GPU tests, then the kernel's (passed in the twenty-seventh session)
TESTS="test_fused_llama test_graph_methods test_attention_sparse test_draft_rows" bash scripts/gpu/after.sh b4_table.done
step done
touch "$GPU_OUT/q/chain.done"
