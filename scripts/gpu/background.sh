#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: first the dynamic ranges' GPU test, then the split
# kernel's program timeline at the read-floor shape and beside it, static and with dynamic ranges
# (scripts/gpu/split_timeline.py: each program's start, start-up and end; equal shares took 40-53 us there,
# twenty-fifth session), then an A/B of launches the timeline may point to (scripts/gpu/ab_kernel.py: the GPU nearly
# alone while the pieces arrive; its "kernel_ab rc" line is what the chain waits for), then Quest's page kernels' GPU
# tests (bounds, fold; bounds in the keys' bfloat16 since the sixteenth stop) and where Quest's selection spends its
# time with them (scripts/gpu/profile_quest.py: bfloat16 and float32 bounds, the float32 GEMMs, the chunk choice's
# dispatch), then the decoder's GPU tests, the sparse kernel's and the step's, and the rest of the GPU suite.
# Each part writes under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
gpu_tests() { local f; for f in "$@"; do
  timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/$f.py > "$GPU_OUT/bg/pytest_$f.log" 2>&1
  echo "$f rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_$f.log")"; done; }
step steal_test  # the dynamic ranges' graph-replay test (twenty-fifth session: written, unrun), before their timings
timeout 120 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider -k "dynamic_ranges" tests/test_attention_sparse.py \
  > "$GPU_OUT/bg/pytest_steal.log" 2>&1
echo "steal_test rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_steal.log")"
step split_timeline  # each split program's start, start-up (its lists known) and end, without and with a share of
#                     the work in dynamic ranges (SplitConfig.steal): at the read-floor shape equal shares took 40-53
#                     us, the slowest setting the kernel's end (twenty-fifth session); at Llama-2-7B batch 4, 25%
#                     (147-186 us) and Llama-3.1-8B batch 1, 25% (the one shape the dependent launch loses)
for shape in "llama-3.1-8b 4 0.25 --steal 0 25 50" "llama-2-7b 4 0.25 --steal 0 25" \
             "llama-3.1-8b 1 0.25 --steal 0 25"; do
  timeout 90 python3 scripts/gpu/split_timeline.py $shape >> "$GPU_OUT/bg/split_timeline.log" 2>&1
  echo "split_timeline $shape rc $?"; done
step kernel_ab  # the dynamic ranges at a quarter and a half of the work (built in the twenty-fifth session, untimed)
#               and 64-key blocks over 3 stages (16 of 17 in the twenty-fifth session's one run, 15 in the
#               twenty-fourth)
timeout 280 python3 scripts/gpu/ab_kernel.py @steal=25 @steal=50 @block_n=64,stages=3 \
  > "$GPU_OUT/bg/ab_kernel.log" 2>&1
echo "kernel_ab rc $?"; tail -n 1 "$GPU_OUT/bg/ab_kernel.log"
step quest_bound     # the page-bound kernel against the float64 definition at the decoder's sizes, then its profile
gpu_tests test_quest_bound test_quest_fold test_budget_top
timeout 200 python3 scripts/gpu/profile_quest.py > "$GPU_OUT/bg/profile_quest.log" 2>&1
echo "profile_quest rc $?"; tail -n 2 "$GPU_OUT/bg/profile_quest.log"
step decoder_tests
timeout 300 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_graph_traces.py tests/test_real_decode.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_evaluator_kernel.py tests/test_stream_read.py \
  > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step gpu_suite
gpu_tests test_attention_sparse test_step test_draft_rows test_kernel_bench test_decode_bench test_bsr \
  test_attention_flashinfer test_fused_llama test_kernels_nucleus
step done
touch "$GPU_OUT/bg/done"
