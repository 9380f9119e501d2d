#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: the GPU tests (the decoder's cached continuation
# scorer among them), then the random-weight draft read policies of issue 24 (forced acceptance and density,
# labelled) with first_window. Each part writes under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step tests
timeout 240 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_real_decode.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_evaluator_kernel.py tests/test_stream_read.py \
  > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step decode_bench
spec 420 experiment=decode_bench "experiment.contexts=[32768,131072]" "experiment.batches=[4,16]" \
  "experiment.kept=[0.25,0.1]" "experiment.draft_reads=[first_dense,reuse,window,first_window]"
step done
touch "$GPU_OUT/bg/done"
