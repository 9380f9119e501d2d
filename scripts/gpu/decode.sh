#!/usr/bin/env bash
# Job B: end-to-end decoding with the real weights (issues 23 and 24): experiment=decode_real on the standard
# library's packages (dataset=python_packages: 16 prompts of 32K exist there, not among single files),
# the batch-16 points first; resumes per point when run again. $1: wall-clock limit (s); $2: contexts.
source scripts/gpu/env.sh
for i in $(seq 1 ${WAIT_BG:-12}); do  # timings need the GPU to themselves: wait for the background job
  [ -f "$GPU_OUT/bg/done" ] || ! kill -0 "$(cat "$GPU_OUT/bg/pid" 2>/dev/null)" 2>/dev/null && break; sleep 5
done; echo "background: $(tail -n 1 "$GPU_OUT/bg/background.log" 2>/dev/null)"
if [ ! -f "$GPU_OUT/bg/done" ] && kill -0 "$(cat "$GPU_OUT/bg/pid" 2>/dev/null)" 2>/dev/null; then
  kill -- -"$(cat "$GPU_OUT/bg/pid")"; sleep 3; echo "background stopped (the timings below have the GPU alone)"
fi
spec ${1:-420} experiment=decode_real model=qwen_coder dataset=python_packages dtype=bfloat16 device=cuda \
  "experiment.contexts=${2:-[32768,16384]}" "experiment.batches=[16,4]" experiment.prompts=16 \
  experiment.lossless_prompts=0
cat "$GPU_OUT"/outputs/decode_real/*/summary.md 2>/dev/null | head -60
pack decode outputs/decode_real bg
