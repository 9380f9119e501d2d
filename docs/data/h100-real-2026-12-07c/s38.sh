#!/usr/bin/env bash
# The thirty-eighth session's staged runs (untracked; docs/gpu.md): the real table's 32K points with the draft's one
# launches (qwen_coder's default) and every mode, the one launches A/B'd at batch 4 and 1. Each part in its own
# folder under q/ (a fresh paths.outputs: nothing reused).
source scripts/gpu/env.sh
set -f
[ -z "$PRECHECK" ] && stop_background 5
Q=$GPU_OUT/q
MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
ONE="experiment.draft_epilogue_rows=0 experiment.draft_down_split=0"
table() { step "table_b$1"; GPU_OUT=$Q/table_b$1 WAIT_BG=0 bash scripts/gpu/decode.sh 330 "experiment.contexts=[32768]" \
  "experiment.batches=[$1]" experiment.draft_dense_layers=0 experiment.match_p=0.9 experiment.draft_window=2048 \
  "experiment.draft_reads=[first_window]" $MAP; }
ab() { step "ab_b$1"; mkdir -p "$Q/ab_b$1/q" && touch "$Q/ab_b$1/q/profile.done"
  GPU_OUT=$Q/ab_b$1 BATCH=$1 PROMPTS=$2 LOSSLESS=0 ARMS="$ONE" bash scripts/gpu/decode_ab.sh 330; }
table 16
ab 4 32
table 32
ab 1 8
step done
touch "$Q/s38.done"
