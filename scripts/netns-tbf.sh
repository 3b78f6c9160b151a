#!/bin/bash
# A rate-limited link between two network namespaces, for tests and
# benchmarks that need a real bottleneck (tc tbf) without touching the
# host's own interfaces.
#
#   netns-tbf.sh [-p PREFIX] up RATE [BURST]   create PREFIXA and PREFIXB joined by a veth
#                                              pair, 10.231.0.1 (A) <-> 10.231.0.2 (B),
#                                              tbf at RATE (tc syntax: 100mbit, 1gbit) on
#                                              both ends
#   netns-tbf.sh [-p PREFIX] down              remove both namespaces (and the veth pair)
#   netns-tbf.sh [-p PREFIX] exec A|B CMD...   run CMD inside namespace A or B
#   netns-tbf.sh [-p PREFIX] rate RATE [BURST] change the tbf rate of an existing link
#   netns-tbf.sh [-p PREFIX] cut               drop every packet both ways (a vanished peer:
#                                              no FIN, no RST); "rate" restores the link
#
# PREFIX (default "ms", or $MS_NETNS_PREFIX) keeps parallel runs apart; it
# names the namespaces PREFIX"A"/PREFIX"B" and the veth ends PREFIX"vA"/"vB",
# so it must be at most 12 characters. The addresses exist only inside the
# namespaces. Needs root: otherwise prints "SKIP: reason" and exits 77, the
# code meson reads as a skipped test.
set -euo pipefail

SKIP=77
prefix=${MS_NETNS_PREFIX:-ms}

usage() {
    sed -n '6,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

skip() {
    echo "SKIP: $*"
    exit $SKIP
}

die() {
    echo "netns-tbf.sh: $*" >&2
    exit 1
}

# tc rate string -> bytes per second (tc's units: bit = bits, bps = bytes).
rate_bytes() {
    local r=${1,,} num unit
    num=${r%%[a-z]*}
    unit=${r#"$num"}
    [[ $num =~ ^[0-9]+([.][0-9]+)?$ ]] || die "bad rate '$1' (use tc syntax, e.g. 100mbit)"
    local mult
    case $unit in
        bit | "") mult=0.125 ;;
        kbit) mult=125 ;;
        mbit) mult=125000 ;;
        gbit) mult=125000000 ;;
        bps) mult=1 ;;
        kbps) mult=1000 ;;
        mbps) mult=1000000 ;;
        gbps) mult=1000000000 ;;
        *) die "bad rate unit in '$1' (bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)" ;;
    esac
    awk -v n="$num" -v m="$mult" 'BEGIN { printf "%d\n", n * m }'
}

# The bucket holds 20 ms of line rate: small enough that a one-second
# measurement overshoots the rate by at most 2%, and never below 64 KiB so
# a full-size GSO packet from the veth still fits in one go.
default_burst() {
    local b=$(($(rate_bytes "$1") / 50))
    ((b < 65536)) && b=65536
    echo $b
}

need_root() {
    [[ $(id -u) -eq 0 ]] || skip "netns-tbf.sh needs root to create network namespaces (uid $(id -u))"
    command -v ip >/dev/null || skip "'ip' (iproute2) is not installed"
    command -v tc >/dev/null || skip "'tc' (iproute2) is not installed"
}

ns_a() { echo "${prefix}A"; }
ns_b() { echo "${prefix}B"; }

set_tbf() {
    local rate=$1 burst=${2:-$(default_burst "$1")} verb=${3:-replace}
    for side in A B; do
        ip netns exec "${prefix}${side}" tc qdisc "$verb" dev "${prefix}v${side}" root \
            tbf rate "$rate" burst "$burst" latency 100ms ||
            return 1
    done
}

cmd_down() {
    ip netns del "$(ns_a)" 2>/dev/null || true
    ip netns del "$(ns_b)" 2>/dev/null || true
}

cmd_up() {
    local rate=${1:-} burst=${2:-}
    [[ -n $rate ]] || usage
    rate_bytes "$rate" >/dev/null
    need_root
    cmd_down
    ip netns add "$(ns_a)" 2>/dev/null || skip "cannot create network namespaces here ('ip netns add' failed)"
    # From here on, a failure must not leave namespaces behind.
    trap 'cmd_down' ERR
    ip netns add "$(ns_b)"
    ip link add "${prefix}vA" netns "$(ns_a)" type veth peer name "${prefix}vB" netns "$(ns_b)"
    ip -n "$(ns_a)" addr add 10.231.0.1/24 dev "${prefix}vA"
    ip -n "$(ns_b)" addr add 10.231.0.2/24 dev "${prefix}vB"
    for side in A B; do
        ip -n "${prefix}${side}" link set lo up
        ip -n "${prefix}${side}" link set "${prefix}v${side}" up
    done
    if ! set_tbf "$rate" "$burst" add 2>/dev/null; then
        trap - ERR
        cmd_down
        skip "tc tbf is not available (kernel module sch_tbf missing?)"
    fi
    trap - ERR
    echo "link up: $(ns_a) 10.231.0.1 <-> $(ns_b) 10.231.0.2, tbf rate $rate burst ${burst:-$(default_burst "$rate")}"
}

cmd_exec() {
    local side=${1:-}
    [[ $side == A || $side == B ]] || usage
    shift
    [[ $# -gt 0 ]] || usage
    need_root
    exec ip netns exec "${prefix}${side}" "$@"
}

main() {
    while getopts "p:h" o; do
        case $o in
            p) prefix=$OPTARG ;;
            *) usage ;;
        esac
    done
    shift $((OPTIND - 1))
    [[ ${#prefix} -le 12 && $prefix =~ ^[A-Za-z0-9_-]+$ ]] ||
        die "prefix '$prefix' must be 1-12 letters, digits, '-' or '_'"
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) need_root; cmd_down ;;
        exec) cmd_exec "$@" ;;
        cut)
            need_root
            for side in A B; do
                # blackhole drops everything; a zero-length pfifo does the same
                # where the blackhole qdisc is not built.
                ip netns exec "${prefix}${side}" tc qdisc replace dev "${prefix}v${side}" root blackhole 2>/dev/null ||
                    ip netns exec "${prefix}${side}" tc qdisc replace dev "${prefix}v${side}" root pfifo limit 0
            done
            ;;
        rate) need_root; rate_bytes "${1:-x}" >/dev/null; set_tbf "$1" "${2:-}" replace ;;
        *) usage ;;
    esac
}

main "$@"
