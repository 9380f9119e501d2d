#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The twenty-second session": the next session's list), started detached by the
# call that assembles the weights: it waits (up to 240 s) for the background job's kernel profile to end, then, with the
# GPU alone: (a) run A (Quest and StreamingLLM matched to SpecAttn p=0.9 at 32K batch 16, the js map; the twentieth
# session ran it on an H100: this is its H200 twin, comparable with the earlier H200 tables; FIRST=none skips it on an
# H100); (b) the map bounded to 10 draft layers beside js at 32K batch 16 (the GPU evaluator found it js's equal in
# quality and reduction on 32 texts with 3 fewer row layers, twenty-second session); (c) the same point with the sparse
# launch at 8 chunks a program at least, not 16 (with the merge reworked in the twenty-second session the kernel profile
# has it no slower than FlashInfer at 14 of 17 shapes, the draft's window read 1.2 us faster a layer: its SpecAttn rows'
# step against (b)'s); then the merge's GPU test files.
# Each step's runs resume from their parts when started again. $1: each decode run's limit (s).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
# every run's point and settings: 32K batch 16, the js map, SpecAttn p=0.9, the draft's layers all under its policy
POINT=("experiment.contexts=[32768]" "experiment.batches=[16]"
       layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml experiment.draft_dense_layers=0
       experiment.match_p=0.9 "experiment.p_values=[0.9]")
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^profile_kernel rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A ran there in the twentieth session
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}"
fi
step max10;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" experiment.matched=false \
               "+experiment.layer_maps.max10=docs/data/h100-real-2026-12-05c/layer_map_js_16k_max10.yaml"
step min_chunks8;  bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" experiment.matched=false \
                     experiment.sparse_split.min_chunks=8
touch "$GPU_OUT/q/min_chunks8.done"
step gpu_tests  # the merge's GPU test files (its launch changed in the twenty-second session; passed there)
TESTS="test_attention_sparse test_graph_methods" bash scripts/gpu/after.sh min_chunks8.done
step done
touch "$GPU_OUT/q/chain.done"
