#!/usr/bin/env bash
# Starts each quality.sh part as its own background process from /tmp/repo (a copy of the tree), sharing the
# GPU; logs in $GPU_OUT/q/<part>.log. The call that finds them finished (or the session's end near) packs:
#   source scripts/gpu/env.sh; pack quality q outputs/paper_table outputs/retrieval outputs/align_study
source scripts/gpu/env.sh
rm -rf /tmp/repo && cp -r "$PWD" /tmp/repo && mkdir -p "$GPU_OUT/q"
for part in "$@"; do
  (cd /tmp/repo && OMP_NUM_THREADS=2 exec setsid nohup bash scripts/gpu/quality.sh $part > "$GPU_OUT/q/$part.log" \
    2>&1 < /dev/null) > /dev/null 2>&1 < /dev/null &
  echo "$part: pid $!"
done
