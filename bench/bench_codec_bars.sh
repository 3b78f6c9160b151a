#!/usr/bin/env bash
# Issue 2's codec bars, repeated: runs `migstream bench codecs --json` N times
# on the built-in sample and prints, per bar, the lowest, median and highest
# value with the bar beside it. Repeats rather than one run because these
# machines are shared: a single run can land on a neighbour's burst.
# Usage: bench/bench_codec_bars.sh [MIGSTREAM] [RUNS]   (defaults: build/tools/migstream 7)
set -euo pipefail
ms=${1:-build/tools/migstream}
runs=${2:-7}
[[ -x $ms ]] || { echo "bench_codec_bars: $ms is not an executable (build first)" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((i = 0; i < runs; i++)); do
    "$ms" bench codecs --chains "lz4;zstd:1" --json >>"$out"
    echo >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = []
def add(name, vals, bar):
    vals = sorted(vals)
    rows.append((name, vals[0], statistics.median(vals), vals[-1], bar))
for chain in ("lz4:1", "zstd:1"):
    for k in ("encode", "decode"):
        add(f"{chain} {k} % of direct",
            [c[f"{k}_pct_of_direct"] for r in runs for c in r["chains"] if c["chain"] == chain], ">= 95")
add("zero check GB/s, from memory", [r["zero_check_gbs"]["memory"] for r in runs], ">= 10")
add("  glibc memchr, same pages", [r["zero_check_gbs"]["memchr_memory"] for r in runs], "(memory bound)")
add("zero check GB/s, in cache", [r["zero_check_gbs"]["cache"] for r in runs], ">= 10")
add("delta GB/s, resent pages from memory", [r["delta_encode_gbs"]["memory"] for r in runs], ">= 2.5")
add("delta GB/s, resent pages in cache", [r["delta_encode_gbs"]["cache"] for r in runs], ">= 2.5")
add("delta GB/s, isolated bytes (worst)", [r["delta_encode_gbs"]["scattered_cache"] for r in runs], "(worst case)")
print(f"{len(runs)} runs of `bench codecs`\n")
print(f"{'measure':38} {'lowest':>8} {'median':>8} {'highest':>8}  bar")
for n, lo, md, hi, bar in rows:
    print(f"{n:38} {lo:8.2f} {md:8.2f} {hi:8.2f}  {bar}")
PY
