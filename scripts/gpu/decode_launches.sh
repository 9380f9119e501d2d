#!/usr/bin/env bash
# Kernel launches measured end to end (issue 23): the 32K batch-16 decoding point with the js-calibrated map and the
# first_window policy (the ninth session's second point) at the kernels' default launches, then at the launches given
# as arguments (experiment.split.* and experiment.rows.* overrides, picked from profile_kernel.log and
# profile_rows.log), then the 8K grid's best setting (head_agg=max chunk_size=8) at those launches: three runs, one
# after another, each with the GPU alone; first the phase profile of the same point at the default launches
# ($GPU_OUT/q/profile_real.log). $1: wall-clock limit (s) per run.
source scripts/gpu/env.sh
P=("experiment.contexts=[32768]" "experiment.batches=[16]" "experiment.draft_reads=[first_window]" "$JS_MAP")
mkdir -p "$GPU_OUT/q"; stop_background 60
[ -n "$PRECHECK" ] || limit 150 python3 scripts/gpu/profile_real.py 32768 16 "$JS_MAP" \
  > "$GPU_OUT/q/profile_real.log" 2>&1
WAIT_BG=0 bash scripts/gpu/decode.sh "$1" "${P[@]}"
WAIT_BG=0 bash scripts/gpu/decode.sh "$1" "${P[@]}" "${@:2}"
WAIT_BG=0 bash scripts/gpu/decode.sh "$1" "${P[@]}" head_agg=max chunk_size=8 "${@:2}"
