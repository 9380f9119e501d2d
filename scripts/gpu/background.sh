#!/usr/bin/env bash
# Runs from /tmp/repo (a copy) while the weights are staged: the GPU tests (the evaluator's chunk-list kernel
# path among them), then the draft-phase profile of issue 24 (graph replay and eager, kernel by kernel). Each
# part writes under $GPU_OUT/bg; `done` marks the end.
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step() { echo "== $1 $(date +%T)"; }
step tests
timeout 300 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider tests/test_evaluator_kernel.py \
  tests/test_stream_read.py tests/test_graph_methods.py tests/test_graph_engine.py > "$GPU_OUT/bg/pytest.log" 2>&1
echo "pytest rc $?"; tail -n 5 "$GPU_OUT/bg/pytest.log"
step profile_draft
timeout 240 python3 scripts/gpu/profile_draft.py > "$GPU_OUT/bg/profile_draft.log" 2>&1
step done
touch "$GPU_OUT/bg/done"
