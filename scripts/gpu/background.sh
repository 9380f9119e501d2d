#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: the decoder's GPU tests first, then every other
# GPU test file (483 GPU tests in all), each with its own summary line in background.log. Each part writes
# under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step tests
timeout 240 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_real_decode.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_evaluator_kernel.py tests/test_stream_read.py \
  > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step gpu_suite   # the rest of the GPU tests, one file per pytest run (a file cut by the limit loses only its own summary)
for f in test_step test_draft_rows test_attention_sparse test_bsr test_attention_flashinfer test_fused_llama \
         test_kernels_nucleus test_kernel_bench test_decode_bench; do
  timeout 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/$f.py > "$GPU_OUT/bg/pytest_$f.log" 2>&1
  echo "$f rc $? $(tail -n 1 "$GPU_OUT/bg/pytest_$f.log")"
done
step done
touch "$GPU_OUT/bg/done"
