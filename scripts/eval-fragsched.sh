#!/bin/bash
# Evaluation of the migration policies on real, running workloads
# (docs/results.md): precopy (Xen 4.17's default), fragmented and downtime
# (QEMU-like), each migration verified page for page.
#
#   scripts/eval-fragsched.sh [-b BUILD] [-o OUT] [-r REPS] [-l LINKS] [-w WORKLOADS] [-s SIZE]
#                             [-p POLICIES] [-d]
#
#   -b BUILD      meson build directory (default: build)
#   -o OUT        results: OUT/LINK-WORKLOAD-REP.json, plots in OUT/img (default: eval-out)
#   -r REPS       repetitions of each (link, workload) (default 3)
#   -l LINKS      comma list of loopback, tbf (default loopback,tbf); tbf is a
#                 1 Gbit/s tc-tbf veth pair between two network namespaces
#                 (scripts/netns-tbf.sh), the receiver's socket on the far side
#   -w WORKLOADS  comma list of idle, hotspot, sweep, stressng, redis
#                 (default: all five)
#   -s SIZE       workload memory (default 512M)
#   -p POLICIES   comma list (default precopy,fragmented,downtime). Each
#                 repetition rotates the order by one, so no policy always
#                 runs first (on a shared machine the load drifts). Started
#                 commands get a fresh instance per policy; redis too (a
#                 fresh server, filled again, per policy: its lists grow
#                 under the benchmark, so a shared one would favour
#                 whichever policy migrates it first).
#   -d            first measure each workload's dirty rate against the 1 Gbit/s
#                 link (`migstream dirtyrate`, 5 s read every 50 ms, 1 s
#                 windows) into OUT/dirtyrate-WORKLOAD.json; the issue's
#                 time bar is for workloads at >= 0.5 of the link
#
# Then: python3 bench/eval_summary.py OUT   (median table in Markdown).
# Needs root, Linux >= 6.7, stress-ng, redis-server and redis-benchmark.
set -euo pipefail

build=build
out=eval-out
reps=3
links=loopback,tbf
workloads=idle,hotspot,sweep,stressng,redis
size=512M
policies=precopy,fragmented,downtime
dirtyrate=0
while getopts "b:o:r:l:w:s:p:dh" opt; do
    case $opt in
        b) build=$OPTARG ;;
        o) out=$OPTARG ;;
        r) reps=$OPTARG ;;
        l) links=$OPTARG ;;
        w) workloads=$OPTARG ;;
        s) size=$OPTARG ;;
        p) policies=$OPTARG ;;
        d) dirtyrate=1 ;;
        *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
ms=$(realpath "$build/tools/migstream")
dirtier=$(realpath "$build/sources/migstream-dirtier")
netns="$here/netns-tbf.sh"
prefix=mseval
redis_port=6391
redis_pid=
bench_pid=
mkdir -p "$out/img"
out=$(realpath "$out")

stop_redis() {
    [[ -n $bench_pid ]] && kill "$bench_pid" 2>/dev/null || true
    [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null || true
    [[ -n $redis_pid ]] && wait "$redis_pid" 2>/dev/null || true
    bench_pid=
    redis_pid=
}

cleanup() {
    stop_redis
    "$netns" -p "$prefix" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# redis-server without persistence, filled with ~200 MiB of values, then
# redis-benchmark writing to it while the redis runs last (stopped after
# them, so it does not load the machine during the other workloads).
start_redis() {
    redis-server --port "$redis_port" --save '' --appendonly no --daemonize no \
        --logfile /dev/null >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-benchmark -p "$redis_port" -t set -n 400000 -r 400000 -d 512 -P 32 -q >/dev/null
    redis-benchmark -p "$redis_port" -t set,lpush -n 2000000000 -r 400000 -d 512 -c 8 -P 4 -q \
        >/dev/null 2>&1 &
    bench_pid=$!
    sleep 2
}

# Arguments selecting the workload for `migstream migrate`.
workload_args() {
    case $1 in
        idle) echo "--ready ready --warmup 1 -- $dirtier --size $size --rate 10 --counter 0" ;;
        hotspot) echo "--ready ready --warmup 1 -- $dirtier --size $size --rate 100000 --counter 0" ;;
        sweep) echo "--warmup 4 -- stress-ng --vm 1 --vm-bytes $size --vm-keep --vm-method write64 --timeout 900s --quiet" ;;
        stressng) echo "--warmup 4 -- stress-ng --vm 1 --vm-bytes $size --vm-keep --timeout 900s --quiet" ;;
        redis) echo "--pid $redis_pid" ;;
        *) echo "unknown workload $1" >&2; exit 2 ;;
    esac
}

