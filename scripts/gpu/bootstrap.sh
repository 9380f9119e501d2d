#!/usr/bin/env bash
# Call 1 of a session (carries .whl/): the wheels the image lacks into /tmp/site, the stack checked, and a
# probe of whether a process started now still runs at the next call (then the GPU tests and the random-
# weight benchmarks run in the background while the weights arrive).
source scripts/gpu/env.sh
source scripts/setup_gpu.sh .whl /tmp/site || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c "import gguf, hydra, omegaconf; print('gguf', gguf.__version__ if hasattr(gguf,'__version__') else 'ok', 'hydra', hydra.__version__)"
snapshot && mkdir -p "$GPU_OUT/bg"
detach "$GPU_OUT/bg/background.log" bash scripts/gpu/background.sh > "$GPU_OUT/bg/pid"
echo "background pid $(cat "$GPU_OUT/bg/pid") started at $(date +%T)"
