#!/usr/bin/env bash
# After the last piece: rebuild and verify the GGUF files, convert them into $SPECATTN_CACHE.
source scripts/gpu/env.sh
/usr/bin/time -f "assemble+convert %e s, peak %M KB" python3 -m specattn.models.staging assemble \
  --from /tmp/specattn-stage --site /tmp/site
ls -la $SPECATTN_CACHE/models
[ -f "$GPU_OUT/bg/background.log" ] && tail -n 4 "$GPU_OUT/bg/background.log"