# The policies in the order of repetition $1 (rotated by rep - 1).
policy_order() {
    local -a p
    IFS=, read -r -a p <<<"$policies"
    local n=${#p[@]} k=$(( ($1 - 1) % ${#p[@]} )) i res=()
    for (( i = 0; i < n; i++ )); do
        res+=("${p[(i + k) % n]}")
    done
    (IFS=,; echo "${res[*]}")
}

# One `migstream migrate` of workload $2 with policies $4 (comma list),
# JSON to $5, stderr appended to $6.
migrate_once() {
    local link=$1 wl=$2 rep=$3 pols=$4 json=$5 err=$6 plot=()
    [[ $rep == 1 && $wl != redis ]] && plot=(--plot "$out/img/eval-$link-$wl" --plot-title "$wl, $link")
    local wargs
    wargs=$(workload_args "$wl")
    local cmd=("$ms" migrate --policy "$pols" --chain "zero,delta,lz4" --json "${plot[@]}")
    if [[ $link == tbf ]]; then
        cmd=("$netns" -p "$prefix" exec A "${cmd[@]}" --receiver-netns "${prefix}B"
             --local-listen 10.231.0.2)
    fi
    # shellcheck disable=SC2086
    "${cmd[@]}" $wargs >"$json" 2>>"$err" || echo "   exit $? (see $err)"
}

run() {
    local link=$1 wl=$2 rep=$3
    local json="$out/$link-$wl-$rep.json" err="$out/$link-$wl-$rep.err" order
    order=$(policy_order "$rep")
    echo "== $link $wl rep $rep ($order): $(date +%T)"
    : >"$err"
    if [[ $wl != redis ]]; then
        migrate_once "$link" "$wl" "$rep" "$order" "$json" "$err"
        return 0
    fi
    local parts=() pol pols
    IFS=, read -r -a pols <<<"$order"
    for pol in "${pols[@]}"; do
        start_redis
        migrate_once "$link" "$wl" "$rep" "$pol" "$json.$pol" "$err"
        stop_redis
        parts+=("$json.$pol")
    done
    python3 -c 'import json, sys
m = []
for p in sys.argv[2:]:
    try:
        m += json.load(open(p))["migrations"]
    except (OSError, ValueError, KeyError):
        pass
json.dump({"migrations": m}, open(sys.argv[1], "w"))' "$json" "${parts[@]}"
    rm -f "${parts[@]}"
    return 0
}

IFS=, read -r -a link_list <<<"$links"
IFS=, read -r -a wl_list <<<"$workloads"
if (( dirtyrate )); then
    for wl in "${wl_list[@]}"; do
        echo "== dirty rate of $wl: $(date +%T)"
        [[ $wl == redis ]] && start_redis
        # shellcheck disable=SC2046
        "$ms" dirtyrate --link 1gbit --json $(workload_args "$wl") >"$out/dirtyrate-$wl.json" ||
            echo "   dirtyrate of $wl failed"
        [[ $wl == redis ]] && stop_redis
    done
fi
for link in "${link_list[@]}"; do
    if [[ $link == tbf ]]; then
        "$netns" -p "$prefix" up 1gbit
    fi
    for rep in $(seq "$reps"); do
        for wl in "${wl_list[@]}"; do
            run "$link" "$wl" "$rep"
        done
    done
    if [[ $link == tbf ]]; then
        "$netns" -p "$prefix" down
    fi
done
echo "done: python3 $here/../bench/eval_summary.py $out"
