#!/usr/bin/env bash
# Issue 23's real table, point by point, with the GPU alone (docs/gpu.md, "The thirty-eighth session"): each point of
# $POINTS ("context batch" pairs, ";"-separated) with every mode (AR, dense speculative decoding, SpecAttn p=0.9 and
# 0.95, StreamingLLM and Quest matched to SpecAttn p=0.9, SpecAttn p=0.9 with the draft's first_window policy), the js
# map, every draft layer under the policy, 256 tokens, through decode.sh, each in a folder of its own ($GPU_OUT/q/
# real_<context>_b<batch>: a fresh paths.outputs, so nothing is reused from another point's run, and a point started
# again resumes from its finished prompt groups). Prompts a point: $PROMPTS, else 8 at batch 1, 16 at batch 4, 32
# otherwise (the earlier runs' counts). Default POINTS: the points whose rows in the real table ($TABLE, default
# docs/data/real_table.md) say the draft's projections did not run as one launches (the column "draft one launches"),
# the largest batch first, then the longest context. $EXTRA: overrides for every run. $1: the limit of each run (s).
# DATASET and LOSSLESS reach decode.sh (e.g. DATASET=gutenberg: the shipped books; LOSSLESS=32: the lossless check).
source scripts/gpu/env.sh
set -f
[ -z "$PRECHECK" ] && stop_background 5
TABLE=${TABLE:-docs/data/real_table.md}
# a point's first row: "| 16K, 32 | AR | ... | no |"; its last column is "draft one launches"
DEFAULT=$(awk -F' [|] ' '/^[|] [0-9]+K, [0-9]+ [|]/ && $NF ~ /^no [|]/ {
            split(substr($1, 3), cb, "K, "); print cb[2], cb[1] * 1024 }' "$TABLE" |
          sort -k1,1nr -k2,2nr | awk '{printf "%s%s %s", (NR > 1 ? ";" : ""), $2, $1}')
[ -z "${POINTS:-$DEFAULT}" ] && { echo "every point of $TABLE ran with the one launches"; exit 0; }
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
