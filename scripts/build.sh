#!/bin/bash
# Configure (once) and build migstream into a build directory.
# Usage: scripts/build.sh [BUILDDIR] [extra meson options...]
#   BUILDDIR defaults to "build". Examples:
#   scripts/build.sh build-asan -Db_sanitize=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "$@"
fi
ninja -C "$dir"
