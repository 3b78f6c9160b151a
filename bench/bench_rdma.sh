#!/bin/bash
# Compare migstream's rdma and tcp transports on real hardware: the same two
# hosts, the same address, the same ms_conn calls (bench_rdma), alternating
# tcp and rdma runs so drift in the machines hits both alike.
#
# Usage (on the sending host):
#   bench/bench_rdma.sh --server HOST --ip IP [--bytes 8G] [--reps 3]
#                       [--bench PATH] [--remote-bench PATH] [--port 7471]
#                       [--rdma-opts SPEC]
#   HOST   ssh destination of the receiving host (key-based ssh, no prompt)
#   IP     the receiving host's address on its RDMA-capable netdev (RoCE:
#          the NIC's IP, used by both transports; InfiniBand: its IPoIB
#          address, so tcp runs over IPoIB there)
#   PATH   bench_rdma on this host (default BUILD/tests/rdma/bench_rdma with
#          BUILD=build) and on HOST (default: the same path)
# Without --server both ends run on this host (through the NIC's loopback).
#
# Prints one line per run and a median table: MB/s, sender and receiver CPU
# seconds per GiB (user + system, from getrusage of each side's thread).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
server="" ip="" bytes=8G reps=3 port=7471 ropts=""
bench=$top/build/tests/rdma/bench_rdma remote_bench=""
while [ $# -gt 0 ]; do
  case $1 in
    --server) server=$2; shift ;;
    --ip) ip=$2; shift ;;
    --bytes) bytes=$2; shift ;;
    --reps) reps=$2; shift ;;
    --port) port=$2; shift ;;
    --bench) bench=$2; shift ;;
    --remote-bench) remote_bench=$2; shift ;;
    --rdma-opts) ropts=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "bench_rdma.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$ip" ] || { echo "bench_rdma.sh: --ip IP is required (the receiver's RDMA netdev address)" >&2; exit 2; }
[ -x "$bench" ] || { echo "bench_rdma.sh: $bench not built (ninja -C build tests/rdma/bench_rdma)" >&2; exit 2; }
remote_bench=${remote_bench:-$bench}
extra=()
[ -n "$ropts" ] && extra=(--rdma-opts "$ropts")

# Start the receiving side (remote over ssh, or local) and return its pid.
start_server() {
  local t=$1 out=$2
  if [ -n "$server" ]; then
    ssh -o BatchMode=yes "$server" "$remote_bench" --serve "$ip:$port" --transport "$t" --bytes "$bytes" \
      --json "${extra[@]}" >"$out" 2>"$out.err" &
  else
    "$bench" --serve "$ip:$port" --transport "$t" --bytes "$bytes" --json "${extra[@]}" >"$out" 2>"$out.err" &
  fi
  echo $!
}

field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$1" | head -1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-5s %-4s %10s %14s %14s\n' run tr "MB/s" "send s/GiB" "recv s/GiB"
for r in $(seq 1 "$reps"); do
  for t in tcp rdma; do
    pid=$(start_server "$t" "$tmp/srv.json")
    sleep 1
    if ! "$bench" --connect "$ip:$port" --transport "$t" --bytes "$bytes" --json "${extra[@]}" \
         >"$tmp/cli.json" 2>"$tmp/cli.err"; then
      echo "bench_rdma.sh: $t sender failed: $(cat "$tmp/cli.err")" >&2
      kill "$pid" 2>/dev/null
      exit 1
    fi
    wait "$pid" || { echo "bench_rdma.sh: $t receiver failed: $(cat "$tmp/srv.json.err")" >&2; exit 1; }
    mbps=$(field "$tmp/cli.json" MBps)
    s=$(awk -v u="$(field "$tmp/cli.json" send_user_s_per_GiB)" -v k="$(field "$tmp/cli.json" send_sys_s_per_GiB)" 'BEGIN { printf "%.3f", u + k }')
    d=$(awk -v u="$(field "$tmp/srv.json" recv_user_s_per_GiB)" -v k="$(field "$tmp/srv.json" recv_sys_s_per_GiB)" 'BEGIN { printf "%.3f", u + k }')
    printf '%-5s %-4s %10s %14s %14s\n' "$r" "$t" "$mbps" "$s" "$d"
    echo "$t $mbps $s $d" >>"$tmp/all"
  done
done
echo "median over $reps runs:"
for t in tcp rdma; do
  for col in 2 3 4; do
    awk -v t="$t" -v c="$col" '$1 == t { print $c }' "$tmp/all" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
  done | paste -sd' ' | awk -v t="$t" '{ printf "%-4s %10s MB/s  sender %s s/GiB  receiver %s s/GiB\n", t, $1, $2, $3 }'
done
