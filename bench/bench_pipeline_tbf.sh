#!/bin/bash
# Replay of a real memory image over a tbf-limited veth between two network
# namespaces: effective rate (raw bytes / time) against the link rate.
#
#   bench_pipeline_tbf.sh MIGSTREAM [--rate 1gbit] [--pid PID | --image FILE]
#                         [--chain zero,delta,lz4] [--channels 4] [--rounds 3]
#                         [--mutate 0.05] [--keep-image FILE]
#
# The image is the memory of a running program, captured from /proc/PID/mem
# (every readable, writable private or anonymous mapping, concatenated). By
# default the program is a Python interpreter holding a realistic heap
# (dicts of strings, lists of floats and ints, a zeroed buffer) that the
# script starts and stops; --pid captures any other running process.
# Needs root (namespaces, tc); otherwise prints SKIP and exits 77.
set -euo pipefail
M=${1:?usage: bench_pipeline_tbf.sh MIGSTREAM [options]}
shift
rate=1gbit chain=zero,delta,lz4 channels=4 rounds=3 mutate=0.05 pid= image= keep=
while [ $# -gt 0 ]; do
    case $1 in
    --rate) rate=$2; shift 2 ;;
    --pid) pid=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --chain) chain=$2; shift 2 ;;
    --channels) channels=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --mutate) mutate=$2; shift 2 ;;
    --keep-image) keep=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for network namespaces and tc"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
netns="$here/../scripts/netns-tbf.sh"
export MS_NETNS_PREFIX=msplb
T=$(mktemp -d /tmp/ms-tbf.XXXXXX)
workload=
cleanup() {
    [ -n "$workload" ] && kill "$workload" 2>/dev/null || true
    "$netns" down >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT

# Copy every writable mapping of a process into one file.
capture() {
    local p=$1 out=$2
    : >"$out"
    while read -r range perms _ _ _ path; do
        [[ $perms == rw* ]] || continue
        case $path in "[vvar]" | "[vsyscall]" | "[vvar_vclock]") continue ;; esac
        local start=$((16#${range%-*})) end=$((16#${range#*-}))
        dd if=/proc/$p/mem bs=1M iflag=skip_bytes,count_bytes skip=$start count=$((end - start)) \
            status=none >>"$out" 2>/dev/null || true
    done </proc/$p/maps
}

if [ -z "$image" ]; then
    image="$T/image"
    if [ -z "$pid" ]; then
        python3 - >"$T/ready" <<'EOF' &
import array, random, sys, time
random.seed(7)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(3, 12))) for _ in range(5000)]
table = {f"user:{i}": {"name": random.choice(words), "visits": i * 7, "tags": random.sample(words, 3)} for i in range(400000)}
text = [" ".join(random.choices(words, k=12)) for _ in range(300000)]
floats = [random.random() for _ in range(2000000)]
ints = array.array("q", range(8000000))
zeros = bytearray(96 << 20)
print("ready", flush=True)
time.sleep(3600)
EOF
        workload=$!
        for _ in $(seq 600); do grep -q ready "$T/ready" 2>/dev/null && break; sleep 0.1; done
        pid=$workload
    fi
    capture "$pid" "$image"
fi
[ -n "$keep" ] && cp "$image" "$keep"
bytes=$(stat -c %s "$image")
"$netns" up "$rate" >/dev/null
case ${rate,,} in
*gbit) link=$(awk -v r="${rate%[gG]bit}" 'BEGIN { printf "%d", r * 125000000 }') ;;
*mbit) link=$(awk -v r="${rate%[mM]bit}" 'BEGIN { printf "%d", r * 125000 }') ;;
*) echo "--rate: use Nmbit or Ngbit" >&2; exit 2 ;;
esac

"$netns" exec B "$M" recv --listen 10.231.0.2:0 --insecure --discard --quiet --json >"$T/recv.json" 2>"$T/recv.err" &
rpid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 10\.231\.0\.2:\([0-9]*\).*/\1/p' "$T/recv.err")
    [ -n "$port" ] && break
    sleep 0.05
done
"$netns" exec A "$M" replay --image "$image" --chain "$chain" --channels "$channels" --rounds "$rounds" \
    --mutate "$mutate" --to "10.231.0.2:$port" --quiet --json >"$T/replay.json"
wait $rpid
python3 - "$T/replay.json" "$T/recv.json" "$link" "$bytes" "$rate" "$chain" "$channels" "$rounds" "$mutate" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1])); rcv = json.load(open(sys.argv[2]))
link, size = int(sys.argv[3]), int(sys.argv[4])
t = rep["sender"]["total"]
eff = t["raw_bytes"] / rep["wall_s"]
same = rep["source_digest"] == rcv["image_digest"]
print(f"image {size / 2**20:.0f} MiB, {sys.argv[5]} tbf link ({link / 1e6:.0f} MB/s), chain {sys.argv[6]}, "
      f"{sys.argv[7]} channels, {sys.argv[8]} rounds mutating {float(sys.argv[9]) * 100:.0f}%")
print(f"  raw {t['raw_bytes'] / 1e6:.0f} MB, wire {t['wire_bytes'] / 1e6:.0f} MB, ratio {t['raw_bytes'] / t['wire_bytes']:.2f}, "
      f"{rep['wall_s']:.2f} s")
print(f"  effective rate {eff / 1e6:.0f} MB/s = {eff / link:.2f}x the link; wire {t['wire_bytes'] / rep['wall_s'] / 1e6:.0f} MB/s")
print(f"  CPU sender {rep['cpu_sender_s']:.2f} s, receiver {rcv['stats']['cpu_s']:.2f} s; "
      f"receiver image digest {'matches' if same else 'DIFFERS'} ({rcv['image_digest']})")
sys.exit(0 if same and rep["result"] == "ok" and rcv["result"] == "ok" else 1)
EOF
