#!/usr/bin/env bash
# Job B: end-to-end decoding with the real weights (issues 22.4, 23 and 24): experiment=decode_real on the
# standard library's packages (dataset=python_packages), 32 prompts per point: 32K at batch 16 and 32, then
# 16K, 8K and 2K at batch 16; every mode and draft read policy (first_window among them), with the dense
# verifier's continuation perplexity. Resumes per prompt group when run again. $1: wall-clock limit (s) per run;
# further arguments replace that sequence by one run with these overrides (e.g. one point, another setting).
# LOSSLESS=N: the lossless check on N prompts in that run (default 0: skipped). DATASET: the dataset config
# (default python_packages; e.g. gutenberg, the books shipped in the package).
source scripts/gpu/env.sh
stop_background $(( 5 * ${WAIT_BG:-12} ))
R="experiment=decode_real model=qwen_coder dataset=${DATASET:-python_packages} dtype=bfloat16 device=cuda"
R="$R experiment.prompts=32"
if [ $# -gt 1 ]; then spec "$1" $R experiment.lossless_prompts="${LOSSLESS:-0}" "${@:2}"; else
  spec ${1:-300} $R "experiment.contexts=[32768]" "experiment.batches=[16,32]" experiment.lossless_prompts=0
  spec ${1:-300} $R "experiment.contexts=[16384,8192,2048]" "experiment.batches=[16]" experiment.lossless_prompts=0
fi
cat "$GPU_OUT"/outputs/decode_real/*/summary.md 2>/dev/null | head -80
touch "$GPU_OUT/decode.done"
