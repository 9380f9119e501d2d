#!/usr/bin/env bash
# The session's timed chain (docs/gpu.md, "The thirty-second session": the next session's list), started detached by the
# call that assembles the weights: it waits (up to 240 s) for the background job's kernel A/B to end, then, with the GPU
# alone: (a) where the step's time goes (scripts/gpu/profile_real.py at each point of $PROFILE_POINTS, default 32K batch
# 16: AR, dense speculative decoding, SpecAttn p=0.9 and its first_window draft, each phase's kernels by class against
# their byte floors; "none" skips it), each point again with each set of overrides in $PROFILE_AB ('|' between sets,
# spaces within one, e.g. "experiment.draft_down_split=0 experiment.draft_epilogue_rows=0": the draft's projections as
# before the thirty-sixth session; default "none": no second profile); (b) run A (Quest and StreamingLLM matched to
# SpecAttn p=0.9 at 32K batch 16, the js map; its H200 twin; FIRST=none skips it on an H100); (c) the draft read
# policies with the norms folded (scripts/gpu/breadth.sh: first_window with its 2,048-key window and reuse, every draft
# layer under the policy, under SpecAttn p=0.9, beside AR, dense speculative decoding and SpecAttn p=0.9 / 0.95 of the
# same run, 32 prompts) at the points of $POLICY_POINTS (breadth.sh's POINTS format; default 32K batch 16 and 32, 16K
# and 8K batch 16; "none" skips them); then the GPU test files. $1: each run's limit (s).
source scripts/gpu/env.sh
set -f
mkdir -p "$GPU_OUT/q"
[ -z "$PRECHECK" ] && for _ in $(seq 1 48); do grep -q "^kernel_ab rc" "$GPU_OUT/bg/background.log" 2>/dev/null && break; sleep 5; done
stop_background 5
IFS=';' read -r -a points <<< "${PROFILE_POINTS:-32768 16}"
for point in "${points[@]}"; do
  [ "$point" = none ] && break
  read -r context batch <<< "$point"
  step "profile_${context}_b${batch}"
  IFS='|' read -r -a sets <<< "${PROFILE_AB:-none}"
  [ "${sets[0]}" = none ] && sets=()
  for i in $(seq 0 ${#sets[@]}); do  # the point as it stands, then with each set of $PROFILE_AB's overrides
    extra=""; suffix=""; [ "$i" -gt 0 ] && { extra="${sets[$((i - 1))]}"; suffix="_ab"; [ "$i" -gt 1 ] && suffix="_ab$i"; }
    name="profile_real_${context}_b${batch}${suffix}"
    if [ -n "$PRECHECK" ]; then echo "profile_real.py $context $batch $extra" >> "$PRECHECK"; continue; fi
    limit "${1:-300}" python3 scripts/gpu/profile_real.py "$context" "$batch" $extra --csv="$GPU_OUT/q/$name.csv" \
      > "$GPU_OUT/q/$name.log" 2>&1
    echo "$name rc $?"
  done
done
touch "$GPU_OUT/q/profile.done"
if [ "${FIRST:-run_a}" = run_a ]; then  # FIRST=none on an H100: run A ran there in the twentieth session
step run_a;  bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[32768]" "experiment.p_values=[0.9]" \
  "$JS_MAP" experiment.draft_dense_layers=0 \
  experiment.match_p=0.9 "experiment.batches=[16]"
fi
if [ "${POLICY_POINTS}" != none ]; then
step policies;  POINTS="${POLICY_POINTS:-32768 16;32768 32;16384 16;8192 16}" EXTRA="experiment.match_p=0.9" \
  REFRESH16=0 bash scripts/gpu/breadth.sh "${1:-300}"
fi
touch "$GPU_OUT/q/policies.done"
step gpu_tests  # the decoder's and the kernel's GPU test files (skipped if the background job passed them)
TESTS="test_real_decode test_graph_methods test_graph_engine test_fused_llama test_attention_sparse test_draft_rows" \
  bash scripts/gpu/after.sh policies.done
step done
touch "$GPU_OUT/q/chain.done"
