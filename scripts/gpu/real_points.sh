#!/usr/bin/env bash
# Issue 23's real table, point by point, with the GPU alone (docs/gpu.md, "The thirty-eighth session"): each point of
# $POINTS ("context batch" pairs, ";"-separated) with every mode (AR, dense speculative decoding, SpecAttn p=0.9 and
# 0.95, StreamingLLM and Quest matched to SpecAttn p=0.9, SpecAttn p=0.9 with the draft's first_window policy), the js
# map, every draft layer under the policy, 256 tokens, through decode.sh, each in a folder of its own ($GPU_OUT/q/
# real_<context>_b<batch>: a fresh paths.outputs, so nothing is reused from another point's run, and a point started
# again resumes from its finished prompt groups). Prompts a point: $PROMPTS, else 8 at batch 1, 16 at batch 4, 32
# otherwise (the earlier runs' counts). Default POINTS: the points that ran with the draft's two launches (everything
# but 32K batch 16 and 32), batch 16 first. $EXTRA: overrides for every run. $1: the limit of each run (s).
source scripts/gpu/env.sh
set -f
[ -z "$PRECHECK" ] && stop_background 5
DEFAULT="16384 16;8192 16;2048 16;32768 4;16384 4;8192 4;2048 4;32768 1;16384 1;8192 1;2048 1;16384 32;8192 32;2048 32"
IFS=';' read -r -a points <<< "${POINTS:-$DEFAULT}"
Q=$GPU_OUT/q
for point in "${points[@]}"; do
  read -r context batch <<< "$point"
  case "$batch" in 1) n=8 ;; 4) n=16 ;; *) n=32 ;; esac
  step "real_${context}_b${batch}"
  GPU_OUT=$Q/real_${context}_b${batch} WAIT_BG=0 bash scripts/gpu/decode.sh "${1:-330}" \
    "experiment.contexts=[$context]" "experiment.batches=[$batch]" "experiment.prompts=${PROMPTS:-$n}" \
    experiment.draft_dense_layers=0 experiment.match_p=0.9 experiment.draft_window=2048 \
    "experiment.draft_reads=[first_window]" "$JS_MAP" $EXTRA
  [ -z "$PRECHECK" ] && touch "$Q/real_${context}_b${batch}.done"
done
step done
mkdir -p "$Q" && touch "$Q/real_points.done"
