#!/usr/bin/env bash
# Issue 24's breadth with the GPU alone (docs/gpu.md, "The thirteenth session"): first_window (2,048-key window) and
# reuse at their best 32K settings (every draft layer under the policy, decode_real's sparse launch) in one run per
# point, each against dense speculative decoding, autoregressive decoding and SpecAttn p=0.9/0.95 of the same run:
# 32K batch 16, 32K batch 32, 16K batch 16, 8K batch 16, then reuse refreshing every 16 steps at 32K batch 16.
# $1: the limit of each run (s). Each run resumes from its parts when started again.
source scripts/gpu/env.sh
stop_background 60
MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
BEST=("$MAP" experiment.matched=false experiment.draft_dense_layers=0 experiment.draft_window=2048)
step() { echo "== $1 $(date +%T)"; }
for point in "32768 16" "32768 32" "16384 16" "8192 16"; do
  set -- "${1:-300}" $point
  step "both_policies_${2}_b${3}"
  bash scripts/gpu/decode.sh "$1" "experiment.contexts=[$2]" "experiment.batches=[$3]" "${BEST[@]}" \
    "experiment.draft_reads=[first_window,reuse]"
done
step reuse_refresh_16
bash scripts/gpu/decode.sh "$1" "experiment.contexts=[32768]" "experiment.batches=[16]" "${BEST[@]}" \
  "experiment.draft_reads=[reuse]" experiment.draft_refresh=16
step done
mkdir -p "$GPU_OUT/q" && touch "$GPU_OUT/q/breadth.done"
