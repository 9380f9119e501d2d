# Sourced by every scripts/gpu/*.sh command on the lent GPU machine (docs/gpu.md, "A session").
# The repository copy is rebuilt at every call: everything that must last lives under /tmp.
export GPU_OUT=${GPU_OUT:-/tmp/gpu-out} SPECATTN_CACHE=/tmp/specattn-cache
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FLASHINFER_WORKSPACE_BASE=$SPECATTN_CACHE/flashinfer TRITON_CACHE_DIR=$SPECATTN_CACHE/triton
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false MAX_JOBS=16
mkdir -p "$GPU_OUT" "$FLASHINFER_WORKSPACE_BASE" "$TRITON_CACHE_DIR"
# the real pair's js-calibrated layer map (16K calibration; docs/results.md), the map of every real-weight run here
JS_MAP=layer_map=docs/data/h200-real-2026-12-03e/layer_map_js_qwen_coder_16k.yaml
# a step's header in a job's log: its name and the time
step() { echo "== $1 $(date +%T)"; }
# `timeout` that keeps its command in the job's process group, so stopping a job (`kill -- -PGID`: stop_background, a
# chain stopped from a poll) stops what it runs too (plain `timeout` moves its command to a group of its own: a stopped
# job's pytest once ran on beside the next timed run, twenty-eighth session)
limit() { timeout --foreground "$@"; }
# run.py with the session's fixed settings; $1: a wall-clock limit in seconds (a killed run resumes later)
# (PRECHECK=FILE: append the overrides to FILE instead, one shell-quoted line per run, for tests/test_gpu_scripts.py)
spec() { local limit=$1; shift; if [ -n "$PRECHECK" ]; then printf '%q ' "$@" >> "$PRECHECK"; echo >> "$PRECHECK"; return; fi
         limit "$limit" python3 run.py logger=none progress=false \
           paths.outputs="$GPU_OUT/outputs" "$@" 2>&1 | grep -v -i "warn" | tail -n 40; }
# pack what came out under $GPU_OUT into $OUT (at most 8 files of 16 MiB come back)
pack() { tar -czf "$OUT/$1.tar.gz" -C "$GPU_OUT" --exclude='*.safetensors' --exclude='wandb' \
           $(cd "$GPU_OUT" && ls -d "${@:2}" 2>/dev/null) && ls -la "$OUT"; }
# a copy of the tree in /tmp/repo for jobs that outlive the call (the call's repo copy is rebuilt at the next one);
# made once per machine: the tree is fixed for a session, and jobs started earlier still read from it
snapshot() { [ -d /tmp/repo ] || cp -r "$PWD" /tmp/repo; }
# start "$@" from /tmp/repo, detached: no descriptor of the call stays open (else the call waits for the job);
# $1: the job's log file; prints the job's pid (= its process group: `kill -- -PID` stops it)
detach() { local log=$1; shift; (cd /tmp/repo && exec setsid nohup "$@" > "$log" 2>&1 < /dev/null) \
             > /dev/null 2>&1 < /dev/null & echo $!; }
# timings need the GPU to themselves: wait up to $1 s (default 60) for the background job, then stop it
stop_background() { local i; for i in $(seq 1 $(( ${1:-60} / 5 ))); do
    [ -f "$GPU_OUT/bg/done" ] || ! kill -0 "$(cat "$GPU_OUT/bg/pid" 2>/dev/null)" 2>/dev/null && break; sleep 5; done
  echo "background: $(tail -n 1 "$GPU_OUT/bg/background.log" 2>/dev/null)"
  if [ ! -f "$GPU_OUT/bg/done" ] && kill -0 "$(cat "$GPU_OUT/bg/pid" 2>/dev/null)" 2>/dev/null; then
    kill -- -"$(cat "$GPU_OUT/bg/pid")"; sleep 3; echo "background stopped (what follows has the GPU alone)"; fi; }
