#!/usr/bin/env bash
# An end-to-end A/B of launch settings on the staged pair (docs/gpu.md, "The thirty-fifth session"): the real table's
# 32K batch-16 point (the js map, dense speculative decoding, SpecAttn p=0.9 and its first_window draft, 32 prompts,
# 256 tokens) as it stands, then with each set of overrides in $ARMS ('|' between sets, spaces within one; required;
# the thirty-sixth session's: "experiment.draft_down_split=8 experiment.draft_epilogue_rows=16", now qwen_coder's
# defaults), one run each on the same warm machine; then the lossless check (LOSSLESS prompts, default 32, at 2K) with
# the last set (LOSSLESS=0: none). BATCH (default 16) and PROMPTS (default 32) move the point to another batch, e.g.
# BATCH=4 or BATCH=1 PROMPTS=8 (the one launches were tuned at batch 16 only).
# Started beside the chain: it waits for the chain's profiles ($GPU_OUT/q/profile.done) and stops the chain (its GPU
# test files are not needed), so the runs have the GPU alone. $1: each run's limit (s).
source scripts/gpu/env.sh
set -f
: "${ARMS:?set it to the override sets to compare, e.g. ARMS=\"experiment.draft_down_split=0\"}"
IFS='|' read -r -a sets <<< "$ARMS"
mkdir -p "$GPU_OUT/q"
if [ -z "$PRECHECK" ]; then
  for _ in $(seq 1 200); do [ -f "$GPU_OUT/q/profile.done" ] && break; sleep 5; done
  [ -f "$GPU_OUT/q/chain.pid" ] && kill -- -"$(cat "$GPU_OUT/q/chain.pid")" 2>/dev/null && echo "chain stopped"
fi
POINT=("experiment.contexts=[32768]" "experiment.batches=[${BATCH:-16}]" "experiment.prompts=${PROMPTS:-32}"
       "$JS_MAP" experiment.matched=false
       experiment.draft_dense_layers=0 experiment.draft_window=2048 experiment.match_p=0.9 "experiment.p_values=[0.9]"
       "experiment.draft_reads=[first_window]")
step "decode_default"
WAIT_BG=0 bash scripts/gpu/decode.sh "${1:-330}" "${POINT[@]}"
for extra in "${sets[@]}"; do
  step "decode $extra"
  WAIT_BG=0 bash scripts/gpu/decode.sh "${1:-330}" "${POINT[@]}" $extra
done
LOSSLESS=${LOSSLESS:-32}
if [ "$LOSSLESS" != 0 ]; then
  step "lossless ${sets[-1]}"
  LOSSLESS=$LOSSLESS WAIT_BG=0 bash scripts/gpu/decode.sh "${1:-330}" "experiment.contexts=[2048]" \
    "experiment.batches=[16]" experiment.prompts=16 experiment.matched=false experiment.match_p=0.9 \
    "experiment.p_values=[0.9]" "experiment.draft_reads=[]" ${sets[-1]}
fi
step done
touch "$GPU_OUT/q/decode_ab.done"
