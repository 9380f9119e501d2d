#!/usr/bin/env bash
# The one-launch merge end to end (docs/gpu.md, "The seventeenth stop"), with the GPU alone: the maps run's point and
# modes on the run's js map (dense, SpecAttn p=0.9 plain and with the first_window draft, 2,048 keys, every draft layer
# under the policy) with every attention launch fused (experiment.{split,sparse_split,draft_split}.fused_merge), beside
# maps.sh's run of the same modes with the two-launch kernel. $POINT: "context batch" (default 32K batch 16); $EXTRA:
# more overrides; $1: the run's limit (s); started again, it resumes from its parts.
source scripts/gpu/env.sh
stop_background 60
read -r context batch <<< "${POINT:-32768 16}"
step "fused_${context}_b${batch}"
bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[$context]" "experiment.batches=[$batch]" \
  "$JS_MAP" experiment.matched=false \
  experiment.draft_dense_layers=0 experiment.draft_window=2048 "experiment.draft_reads=[first_window]" \
  experiment.match_p=0.9 "experiment.p_values=[0.9]" experiment.split.fused_merge=true \
  experiment.sparse_split.fused_merge=true experiment.draft_split.fused_merge=true $EXTRA
mkdir -p "$GPU_OUT/q" && touch "$GPU_OUT/q/fused.done"
