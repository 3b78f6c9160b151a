#!/bin/bash
# The codec measurements of docs/benchmarks.md ("Codecs"), in one go.
# Usage: bench/bench_codecs.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  meson build with tools/migstream (default: build)
#   OUT_DIR    where the text and JSON results go (default: artifacts/bench-codecs)
# Runs `migstream bench codecs` on the built-in sample (default chains, and a
# delta cache smaller than the working set), then on a real memory image: the
# writable mappings of a running python3 that built a large dict of strings,
# captured from /proc/PID/mem.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-artifacts/bench-codecs}
exe=$build/tools/migstream
[ -x "$exe" ] || { echo "no $exe: build first (ninja -C $build)" >&2; exit 2; }
mkdir -p "$out"

run() { # name, args...
  local name=$1; shift
  echo "=== migstream bench codecs $*"
  "$exe" bench codecs "$@" | tee "$out/$name.txt"
  "$exe" bench codecs "$@" --json > "$out/$name.json"
}

run sample --size 64 --mutate 0.05 --repeat 5
# The page store over four rounds: a resent set smaller than the store
# (7 MiB in 16 MiB) and one larger (18 MiB in 8 MiB).
run store-fits --size 64 --mutate 0.2 --rounds 4 --cache-mib 16 --dedup-mib 16 --repeat 3 \
  --chains "zero,delta,lz4;zero,dedup,delta,lz4"
run store-thrash --size 64 --mutate 0.5 --rounds 4 --cache-mib 8 --repeat 3 --chains "zero,delta,lz4"

# A real image: the anonymous and heap mappings of a live python3 process.
img=$out/python-heap.img
python3 - "$img" <<'PY'
import os, re, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import sys, time\n"
    "d = {('key%d' % i): ('value %d ' % i) * (i % 7 + 1) for i in range(400000)}\n"
    "l = [list(range(i % 50)) for i in range(100000)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"], stdout=subprocess.PIPE)
child.stdout.readline()
total = 0
with open(sys.argv[1], "wb") as out, open("/proc/%d/maps" % child.pid) as maps, \
     open("/proc/%d/mem" % child.pid, "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)", line)
        lo, hi, perms, inode, name = int(m[1], 16), int(m[2], 16), m[3], m[4], m[5]
        if "w" not in perms or inode != "0" or name.startswith("[v") or name == "[stack]":
            continue
        mem.seek(lo)
        try:
            data = mem.read(hi - lo)
        except OSError:
            continue
        out.write(data)
        total += len(data)
child.kill()
print("captured %d MiB of writable anonymous memory from pid %d" % (total >> 20, child.pid))
PY
run python-heap --image "$img" --mutate 0.05 --repeat 5
echo "results in $out/"
