#!/usr/bin/env bash
# Set up a bare GPU machine (no registry access) from a folder of wheels, then check the GPU stack.
#
#   source scripts/setup_gpu.sh [WHEEL_DIR] [TARGET]     # installs and exports PYTHONPATH in this shell
#   bash scripts/setup_gpu.sh [WHEEL_DIR] [TARGET]       # installs, checks, prints the export line
#
# WHEEL_DIR (default .whl) holds the wheels the image lacks, downloaded where pip works, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl flashinfer-python==0.6.18.post1 apache-tvm-ffi==0.1.15.post2
# (plus hydra-core, omegaconf, antlr4-python3-runtime wheels to run run.py there). They are installed
# with --no-index --no-deps into TARGET (default /tmp/site), which is put first on PYTHONPATH.
# Also sets the JIT cache folders (FLASHINFER_WORKSPACE_BASE, TRITON_CACHE_DIR) under
# ${SPECATTN_CACHE:-/tmp/specattn-cache}: a folder restored there skips FlashInfer's JIT builds
# (about 1.5 min per attention variant) on a fresh machine.
_sa_wheels="${1:-.whl}"
_sa_target="${2:-/tmp/site}"
_sa_fail() { echo "setup_gpu: $*" >&2; return 1 2>/dev/null || exit 1; }

_sa_main() {
  [ -d "$_sa_wheels" ] || { _sa_fail "wheel folder '$_sa_wheels' not found (pass it as the first argument)"; return 1; }
  ls "$_sa_wheels"/*.whl >/dev/null 2>&1 || { _sa_fail "no .whl files in '$_sa_wheels'"; return 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$_sa_target" "$_sa_wheels"/*.whl || { _sa_fail "pip install from '$_sa_wheels' failed"; return 1; }
  export PYTHONPATH="$_sa_target${PYTHONPATH:+:$PYTHONPATH}"
  export SPECATTN_CACHE="${SPECATTN_CACHE:-/tmp/specattn-cache}"
  export FLASHINFER_WORKSPACE_BASE="$SPECATTN_CACHE/flashinfer"
  export TRITON_CACHE_DIR="$SPECATTN_CACHE/triton"
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  mkdir -p "$FLASHINFER_WORKSPACE_BASE" "$TRITON_CACHE_DIR"
  python3 - <<'PY' || { _sa_fail "import check failed (see above)"; return 1; }
import importlib, sys
import torch
mods = {}
for name in ["triton", "flashinfer", "tvm_ffi", "pandas", "pytest"]:
    try:
        m = importlib.import_module(name)
        mods[name] = getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        print(f"setup_gpu: cannot import {name}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
if not torch.cuda.is_available():
    print("setup_gpu: torch sees no CUDA GPU", file=sys.stderr)
    sys.exit(1)
p = torch.cuda.get_device_properties(0)
print(f"setup_gpu: {p.name} x{torch.cuda.device_count()} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB), "
      f"torch {torch.__version__} cuda {torch.version.cuda}, python {sys.version.split()[0]}, "
      + ", ".join(f"{k} {v}" for k, v in mods.items()))
PY
}

if _sa_main; then
  if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "export PYTHONPATH=$PYTHONPATH FLASHINFER_WORKSPACE_BASE=$FLASHINFER_WORKSPACE_BASE TRITON_CACHE_DIR=$TRITON_CACHE_DIR"
  fi
else
  [[ "${BASH_SOURCE[0]}" == "$0" ]] && exit 1
fi
unset -f _sa_main _sa_fail
unset _sa_wheels _sa_target
