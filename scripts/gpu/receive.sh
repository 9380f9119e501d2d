#!/usr/bin/env bash
# Every staging call (carries .stage/manifest.json and one piece): move the piece out of the repo copy.
source scripts/gpu/env.sh
python3 -m specattn.models.staging receive --from .stage --to /tmp/specattn-stage
[ -f "$GPU_OUT/bg/background.log" ] && tail -n 2 "$GPU_OUT/bg/background.log"
