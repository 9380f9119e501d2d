#!/usr/bin/env bash
# A session's waiter (docs/gpu.md, "A session"): started detached beside a timed job, it waits for that job's marker
# file under $GPU_OUT/q (e.g. breadth.done), then runs with the GPU to itself every GPU test file given in $TESTS (one
# pytest run each, its own log and summary line; a file the background job passed from the same tree is skipped) and
# finally the quality parts of $PARTS side by side for ${LIMIT:-600} s (scripts/gpu/parallel.sh), so no poll has to
# start anything on time. $1: the marker's name.
#   detach $GPU_OUT/q/after.log env TESTS="test_step test_draft_rows" PARTS=oracle_32k_more bash scripts/gpu/after.sh breadth.done
source scripts/gpu/env.sh
mkdir -p "$GPU_OUT/q"
while [ ! -f "$GPU_OUT/q/${1:?the marker file to wait for}" ]; do sleep 2; done
for f in $TESTS; do
  step "$f"
  if [ -n "$PRECHECK" ]; then echo "pytest tests/$f.py" >> "$PRECHECK"; continue; fi
  if tail -n 1 "$GPU_OUT/bg/pytest_$f.log" 2>/dev/null | grep -q "passed" \
     && ! tail -n 1 "$GPU_OUT/bg/pytest_$f.log" | grep -q "failed\|error"; then
    echo "$f: passed in the background job already ($(tail -n 1 "$GPU_OUT/bg/pytest_$f.log"))"; continue; fi
  limit 200 python3 -m pytest -q -rfE -n 8 -m gpu -p no:cacheprovider "tests/$f.py" > "$GPU_OUT/q/pytest_$f.log" 2>&1
  echo "$f rc $? $(tail -n 1 "$GPU_OUT/q/pytest_$f.log")"
done
[ -n "$PARTS" ] && [ -z "$PRECHECK" ] && bash scripts/gpu/parallel.sh $PARTS
step "after done"
touch "$GPU_OUT/q/after.done"
