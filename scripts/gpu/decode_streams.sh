#!/usr/bin/env bash
# The second stream measured end to end (issues 23, 24): the phase profile of the 32K batch-16 point with the
# js-calibrated map (default: draft rows and selection on a side stream, first_window's row 0 in the draft phase),
# then that point with experiment=decode_real twice, each with the GPU alone: the defaults (A), and the same
# kernels in order on one stream (B: experiment.side_stream=false). Further arguments go to both runs.
# $1: wall-clock limit (s) per run.
source scripts/gpu/env.sh
MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
P=("experiment.contexts=[32768]" "experiment.batches=[16]" "experiment.draft_reads=[first_window]" "$MAP")
mkdir -p "$GPU_OUT/q"; stop_background 60
[ -n "$PRECHECK" ] || timeout 150 python3 scripts/gpu/profile_real.py 32768 16 "$MAP" > "$GPU_OUT/q/profile_real.log" 2>&1
WAIT_BG=0 bash scripts/gpu/decode.sh "$1" "${P[@]}" "${@:2}"
WAIT_BG=0 bash scripts/gpu/decode.sh "$1" "${P[@]}" experiment.side_stream=false "${@:2}"
