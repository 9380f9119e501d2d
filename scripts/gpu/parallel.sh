#!/usr/bin/env bash
# Starts each quality.sh part as its own background process from /tmp/repo (a copy of the tree), sharing the
# GPU; logs in $GPU_OUT/q/<part>.log. The call that finds them finished (or the session's end near) packs:
#   source scripts/gpu/env.sh; pack quality q outputs/paper_table outputs/retrieval outputs/align_study
source scripts/gpu/env.sh
snapshot && mkdir -p "$GPU_OUT/q"
for part in "$@"; do
  echo "$part: pid $(detach "$GPU_OUT/q/$part.log" env OMP_NUM_THREADS=2 bash scripts/gpu/quality.sh "$part")"
done
