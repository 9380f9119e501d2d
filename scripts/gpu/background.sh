#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: first where Quest's selection spends its time
# (scripts/gpu/profile_quest.py: Quest matched took 8 ms a step more than StreamingLLM in the fourteenth session) and
# the attention launches on cold caches (scripts/gpu/profile_short.py, now with the dense draft's one-row reads: the
# candidates of experiment.draft_split), then the decoder's GPU tests (Quest's page bounds moved to
# decode/quest_pages.py; draft_split: the timed runs rely on them), those the fourteenth session did not run (the
# budgeted chunk choice at the decoder's row lengths, the draft rows, the benchmarks) and the rest of the GPU suite. Each part writes under $GPU_OUT/bg; `done` marks
# the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
gpu_tests() { local f; for f in "$@"; do
  timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/$f.py > "$GPU_OUT/bg/pytest_$f.log" 2>&1
  echo "$f rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_$f.log")"; done; }
step profile_quest   # the parts of Quest's selection, and a step's 28 selections with either chunk choice
timeout 200 python3 scripts/gpu/profile_quest.py > "$GPU_OUT/bg/profile_quest.log" 2>&1
echo "profile_quest rc $?"; tail -n 2 "$GPU_OUT/bg/profile_quest.log"
step profile_short   # the launches on cold caches, now with the draft's dense one-row reads (experiment.draft_split)
timeout 300 python3 scripts/gpu/profile_short.py > "$GPU_OUT/bg/profile_short.log" 2>&1
echo "profile_short rc $?"; tail -n 2 "$GPU_OUT/bg/profile_short.log"
step decoder_tests
timeout 300 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_graph_traces.py tests/test_real_decode.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_evaluator_kernel.py tests/test_stream_read.py \
  > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step new_tests
gpu_tests test_budget_top test_draft_rows test_kernel_bench test_decode_bench
step gpu_suite
gpu_tests test_attention_sparse test_step test_bsr test_attention_flashinfer test_fused_llama test_kernels_nucleus
step done
touch "$GPU_OUT/bg/done"
