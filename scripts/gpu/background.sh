#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: the split kernel over short lists on cold caches
# (scripts/gpu/profile_short.py: it picks the sparse launch of the run after the staging), the draft-row and split
# kernels' GPU tests and the decoder's (what changed first), every other GPU test file (each with its own summary
# line), the draft-row recompute's launches (scripts/gpu/profile_rows.py), then the split kernel's per-kernel
# profile beside FlashInfer (scripts/gpu/profile_kernel.py) and the kernel benchmark beside FlashInfer (quality.sh
# kernel_fi_tuned). Each part writes under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step profile_short   # the split launches over short lists and sparse selections, caches cold as in the decoder
timeout 300 python3 scripts/gpu/profile_short.py > "$GPU_OUT/bg/profile_short.log" 2>&1
echo "profile_short rc $?"; tail -n 2 "$GPU_OUT/bg/profile_short.log"
step kernel_tests   # the split kernel's and the draft-row kernel's correctness on the GPU, then the decoder's
timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_draft_rows.py \
  > "$GPU_OUT/bg/pytest_test_draft_rows.log" 2>&1
echo "test_draft_rows rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_test_draft_rows.log")"
timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_attention_sparse.py \
  > "$GPU_OUT/bg/pytest_test_attention_sparse.log" 2>&1
echo "test_attention_sparse rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_test_attention_sparse.log")"
step tests
timeout 300 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_graph_traces.py tests/test_real_decode.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_evaluator_kernel.py tests/test_stream_read.py \
  > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step gpu_suite   # the rest of the GPU tests, one file per pytest run (a file cut by the limit loses only its own summary)
for f in test_kernel_bench test_decode_bench test_step test_fused_llama test_bsr test_attention_flashinfer \
         test_kernels_nucleus; do
  timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/$f.py > "$GPU_OUT/bg/pytest_$f.log" 2>&1
  echo "$f rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_$f.log")"
done
step profile_rows     # the draft-row recompute at every launch of its sweep (real pair's draft shapes)
timeout 150 python3 scripts/gpu/profile_rows.py > "$GPU_OUT/bg/profile_rows.log" 2>&1
echo "profile_rows rc $?"; tail -n 2 "$GPU_OUT/bg/profile_rows.log"
step profile_kernel   # timings while the GPU has nothing else to do (the weights arrive meanwhile)
timeout 300 python3 scripts/gpu/profile_kernel.py > "$GPU_OUT/bg/profile_kernel.log" 2>&1
echo "profile_kernel rc $?"; tail -n 2 "$GPU_OUT/bg/profile_kernel.log"
step kernel_fi   # the kernel benchmark beside FlashInfer's page table at the tuned configuration (quality.sh kernel_fi
                 # tunes first: 5 minutes)
LIMIT=${KERNEL_FI_LIMIT:-240} bash scripts/gpu/quality.sh kernel_fi_tuned > "$GPU_OUT/bg/kernel_fi.log" 2>&1
tail -n 3 "$GPU_OUT/bg/kernel_fi.log"
step done
touch "$GPU_OUT/bg/done"
