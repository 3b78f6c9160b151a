#!/bin/bash
# Dedup on the RAM of a real VM (bench/vm-ram-image.sh): bytes and encode
# throughput of zero,dedup,lz4 against zero,lz4, and of zero,dedup,zstd:1
# against what QEMU's own multifd zstd:1 migration sent for the same guest.
#
#   bench/bench_dedup.sh MIGSTREAM [--image FILE] [--qemu-json FILE] [--reps 3]
#                        [--dedup-mib "64 512"] [--repeat 3] [--json-dir DIR]
#
# 1. `migstream bench codecs` (codec API as the pipeline drives it, MB/s per
#    core of CPU time, decoded frames compared with the originals; each figure
#    the best of --repeat runs in that process, each run with new page stores),
#    once per repetition and dedup store size, the chains in alternating
#    order; the medians of the repetitions are reported.
# 2. `migstream replay` of the image through the whole pipeline (TCP on
#    loopback, receiver in the process, image digests compared): the bytes
#    on the wire including frame headers, with the default page store.
# 3. QEMU's bytes: the relay count of bench/vm-ram-image.sh (bytes carried
#    from source to destination QEMU), and its query-migrate figures.
set -uo pipefail
M=${1:?usage: bench_dedup.sh MIGSTREAM [options]}
shift
image=/var/tmp/migstream-vm-ram.img qjson= reps=3 sizes="64 512" jdir= repeat=3
while [ $# -gt 0 ]; do
    case $1 in
    --image) image=$2; shift 2 ;;
    --qemu-json) qjson=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --dedup-mib) sizes=$2; shift 2 ;;
    --json-dir) jdir=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "bench_dedup: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$qjson" ] || qjson=${image%.img}.qemu.json
[ -f "$image" ] || { echo "bench_dedup: no image $image (make one with bench/vm-ram-image.sh)" >&2; exit 2; }
T=$(mktemp -d /tmp/ms-dedup.XXXXXX)
trap 'rm -rf "$T"' EXIT
[ -n "$jdir" ] || jdir=$T
mkdir -p "$jdir"

fwd="zero,lz4;zero,dedup,lz4;zero,zstd:1;zero,dedup,zstd:1"
rev="zero,dedup,zstd:1;zero,zstd:1;zero,dedup,lz4;zero,lz4"
for rep in $(seq "$reps"); do
    for mib in $sizes; do
        chains=$fwd
        [ $((rep % 2)) -eq 0 ] && chains=$rev
        "$M" bench codecs --image "$image" --mutate 0 --repeat "$repeat" --dedup-mib "$mib" --chains "$chains" --json \
            >"$jdir/codecs-$mib-$rep.json" || { echo "bench_dedup: bench codecs failed (exit $?)" >&2; exit 1; }
    done
done
for c in zero,lz4 zero,dedup,lz4 zero,zstd:1 zero,dedup,zstd:1; do
    "$M" replay --image "$image" --chain "$c" --quiet --json >"$jdir/replay-${c//[,:]/_}.json" ||
        { echo "bench_dedup: replay $c failed" >&2; exit 1; }
done

python3 - "$jdir" "$reps" "$qjson" $sizes <<'EOF'
import json, os, statistics, sys
jdir, reps, qjson, sizes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
med = statistics.median
for mib in sizes:
    runs = [json.load(open(os.path.join(jdir, 'codecs-%s-%d.json' % (mib, r)))) for r in range(1, reps + 1)]
    by = {}
    for j in runs:
        for c in j['chains']:
            by.setdefault(c['chain'], []).append(c)
    print('bench codecs, dedup store %s MiB per side, %d repetitions, each the best of %d runs (median, min..max):'
          % (mib, reps, runs[0]['repeat']))
    for name, cs in by.items():
        enc = [c['through_chain']['encode_mbs'] for c in cs]
        wire = cs[0]['through_chain']['wire_bytes']
        assert all(c['through_chain']['wire_bytes'] == wire and not c['through_chain']['mismatch'] for c in cs)
        print('  %-20s %6.1f MB (ratio %.2f)  encode %6.0f MB/s (%.0f..%.0f)  dup pages %d' % (
            name, wire / 1e6, cs[0]['through_chain']['ratio'], med(enc), min(enc), max(enc), cs[0]['stages']['dup']))
    for base, ded in (('zero,lz4:1', 'zero,dedup,lz4:1'), ('zero,zstd:1', 'zero,dedup,zstd:1')):
        b, d = by[base], by[ded]
        fewer = 1 - d[0]['through_chain']['wire_bytes'] / b[0]['through_chain']['wire_bytes']
        # Per repetition: the two chains ran in the same process, one after the other.
        pct = [100 * y['through_chain']['encode_mbs'] / x['through_chain']['encode_mbs'] for x, y in zip(b, d)]
        print('  %s vs %s: %.1f%% fewer bytes, encode %.0f%% of it (per repetition %s)' % (
            ded, base, 100 * fewer, med(pct), ', '.join('%.0f%%' % p for p in pct)))
print('migstream replay (whole pipeline, loopback, default store: delta 64 + dedup 64 MiB):')
rep = {}
for c in ('zero,lz4', 'zero,dedup,lz4', 'zero,zstd:1', 'zero,dedup,zstd:1'):
    j = json.load(open(os.path.join(jdir, 'replay-%s.json' % c.replace(',', '_').replace(':', '_'))))
    t = j['sender']['total']
    rep[c] = t['wire_bytes']
    print('  %-20s wire %6.1f MB (ratio %.2f), %s, dup pages %d' % (
        c, t['wire_bytes'] / 1e6, t['ratio'], 'identical' if j['identical'] else 'DIFFERS', t['stage']['dup']))
if os.path.exists(qjson):
    q = json.load(open(qjson))
    ram = q['source']['ram']
    print('QEMU %s multifd zstd level %s, %s channels: %.1f MB carried to the destination (relay count); '
          'query-migrate ram.transferred %.1f MB, ram.total %.1f MB, %d zero pages, %d normal pages' % (
          'migration', q['parameters']['multifd-zstd-level'], q['parameters']['multifd-channels'],
          q['relay']['to_destination'] / 1e6, ram['transferred'] / 1e6, ram['total'] / 1e6, ram['duplicate'],
          ram['normal']))
    print('  zero,dedup,zstd:1 through the pipeline: %.1f MB = %.0f%% of QEMU\'s' % (
        rep['zero,dedup,zstd:1'] / 1e6, 100 * rep['zero,dedup,zstd:1'] / q['relay']['to_destination']))
EOF
