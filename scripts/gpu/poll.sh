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
  g=$(find "$run/parts" -name '*.json' 2>/dev/null | wc -l)  # decode_real: the groups of its unfinished point
  if [ -f "$run/results.parquet" ]; then echo "$run: finished ($n samples)"; skip+=("--exclude=$run/parts")
  else echo "$run: $n samples so far (+ $g groups)"; fi
done
have=$(ls -d outputs q bg 2>/dev/null)
rm -f "$OUT"/poll.tar.gz*
[ -n "$have" ] && tar -czf "$OUT/poll.tar.gz" --exclude='*.safetensors' --exclude=wandb "${skip[@]}" $have \
  && echo "packed $(stat -c %s "$OUT/poll.tar.gz") bytes into poll.tar.gz"
# a file over 16 MiB does not come back: cut the tarball into pieces of POLL_PIECE_MIB (15) MiB, at most 4 (64 MiB a call)
piece=$(( ${POLL_PIECE_MIB:-15} * 1048576 ))
if [ -f "$OUT/poll.tar.gz" ] && [ "$(stat -c %s "$OUT/poll.tar.gz")" -gt "$piece" ]; then
  split -b "$piece" -d -a 1 "$OUT/poll.tar.gz" "$OUT/poll.tar.gz." && rm "$OUT/poll.tar.gz"
  n=$(ls "$OUT"/poll.tar.gz.* | wc -l)
  echo "cut into $n pieces: cat poll.tar.gz.? > poll.tar.gz where they come back"
  [ "$n" -gt 4 ] && echo "WARNING: $n pieces are over a call's 64 MiB: pack finished runs in a call of their own"
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
exit 0
