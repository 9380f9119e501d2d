#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: GPU tests of the graph decoder's modes, the
# FlashInfer page-table baseline next to our kernel, and the random-weight decoding benchmark of the
# draft read policies. Each part writes under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step tests
timeout 420 python3 -m pytest -q -rfE -x -n 8 -m gpu -p no:cacheprovider tests/test_graph_methods.py \
  tests/test_graph_engine.py tests/test_fused_llama.py > "$GPU_OUT/bg/pytest.log" 2>&1; echo "pytest rc $?"
tail -n 5 "$GPU_OUT/bg/pytest.log"
step kernel_bench
spec 600 experiment=kernel_bench "experiment.parts=[attention]" "experiment.models=[llama-3.1-8b,llama-2-7b]" \
  "experiment.batches=[1,4,16]" "experiment.attn_lengths=[32768]" "experiment.densities=[0.25,0.1]" \
  > "$GPU_OUT/bg/kernel_bench.log" 2>&1; echo "kernel_bench done"
step decode_bench
spec 900 experiment=decode_bench "experiment.contexts=[32768,131072]" "experiment.batches=[4,16]" \
  "experiment.kept=[0.25,0.1]" "experiment.draft_reads=[first_dense,reuse,window]" \
  > "$GPU_OUT/bg/decode_bench.log" 2>&1; echo "decode_bench done"
step done
touch "$GPU_OUT/bg/done"
