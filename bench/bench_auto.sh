#!/bin/bash
# `auto` against the fixed chains it chooses among, at three link rates:
# a tbf-limited veth between two network namespaces (scripts/netns-tbf.sh)
# at each given rate, and "unlimited" = loopback with the receiver in the
# replaying process.
#
#   bench/bench_auto.sh MIGSTREAM --image FILE [--rates "100mbit 1gbit unlimited"]
#                       [--stages zero] [--reps 3] [--channels 1] [--json-dir DIR]
#                       [--other-auto MIGSTREAM2]
#
# Each repetition runs every chain once per rate, the chains in an order
# rotated by one per repetition, so background load falls on all of them
# alike. Reports, per rate, the median (min..max) effective rate of each chain
# (raw image bytes / wall time, MB/s), auto's median as a share of the best
# and worst fixed chain's median, and auto's choices (bytes per codec from
# the sender's JSON). Every run must deliver an identical image (the
# receiver's digest is compared with the source's), or the script fails.
# --other-auto adds a sixth contestant, "auto@other": `auto` as built in
# another tree (e.g. before a change to its rule), in the same rotation.
# Needs root for the namespaces; otherwise prints SKIP and exits 77.
set -uo pipefail
M=${1:?usage: bench_auto.sh MIGSTREAM --image FILE [options]}
shift
image= rates="100mbit 1gbit unlimited" stages=zero reps=3 channels=1 jdir= other=
while [ $# -gt 0 ]; do
    case $1 in
    --image) image=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --stages) stages=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --channels) channels=$2; shift 2 ;;
    --json-dir) jdir=$2; shift 2 ;;
    --other-auto) other=$2; shift 2 ;;
    *) echo "bench_auto: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$image" ] || { echo "bench_auto: --image FILE is needed" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for network namespaces and tc"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/../scripts/netns-tbf.sh"
export MS_NETNS_PREFIX=msauto
T=$(mktemp -d /tmp/ms-auto.XXXXXX)
[ -n "$jdir" ] || jdir=$T
mkdir -p "$jdir"
cleanup() {
    "$netns" down >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT
chains=("$stages,none" "$stages,lz4" "$stages,zstd:1" "$stages,zstd:3" "$stages,auto")
[ -z "$other" ] || chains+=("$stages,auto@other")

# One replay over the veth (rate given) or loopback ("unlimited"); its JSON
# goes to $1, the receiver's to $1.recv.
run_one() {
    local out=$1 rate=$2 chain=${3%@other} bin=$M
    [ "$chain" = "$3" ] || bin=$other
    if [ "$rate" = unlimited ]; then
        "$bin" replay --image "$image" --chain "$chain" --channels "$channels" --quiet --json >"$out"
        return
    fi
    local err=$out.recv.err port= i rc
    rm -f "$err"
    "$netns" exec B "$M" recv --listen 10.231.0.2:0 --insecure --discard --quiet --json >"$out.recv" 2>"$err" &
    local rpid=$!
    for i in $(seq 200); do
        port=$(sed -n 's/.*listening on 10\.231\.0\.2:\([0-9]*\).*/\1/p' "$err" 2>/dev/null)
        [ -n "$port" ] && break
        sleep 0.05
    done
    "$netns" exec A "$bin" replay --image "$image" --chain "$chain" --channels "$channels" \
        --to "10.231.0.2:$port" --quiet --json >"$out"
    rc=$?
    # A sender that never connected leaves the receiver waiting.
    [ $rc -eq 0 ] || kill $rpid 2>/dev/null
    wait $rpid && return $rc
}

for rate in $rates; do
    if [ "$rate" != unlimited ]; then
        "$netns" down >/dev/null 2>&1
        "$netns" up "$rate" >/dev/null || { echo "bench_auto: netns-tbf.sh up $rate failed" >&2; exit 1; }
    fi
    for rep in $(seq "$reps"); do
        n=${#chains[@]}
        for k in $(seq 0 $((n - 1))); do
            c=${chains[$(((k + rep - 1) % n))]}
            run_one "$jdir/$rate-${c//[,:]/_}-$rep.json" "$rate" "$c" ||
                { echo "bench_auto: $rate $c rep $rep failed" >&2; exit 1; }
        done
    done
done

python3 - "$jdir" "$reps" "$stages" $rates <<'EOF'
import json, os, statistics, sys
jdir, reps, stages, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
fixed = [stages + ',' + c for c in ('none', 'lz4', 'zstd:1', 'zstd:3')]
ok = True
for rate in rates:
    res = {}
    autos = [stages + ',auto'] + ([stages + ',auto@other'] if os.path.exists(os.path.join(
        jdir, '%s-%s_auto@other-1.json' % (rate, stages.replace(',', '_')))) else [])
    for c in fixed + autos:
        runs = []
        for rep in range(1, reps + 1):
            p = os.path.join(jdir, '%s-%s-%d.json' % (rate, c.replace(',', '_').replace(':', '_'), rep))
            j = json.load(open(p))
            if os.path.exists(p + '.recv'):
                rc = json.load(open(p + '.recv'))
                same = rc.get('image_digest') == j['source_digest'] and rc.get('result') == 'ok'
            else:
                same = j.get('identical', False)
            ok &= same and j['result'] == 'ok'
            t = j['sender']['total']
            runs.append((t['raw_bytes'] / j['wall_s'] / 1e6, t['wire_bytes'], t.get('comp_bytes', {}), j))
        res[c] = runs
    med = {c: statistics.median(r[0] for r in runs) for c, runs in res.items()}
    print('%s:' % rate)
    for c, runs in res.items():
        rs = [r[0] for r in runs]
        wire = statistics.median(r[1] for r in runs) / 1e6
        extra = ''
        if 'auto' in c:
            cb = [r[2] for r in runs]
            extra = '  wire bytes per codec (MB): ' + ' | '.join(
                ' '.join('%s %.1f' % (k, v / 1e6) for k, v in b.items() if v) for b in cb)
            a = runs[0][3]['sender']['total']
            if 'auto' in a:
                extra += '  auto: ' + json.dumps(a['auto'])
        print('  %-16s %8.1f MB/s (%.1f..%.1f)  wire %7.1f MB%s' % (c, med[c], min(rs), max(rs), wire, extra))
    best = max(med[c] for c in fixed); worst = min(med[c] for c in fixed)
    for c in autos:
        print('  %s = %.1f%% of the best fixed chain (%s), %.2fx the worst (%s)' % (
            c, 100 * med[c] / best, max(fixed, key=med.get), med[c] / worst, min(fixed, key=med.get)))
print('every run delivered the identical image' if ok else 'SOME RUN FAILED OR DIFFERED')
sys.exit(0 if ok else 1)
EOF
