#!/usr/bin/env bash
# A session's poll call (docs/gpu.md, "A session"): what the background jobs have done so far, and all of it packed
# into $OUT/poll.tar.gz at every call (logs, and every run folder: a finished run without its parts/, an unfinished
# one with them), so a lost machine loses only what ran since the last poll. Usage: `sleep 20; bash scripts/gpu/poll.sh`.
source scripts/gpu/env.sh
for f in "$GPU_OUT"/q/*.log "$GPU_OUT"/bg/background.log; do
  [ -f "$f" ] && echo "$(basename "$f"): $(grep -v -i warn "$f" | tail -n 1 | cut -c1-160)"
done
cd "$GPU_OUT" || exit 0
skip=()
for run in outputs/*/*/; do
  [ -d "$run" ] || continue
  run=${run%/}
  n=$(find "$run/parts" -name '*.parquet' 2>/dev/null | wc -l)
  if [ -f "$run/results.parquet" ]; then echo "$run: finished ($n samples)"; skip+=("--exclude=$run/parts")
  else echo "$run: $n samples so far"; fi
done
have=$(ls -d outputs q bg 2>/dev/null)
[ -n "$have" ] && tar -czf "$OUT/poll.tar.gz" --exclude='*.safetensors' --exclude=wandb "${skip[@]}" $have \
  && echo "packed $(stat -c %s "$OUT/poll.tar.gz") bytes into poll.tar.gz"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
exit 0
