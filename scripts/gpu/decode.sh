#!/usr/bin/env bash
# Job B: end-to-end decoding with the real weights (issues 23 and 24): experiment=decode_real (resumes per
# point when run again), then the background job's outputs if it finished.
source scripts/gpu/env.sh
spec ${1:-540} experiment=decode_real model=qwen_coder dataset=python_source dtype=bfloat16 device=cuda \
  "experiment.contexts=${2:-[2048,8192,32768]}" "experiment.batches=[1,4,16]"
cat "$GPU_OUT"/outputs/decode_real/*/summary.md 2>/dev/null | head -80
pack decode outputs/decode_real bg
