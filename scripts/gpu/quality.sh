#!/usr/bin/env bash
# Job A (carries .gpu_inputs): the evaluator on CUDA with the real pair (issue 22). Each run has a wall-clock
# limit; a run cut by it resumes from parts/ when this script runs again. $1 (optional): a list of parts.
source scripts/gpu/env.sh
parts=${1:-"agree long short medium"}
M="model=qwen_coder device=cuda experiment=paper_table"
AGREE="experiment.rows=[dense,{method:specattn,p:[0.95,0.99]},{method:quest,match:'specattn p=0.95'}]"
P6="experiment.p_values=[0.5,0.7,0.8,0.9,0.95,0.99]"
SWEEP="experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}}]"
for part in $parts; do echo "== $part $(date +%T)"; case $part in
  agree)   # float32 and bfloat16 on the 4 files of the CPU reference (docs/results.md's 2K code table)
    for dt in float32 bfloat16; do spec 110 $M dataset=python_source +dataset.source.root=$PWD/.gpu_inputs/py311 \
      dataset.num_samples=4 dtype=$dt "$AGREE"; done ;;
  long)    # 32K: SpecAttn p=0.9/0.95 vs dense (the 32K target)
    spec 130 $M dataset=python_source dataset.context_len=32768 dataset.num_samples=32 dtype=bfloat16 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]}]" ;;
  short)   # 2K, 32 samples, SpecAttn at six p
    spec 110 $M dataset=python_source dataset.context_len=2048 dataset.num_samples=32 dtype=bfloat16 "$P6" "$SWEEP" ;;
  medium)  # 8K, 32 samples
    spec 110 $M dataset=python_source dataset.context_len=8192 dataset.num_samples=32 dtype=bfloat16 "$P6" "$SWEEP" ;;
  oracle)  # the oracle and the matched baselines at 2K
    spec 150 $M dataset=python_source dataset.context_len=2048 dataset.num_samples=32 dtype=bfloat16 "$P6" \
      "experiment.rows=[dense,{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'},{method:streaming,match:'specattn p=0.95'},{method:quest,match:'specattn p=0.95'},{method:specattn,p:[0.9,0.95]},{method:oracle_topp,p:\${experiment.p_values}}]" ;;
  prose)   # gutenberg at 2K
    spec 110 $M dataset=gutenberg dataset.context_len=2048 dataset.num_samples=32 dtype=bfloat16 "$P6" "$SWEEP" ;;
esac; done
echo "== pack $(date +%T)"
find "$GPU_OUT/outputs" -name 'results.parquet' | sed "s#$GPU_OUT/##" | head -40
pack quality outputs
