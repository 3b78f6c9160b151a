#!/bin/bash
# Run the whole test suite: a release build and an AddressSanitizer +
# UndefinedBehaviorSanitizer build, each with every CUnit suite.
# Usage: scripts/test.sh [--quick]   (--quick: release build only)
# Needs root for the live-migration and network-namespace tests; without
# root those tests report SKIP with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

bash scripts/deps.sh || exit 1

total_pass=0 total_fail=0 total_skip=0
run_suite() {
  local dir=$1; shift
  echo "=== build $dir $*"
  bash scripts/build.sh "$dir" "$@" || { total_fail=$((total_fail + 1)); return; }
  echo "=== test $dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2 -t 2
  local log="$dir/meson-logs/testlog.json"
  if [ -f "$log" ]; then
    local p f s
    p=$(grep -c '"result": "OK"' "$log")
    s=$(grep -c '"result": "SKIP"' "$log")
    f=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
  else
    total_fail=$((total_fail + 1))
  fi
}

run_suite build -Dbuildtype=release
if [ $quick -eq 0 ]; then
  run_suite build-asan -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fno-sanitize-recover=all
fi

echo "tests: $total_pass passed, $total_fail failed, $total_skip skipped"
[ $total_fail -eq 0 ]
