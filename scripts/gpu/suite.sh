#!/usr/bin/env bash
# The whole GPU test suite (every test marked `gpu`, every file) on the session's tree, as one detached job:
#   source scripts/gpu/env.sh && source scripts/setup_gpu.sh .whl /tmp/site && snapshot && mkdir -p $GPU_OUT/q \
#     && detach $GPU_OUT/q/suite.log bash scripts/gpu/suite.sh > $GPU_OUT/q/suite.pid
# (carry [".whl"]; no weights: the tests that need the staged pair skip without them). Poll with poll.sh; the log's
# last line is pytest's summary, `-rfE` lists each failure, the 30 slowest tests come before it, and junit.xml in
# $GPU_OUT/q has every test's outcome. $1: pytest-xdist workers (default 8). The call that starts it echoes the
# local commit (the device's copy of the tree is no git checkout to ask).
source scripts/gpu/env.sh
export PYTHONPATH="/tmp/site:/tmp/repo"
step gpu_suite
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
limit 570 python3 -m pytest -q -rfE -n "${1:-8}" --dist loadfile -m gpu -p no:cacheprovider --durations=30 \
  --junitxml="$GPU_OUT/q/junit.xml" tests
echo "suite rc $?"
step done
