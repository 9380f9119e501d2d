#!/usr/bin/env bash
# Layer maps bounded in their distinct draft layers (docs/gpu.md, "The sixteenth stop"), with the GPU alone: one
# decode_real run at $POINT ("context batch", default 32K batch 16) under SpecAttn p=0.9: the run's js map (the H200's,
# 13 distinct draft layers past the dense two) and, beside the same dense baseline, the CPU js calibration's map
# unbounded (13) and bounded to 7 and 4 layers (docs/data/cpu-qwen-coder-2026-12-04/), each plain and with the
# first_window draft (2,048 keys, every draft layer under the policy). $EXTRA: more overrides. $1: the run's limit (s);
# started again, it resumes from its parts.
source scripts/gpu/env.sh
stop_background 60
read -r context batch <<< "${POINT:-32768 16}"
CPU=docs/data/cpu-qwen-coder-2026-12-04
step "maps_${context}_b${batch}"
bash scripts/gpu/decode.sh "${1:-300}" "experiment.contexts=[$context]" "experiment.batches=[$batch]" \
  "$JS_MAP" \
  "+experiment.layer_maps.cpu=$CPU/layer_map_js_2k.yaml" "+experiment.layer_maps.max7=$CPU/layer_map_js_2k_max7.yaml" \
  "+experiment.layer_maps.max4=$CPU/layer_map_js_2k_max4.yaml" experiment.matched=false experiment.draft_dense_layers=0 \
  experiment.draft_window=2048 "experiment.draft_reads=[first_window]" experiment.match_p=0.9 \
  "experiment.p_values=[0.9]" $EXTRA
mkdir -p "$GPU_OUT/q" && touch "$GPU_OUT/q/maps.done"
