#!/usr/bin/env bash
# The 32K batch-16 decoding point with the GPU alone (issues 23, 24; docs/gpu.md, "The twelfth session"): the phase
# profile at the sparse launch $SPARSE (first_window with row 0 from the saved scores and from the keys), then
# experiment=decode_real at the defaults with the lossless check (A: first_window, first_dense, reuse), then
# first_window and window at $SPARSE without the matched baselines (B), B with every draft layer windowed (C), C with
# a 2048-key window (D). $1: the limit of each run (s); SPARSE: sparse_split overrides chosen from
# scripts/gpu/profile_short.py, e.g. "experiment.sparse_split.ctas_per_sm=4 experiment.sparse_split.min_chunks=4".
source scripts/gpu/env.sh
stop_background 60
POINT=("experiment.contexts=[32768]" "experiment.batches=[16]" "$JS_MAP")
step profile_real
if [ -z "$PRECHECK" ]; then
  limit "${1:-300}" python3 scripts/gpu/profile_real.py 32768 16 "$JS_MAP" $SPARSE > "$GPU_OUT/q/profile_real.log" 2>&1
  echo "profile_real rc $?"
fi
step A_defaults_lossless
bash scripts/gpu/decode.sh "${1:-300}" "${POINT[@]}" "experiment.draft_reads=[first_window,first_dense,reuse]" \
  experiment.lossless_prompts=32
SWEEP=("${POINT[@]}" "experiment.draft_reads=[first_window,window]" experiment.matched=false $SPARSE)
step B_sparse_split
bash scripts/gpu/decode.sh "${1:-300}" "${SWEEP[@]}"
step C_every_draft_layer_windowed
bash scripts/gpu/decode.sh "${1:-300}" "${SWEEP[@]}" experiment.draft_dense_layers=0
step D_window_2048
bash scripts/gpu/decode.sh "${1:-300}" "${SWEEP[@]}" experiment.draft_dense_layers=0 experiment.draft_window=2048
step done
mkdir -p "$GPU_OUT/q" && touch "$GPU_OUT/q/sweep.done"
