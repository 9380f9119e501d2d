#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: the GPU tests, then the attention kernels
# (ours, FlashInfer's page table, dense) at the drafts' shapes (head dim 64, gamma=1: the 2 query rows of a
# draft forward) and the verifiers' (gamma=4), with the streaming-read floor. Each part writes under
# $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step tests
timeout 300 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_stream_read.py \
  tests/test_graph_methods.py tests/test_graph_engine.py tests/test_fused_llama.py > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step kernel_drafts
spec 200 experiment=kernel_bench gamma=1 "experiment.parts=[attention]" \
  "experiment.models=[llama-3.2-1b,qwen2.5-coder-0.5b]" "experiment.batches=[4,16]" \
  "experiment.attn_lengths=[32768]" "experiment.densities=[0.5,0.25,0.1]" > "$GPU_OUT/bg/kernel_drafts.log" 2>&1
step kernel_verifiers
spec 200 experiment=kernel_bench "experiment.parts=[attention]" \
  "experiment.models=[qwen2.5-coder-1.5b,llama-3.1-8b,llama-2-7b]" "experiment.batches=[1,4,16]" \
  "experiment.attn_lengths=[32768]" "experiment.densities=[0.25,0.1]" > "$GPU_OUT/bg/kernel_verifiers.log" 2>&1
step done
touch "$GPU_OUT/bg/done"
