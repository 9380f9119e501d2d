#!/usr/bin/env bash
# Job B: end-to-end decoding with the real weights (issues 23 and 24): experiment=decode_real (resumes per
# point when run again), then the background job's outputs if it finished.
source scripts/gpu/env.sh
for i in $(seq 1 ${WAIT_BG:-12}); do  # timings need the GPU to themselves: wait for the background job
  [ -f "$GPU_OUT/bg/done" ] || ! kill -0 "$(cat "$GPU_OUT/bg/pid" 2>/dev/null)" 2>/dev/null && break; sleep 5
done; echo "background: $(tail -n 1 "$GPU_OUT/bg/background.log" 2>/dev/null)"
spec ${1:-500} experiment=decode_real model=qwen_coder dataset=python_source dtype=bfloat16 device=cuda \
  "experiment.contexts=${2:-[2048,8192,32768]}" "experiment.batches=[1,4,16]"
cat "$GPU_OUT"/outputs/decode_real/*/summary.md 2>/dev/null | head -80
pack decode outputs/decode_real outputs/kernel_bench outputs/decode_bench bg
