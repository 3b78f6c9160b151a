#!/bin/bash
# Build the libFuzzer targets with clang and run each for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
# Corpora are kept in fuzz-corpus/NAME (ignored by git); a crash leaves its
# input in artifacts/ and makes this script fail.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
dir=build-fuzz
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" -Dfuzz=true -Dtests=false -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false || exit 1
fi
ninja -C "$dir" || exit 1
mkdir -p artifacts
fail=0 ran=0
for t in "$dir"/fuzz/fuzz_*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  name=$(basename "$t")
  mkdir -p "fuzz-corpus/$name"
  echo "=== $name for ${secs}s"
  if UBSAN_OPTIONS=halt_on_error=1 "$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
       -artifact_prefix="artifacts/$name-" -print_final_stats=1 "fuzz-corpus/$name" \
       > "artifacts/$name.log" 2>&1; then
    echo "$name: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "artifacts/$name.log" | grep -o '[0-9]*$') runs)"
  else
    echo "$name: FAILED (see artifacts/$name.log)"; tail -30 "artifacts/$name.log"; fail=$((fail + 1))
  fi
  ran=$((ran + 1))
done
echo "fuzz: $((ran - fail)) passed, $fail failed"
[ $fail -eq 0 ]
