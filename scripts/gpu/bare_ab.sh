#!/usr/bin/env bash
# A bare GPU machine (no staged weights; thirty-third session, when the device time left could not stage the pair): the
# draft's one-launch layer kernels. Part "kernels": their GPU tests (tests/test_projection_epilogues.py,
# tests/test_skinny_gemm.py, the fused pair's graph replay in tests/test_fused_llama.py) and the projections, one launch
# against two, cold (scripts/gpu/profile_gemm.py); part "bench": experiment=decode_bench with random weights of the
# $PAIR shapes (default llama3.2-llama3.1; qwen-coder: the real pair's), forced acceptance tau = 3 and a forced 10% kept
# (labelled), at $CONTEXT (default 8K) batch 16, once per draft setting of $ARMS (comma-separated "rows split" pairs,
# default "0 0,0 8,16 8": experiment.draft_epilogue_rows and experiment.draft_down_split); part "split" (thirty-fifth
# session): the fused pair's GPU tests, each split program's start, end and SM at the read-floor shape and at the shape
# where ours and FlashInfer's page table tie (scripts/gpu/split_timeline.py, 20 calls, per-program CSVs), then the
# kernel A/B of the launches in $SPLIT_ARMS (scripts/gpu/ab_kernel.py's arms; default: the other landed launch). Writes
# under $OUT.
# Usage, from the repository root: `bash scripts/gpu/bare_ab.sh kernels bench` (each part fits one call alone).
source scripts/setup_gpu.sh .whl /tmp/site > /dev/null 2>&1
export PYTHONPATH="/tmp/site:$PWD"
out="${OUT:-/tmp/bare-ab}"; mkdir -p "$out"
for part in "$@"; do
  case "$part" in
    kernels)
      timeout 240 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_projection_epilogues.py \
        tests/test_skinny_gemm.py tests/test_fused_llama.py > "$out/pytest.log" 2>&1
      echo "pytest rc $? $(tail -n 1 "$out/pytest.log")"
      timeout 200 python3 scripts/gpu/profile_gemm.py epilogues residual > "$out/profile_gemm.log" 2>&1
      echo "profile_gemm rc $?";;
    bench)
      IFS=',' read -r -a arms <<< "${ARMS:-0 0,0 8,16 8}"
      for arm in "${arms[@]}"; do
        read -r rows split <<< "$arm"
        timeout 150 python3 run.py experiment=decode_bench logger=none "paths.outputs=$out/outputs" \
          "experiment.pairs=[${PAIR:-llama3.2-llama3.1}]" "experiment.contexts=[${CONTEXT:-8192}]" \
          "experiment.batches=[16]" "experiment.kept=[0.1]" "experiment.draft_epilogue_rows=$rows" \
          "experiment.draft_down_split=$split" \
          > "$out/decode_bench_${rows}_${split}.log" 2>&1
        echo "decode_bench rows $rows split $split rc $?"
      done;;
    split)
      timeout 120 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_fused_llama.py \
        > "$out/pytest_fused.log" 2>&1
      echo "pytest fused_llama rc $? $(tail -n 1 "$out/pytest_fused.log")"
      for shape in "llama-3.1-8b 4 0.25" "llama-2-7b 16 0.1"; do
        timeout 120 python3 scripts/gpu/split_timeline.py $shape --calls 20 --dump "$out/timeline" \
          >> "$out/split_timeline.log" 2>&1
        echo "split_timeline $shape rc $?"; done
      timeout 280 python3 scripts/gpu/ab_kernel.py ${SPLIT_ARMS:-@block_n=64,stages=3} > "$out/ab_kernel.log" 2>&1
      echo "ab_kernel rc $? $(tail -n 1 "$out/ab_kernel.log")";;
    *) echo "bare_ab: part '$part' is kernels, bench or split"; exit 2;;
  esac
done
