#!/usr/bin/env bash
# The evaluator on CUDA with the real pair (issues 22, 25): one part per argument, each run under a wall-clock
# limit (${LIMIT:-780} s); a run cut by it resumes from parts/ when run again with the same code.
# Parts may run side by side (scripts/gpu/parallel.sh): one process each, sharing the GPU.
source scripts/gpu/env.sh
L=${LIMIT:-780}
M="model=qwen_coder device=cuda dtype=bfloat16"
T="$M experiment=paper_table"
P6="experiment.p_values=[0.5,0.7,0.8,0.9,0.95,0.99]"
SWEEP="experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}}]"
# the kernel benchmark's comparison beside FlashInfer's page table (issue 23): 32K, batch 1/4/16, 25% and 10% kept, both
# verifier shapes (random inputs, the GPU alone)
FI=(experiment=kernel_bench "experiment.models=[llama-3.1-8b,llama-2-7b]" "experiment.batches=[1,4,16]"
    "experiment.attn_lengths=[32768]" "experiment.densities=[0.25,0.1]")
MATCHED="{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'},{method:streaming,match:'specattn p=0.95'},{method:quest,match:'specattn p=0.95'}"
for part in "$@"; do step "$part"; case $part in
  agree)     # float32 and bfloat16 on the 4 files of the CPU reference (docs/results.md's 2K code table)
    for dt in float32 bfloat16; do spec $L $T dataset=python_source +dataset.source.root=$PWD/.gpu_inputs/py311 \
      dataset.num_samples=4 dtype=$dt "experiment.rows=[dense,{method:specattn,p:[0.95,0.99]},{method:quest,match:'specattn p=0.95'}]"; done ;;
  speed)     # the evaluator's two sparse paths on one 32K window (issue 22): chunk-list kernel vs masked SDPA,
             # timed, the same rows (their ppl and reads differ only by bf16 rounding)
    for impl in parallel parallel_mask; do s0=$(date +%s); spec $L $T dataset=python_packages dataset.context_len=32768 \
      dataset.num_samples=1 experiment.impl=$impl "experiment.rows=[dense,{method:specattn,p:0.9},{method:quest,match:'specattn p=0.9'}]"
      echo "impl=$impl wall $(( $(date +%s) - s0 )) s"; done ;;
  short)     # 2K, 32 files: SpecAttn at six p, the oracle at the same p, the baselines matched at 0.9 and 0.95
    spec $L $T dataset=python_source dataset.context_len=2048 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},{method:oracle_topp,p:\${experiment.p_values}},$MATCHED]" ;;
  medium)    # 8K, 32 package windows: SpecAttn and the oracle at six p, the baselines matched
    spec $L $T dataset=python_packages dataset.context_len=8192 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},{method:oracle_topp,p:\${experiment.p_values}},$MATCHED]" ;;
  long)      # 32K, 32 package windows: SpecAttn at six p, the baselines matched at 0.9 and 0.95 (the 32K target)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},$MATCHED]" ;;
  long_target) # 32K, 32 package windows, the rows of the 32K target and the matched baselines at p=0.9 (fourth session)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.num_samples=32 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'}]" ;;
  medium_oracle) # 8K, 32 package windows: the oracle at six p beside SpecAttn at the same p (the second session's
             # `medium` reached 9 windows, rows not archived; medium_sweep has SpecAttn and the baselines on 32)
    spec $L $T dataset=python_packages dataset.context_len=8192 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},{method:oracle_topp,p:\${experiment.p_values}}]" ;;
  medium_oracle_rest) # the 8K windows medium_oracle did not reach in the tenth session (19-31; pool with
             # docs/data/h200-real-2026-12-04/paper_table_8k_oracle_samples_0-18.csv)
    spec $L $T dataset=python_packages dataset.context_len=8192 dataset.first_sample=19 dataset.num_samples=13 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},{method:oracle_topp,p:\${experiment.p_values}}]" ;;
  medium_sweep) # 8K, 32 package windows: SpecAttn at six p and the baselines matched, no oracle (fourth session)
    spec $L $T dataset=python_packages dataset.context_len=8192 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},$MATCHED]" ;;
  prose_8k)  # gutenberg at 8K, 32 samples, SpecAttn at six p and the baselines matched (fourth session)
    spec $L $T dataset=gutenberg dataset.context_len=8192 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},$MATCHED]" ;;
  prose_32k) # gutenberg at 32K, 32 samples, the 32K target's rows (fourth session)
    spec $L $T dataset=gutenberg dataset.context_len=32768 dataset.num_samples=32 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'}]" ;;
  long_rest) # 32K code: the 10 windows after the fourth session's 22 (pool: results intervals --pool with
             # docs/data/h200-real-2026-12-03/paper_table_32k_python_packages_samples.csv)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.first_sample=22 dataset.num_samples=10 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'}]" ;;
  prose_32k_rest) # 32K prose: the 20 windows after the fourth session's 12 (pool as above)
    spec $L $T dataset=gutenberg dataset.context_len=32768 dataset.first_sample=12 dataset.num_samples=20 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'}]" ;;
  prose_32k_last) # 32K prose: the 2 windows the fifth session's prose_32k_rest did not reach (30 and 31)
    spec $L $T dataset=gutenberg dataset.context_len=32768 dataset.first_sample=30 dataset.num_samples=2 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.9'},{method:quest,match:'specattn p=0.9'}]" ;;
  oracle_32k) # 32K code, the first 8 windows: the oracle beside SpecAttn at p = 0.8, 0.9, 0.95, 0.99 (fifth session)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.num_samples=8 \
      "experiment.rows=[dense,{method:specattn,p:[0.8,0.9,0.95,0.99]},{method:oracle_topp,p:[0.8,0.9,0.95,0.99]}]" ;;
  oracle_32k_rest) # 32K code windows 3-7, the ones oracle_32k did not reach in the sixth session (pool with
             # docs/data/h200-real-2026-12-03c/paper_table_32k_python_packages_oracle_samples_0-2.csv)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.first_sample=3 dataset.num_samples=5 \
      "experiment.rows=[dense,{method:specattn,p:[0.8,0.9,0.95,0.99]},{method:oracle_topp,p:[0.8,0.9,0.95,0.99]}]" ;;
  oracle_32k_more) # 32K code windows 9-31 (the thirteenth session reached 8; pool with h200-real-2026-12-03c/..._0-2.csv,
             # h200-real-2026-12-04b/..._3-6.csv, h200-real-2026-12-04c/..._7.csv and h200-real-2026-12-04d/..._8.csv)
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.first_sample=9 dataset.num_samples=23 \
      "experiment.rows=[dense,{method:specattn,p:[0.8,0.9,0.95,0.99]},{method:oracle_topp,p:[0.8,0.9,0.95,0.99]}]" ;;
  decode)    # decoding quality against context length: 8K then 32K prompts of package text, 256 new tokens
    for len in 8192 32000; do spec $((L / 2)) $M experiment=decode_table dataset=python_packages dataset.num_samples=8 \
      decode.prompt_len=$len decode.max_new_tokens=256; done ;;
  prose)     # gutenberg at 2K then 8K
    spec $((L / 3)) $T dataset=gutenberg dataset.context_len=2048 dataset.num_samples=32 "$P6" "$SWEEP"
    spec $((2 * L / 3)) $T dataset=gutenberg dataset.context_len=8192 dataset.num_samples=32 "$P6" \
      "experiment.rows=[dense,{method:specattn,p:\${experiment.p_values}},$MATCHED]" ;;
  grid)      # head_agg x chunk_size at 8K, p=0.9: one run per chunk size (the step layout depends on it) with the three
             # aggregations as its rows (one dense row and one draft forward per sample serve all three), 32 windows,
             # each run cut at LIMIT/4
    for c in 8 16 32 64; do
      spec $((L / 4)) $T dataset=python_packages dataset.context_len=8192 dataset.num_samples=32 chunk_size=$c \
        "experiment.rows=[dense,{method:specattn,p:0.9,heads:[mean,max,kv_group]}]"; done ;;
  grid_rest) # the windows the ninth session's grid runs did not reach: chunk 32 from window 29, chunk 64 from 19
             # (pool with docs/data/h200-real-2026-12-03f/paper_table_8k_grid_chunk{32,64}_samples.csv: 32 each)
    for c in 32:29 64:19; do
      spec $((L / 2)) $T dataset=python_packages dataset.context_len=8192 dataset.first_sample=${c#*:} \
        dataset.num_samples=$((32 - ${c#*:})) chunk_size=${c%:*} \
        "experiment.rows=[dense,{method:specattn,p:0.9,heads:[mean,max,kv_group]}]"; done ;;
  retrieval) # needles, aggregation and two-hop code questions at 2K and 4K, 10 per task and length
    spec $L $M experiment=retrieval "experiment.lengths=[2048,4096]" experiment.samples=2 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]},{method:oracle_topp,p:0.95},{method:streaming,match:'specattn p=0.95'},{method:quest,match:'specattn p=0.95'}]" ;;
  retrieval_long) # issue 25 at length: 8K and 16K (batch 16), then 32K (batch 8), 10 samples per depth cell = 50
             # per task and length; one prefill per batch (experiment.batch); then 4K (the CPU grid, on the GPU)
    R="[dense,{method:specattn,p:[0.9,0.95]},{method:oracle_topp,p:0.95},{method:streaming,match:'specattn p=0.95'},{method:quest,match:'specattn p=0.95'}]"
    spec $((2 * L / 5)) $M experiment=retrieval "experiment.lengths=[8192,16384]" experiment.samples=10 experiment.batch=16 "experiment.rows=$R"
    spec $((2 * L / 5)) $M experiment=retrieval "experiment.lengths=[32000]" experiment.samples=10 experiment.batch=8 "experiment.rows=$R"
    spec $((L / 5)) $M experiment=retrieval "experiment.lengths=[4096]" experiment.samples=10 experiment.batch=16 "experiment.rows=$R" ;;
  retrieval_graph) # issue 25 on the graph decoder (sixth session): 8K and 16K (batch 16), then 32K (batch 8), 10 samples
             # per depth cell = 50 per task and length (the oracle, added later: retrieval_oracle)
    R="[dense,{method:specattn,p:[0.9,0.95]},{method:streaming,match:'specattn p=0.95'},{method:quest,match:'specattn p=0.95'}]"
    G="experiment.decoder=graph experiment.samples=10"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[8192,16384]" experiment.batch=16 "experiment.rows=$R"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[32000]" experiment.batch=8 "experiment.rows=$R" ;;
  retrieval_oracle) # the oracle row of issue 25 at length, on the graph decoder (untested there in bfloat16 yet): the
             # same samples as retrieval_graph (seed 0), dense and the oracle top-p at 0.95
    O="[dense,{method:oracle_topp,p:0.95}]"
    G="experiment.decoder=graph experiment.samples=10"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[2048,4096,8192,16384]" experiment.batch=16 "experiment.rows=$O"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[32000]" experiment.batch=8 "experiment.rows=$O" ;;
  kernel_fi) # the sparse kernel tuned (two stages, batch 4 and 16) and then the comparison ($FI)
    spec $L "${FI[@]}" "experiment.parts=[tune,attention]" \
      "experiment.tune_cases=[[llama-3.1-8b,4,32768],[llama-3.1-8b,16,32768],[llama-2-7b,4,32768],[llama-2-7b,16,32768]]" ;;
  kernel_fi_tuned) # the comparison without the tune: the sixth session's tuned split configuration
    spec $L "${FI[@]}" "experiment.parts=[attention]" experiment.split.block_n=64 experiment.split.warps=2 \
      experiment.split.stages=3 experiment.split.ctas_per_sm=2 experiment.split.min_chunks=16 ;;
  kernel_fi_launch) # the comparison at one launch, $KERNEL_SPLIT (default: decode_real's sparse launch, 128-key blocks
                    # over 2 stages, >= 16 chunks a program; e.g. the winner of scripts/gpu/profile_kernel.py)
    spec $L "${FI[@]}" "experiment.parts=[attention]" \
      ${KERNEL_SPLIT:-experiment.split.block_n=128 experiment.split.stages=2 experiment.split.min_chunks=16} ;;
  align)     # layer alignment at the default 16384 calibration tokens on 32 samples of 2K code (intervals; the
             # stability table at 16384 and 32768 tokens ran with 8 samples in the second session)
    spec $L $M experiment=align_study dataset=python_source dataset.num_samples=32 align.num_tokens=16384 ;;
  align_bounded) # the js map bounded to 4, 7 and 10 draft layers beside it, 32 samples of 2K code (the CPU's 16 texts:
             # docs/results.md, "Layer maps with fewer draft layers")
    spec $L $M experiment=align_study dataset=python_source dataset.num_samples=32 align.num_tokens=16384 \
      "experiment.metrics=[js]" "experiment.max_draft_layers=[4,7,10]" "experiment.p_values=[0.9,0.95]" ;;
  long_low_p) # 32K code at the low and high p of the paper's table beside dense (p = 0.9 and 0.95 have 32 windows from
             # long_target / long_rest): windows 30-35; the third session ran 0-9 (rows not archived), the eighth 4-13,
             # the ninth 14-29 (docs/data/h200-real-2026-12-03f): these 6 make 32 archived windows
    spec $L $T dataset=python_packages dataset.context_len=32768 dataset.first_sample=30 dataset.num_samples=6 \
      "experiment.rows=[dense,{method:specattn,p:[0.5,0.7,0.8,0.99]}]" ;;
  retrieval_seed2) # issue 25's grid again under seed 2 (new haystacks and needles), dense and SpecAttn only: 100 -> 150
             # samples per task and length at 8K and 16K (50 -> 100 at 2K, 4K, 32K), where aggregation tasks missed the 2-point target
    G="experiment.decoder=graph experiment.samples=10 seed=2"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[2048,4096,8192,16384]" experiment.batch=16 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]}]"
    spec $((L / 2)) $M experiment=retrieval $G "experiment.lengths=[32000]" experiment.batch=8 \
      "experiment.rows=[dense,{method:specattn,p:[0.9,0.95]}]" ;;
esac; done
step end
