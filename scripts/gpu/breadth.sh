#!/usr/bin/env bash
# Issue 24's breadth with the GPU alone (docs/gpu.md, "The thirteenth session"): first_window (2,048-key window) and
# reuse at their best 32K settings (every draft layer under the policy, decode_real's sparse launch) in one run per
# point, each against dense speculative decoding, autoregressive decoding and SpecAttn p=0.9/0.95 of the same run:
# the points of $POINTS ("context batch" pairs, ";"-separated; default 32K batch 16, 32K batch 32, 16K batch 16, 8K
# batch 16), then, unless REFRESH16=0, reuse refreshing every 16 steps at 32K batch 16. $EXTRA: overrides for every
# run (e.g. "experiment.match_p=0.9": the policies under SpecAttn p=0.9). $1: the limit of each run (s). Each run
# resumes from its parts (each finished prompt group) when started again.
source scripts/gpu/env.sh
stop_background 60
BEST=("$JS_MAP" experiment.matched=false experiment.draft_dense_layers=0 experiment.draft_window=2048 $EXTRA)
IFS=';' read -r -a points <<< "${POINTS:-32768 16;32768 32;16384 16;8192 16}"
for point in "${points[@]}"; do
  read -r context batch <<< "$point"
  step "both_policies_${context}_b${batch}"
  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[$context]" "experiment.batches=[$batch]" "${BEST[@]}" \
    "experiment.draft_reads=[first_window,reuse]"
done
if [ "${REFRESH16:-1}" != 0 ]; then
  step reuse_refresh_16
  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.batches=[16]" "${BEST[@]}" \
    "experiment.draft_reads=[reuse]" experiment.draft_refresh=16
fi
step done
mkdir -p "$GPU_OUT/q" && touch "$GPU_OUT/q/breadth.done"
