#!/bin/sh
# /init of the RDMA lane's VM (busybox sh). Loads Soft-RoCE, runs the
# project's binaries against it and prints one "MS-TEST NAME PASS|FAIL|SKIP
# detail" line per test on the serial console, then "MS-LANE: END".
# Kernel command line: ms_role=single|a|b  ms_mb=N (bulk MiB)  ms_budget=S
# (watchdog)  ms_bench=0|1  ms_ip=A.B.C.D  ms_peer=A.B.C.D.
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /dev/pts /run
mount -t tmpfs tmp /tmp

role=single mb=32 budget=240 bench=0 ip=10.0.0.1 peer=10.0.0.1
for a in $(cat /proc/cmdline); do
  case $a in
    ms_role=*) role=${a#ms_role=} ;;
    ms_mb=*) mb=${a#ms_mb=} ;;
    ms_budget=*) budget=${a#ms_budget=} ;;
    ms_bench=*) bench=${a#ms_bench=} ;;
    ms_ip=*) ip=${a#ms_ip=} ;;
    ms_peer=*) peer=${a#ms_peer=} ;;
  esac
done

say() { echo "MS-LANE: $*"; }
result() { echo "MS-TEST $1 $2 $3"; }
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Whatever hangs, the VM powers off and the host sees no END line.
( sleep "$budget"; say "WATCHDOG: nothing finished within $budget s, powering off"; poweroff -f ) &

# ---- Soft-RoCE -------------------------------------------------------------
while read -r m; do
  insmod "$m" 2>/tmp/insmod.err || { grep -q "File exists" /tmp/insmod.err || say "insmod $m: $(cat /tmp/insmod.err)"; }
done < /etc/ms-modules

ip link set lo up
if [ "$role" = single ]; then
  ip link add dummy0 type dummy 2>/dev/null  # the module may have made it already
  dev=dummy0
else
  dev=eth0
fi
ip addr add "$ip/24" dev $dev
ip link set $dev up

gid_ready() {
  g=/sys/class/infiniband/rxe0/ports/1/gids/1
  [ -r $g ] && ! grep -q '^0000:0000:0000:0000:0000:0000:0000:0000$' $g 2>/dev/null
}
rxe_up() {
  rdma link add rxe0 type rxe netdev $dev || return 1
  n=0
  while ! gid_ready; do
    n=$((n + 1)); [ $n -gt 100 ] && return 1
    sleep 0.1
  done
}
if ! rxe_up; then
  result setup FAIL "rxe0 on $dev did not come up (rdma link: $(rdma link 2>&1))"
  say END; poweroff -f
fi
say "rxe0 up on $dev $ip, role $role, kernel $(uname -r), $(nproc) cpus"

# ---- helpers ---------------------------------------------------------------
# wait_for PID SECS: wait for PID to exit within SECS; 124 if it did not.
wait_for() {
  n=0
  while kill -0 "$1" 2>/dev/null; do
    n=$((n + 1))
    if [ $n -gt $(($2 * 10)) ]; then kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 124; fi
    sleep 0.1
  done
  wait "$1"
}
show() { sed "s/^/    [$1] /" "$2"; }

# Have sender output grow before a fault is injected.
wait_progress() {
  n=0
  while [ $n -lt 100 ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    n=$((n + 1)); sleep 0.1
  done
  return 1
}

# ---- tests -----------------------------------------------------------------
t_unit() {
  MS_RDMA_TEST_MB=$mb timeout 400 /bin/test_rdma >/tmp/unit.log 2>&1
  rc=$?
  show unit /tmp/unit.log
  line=$(grep -E "^ *tests +[0-9]" /tmp/unit.log | head -1 | tr -s ' ')
  [ $rc -eq 0 ] && result rdma-unit PASS "$line" || result rdma-unit FAIL "exit $rc; $line"
}

t_xfer() { # the transport alone, loopback through rxe0
  rdma_xfer recv "$ip:7001" --bytes ${mb}M >/tmp/xr.log 2>&1 &
  r=$!
  rdma_xfer send "$ip:7001" --bytes ${mb}M >/tmp/xs.log 2>&1
  s=$?
  wait_for $r 30; rc=$?
  show recv /tmp/xr.log; show send /tmp/xs.log
  if [ $s -eq 0 ] && [ $rc -eq 0 ] && grep -q "OK .* verified" /tmp/xr.log; then
    result rdma-xfer PASS "$(grep OK /tmp/xr.log)"
  else
    result rdma-xfer FAIL "send exit $s, recv exit $rc"
  fi
}

has_cmd() { [ -x /bin/migstream ] && migstream 2>&1 | grep -q "^  $1 "; }

# A recorded image sent with `migstream replay --transport rdma` to
# `migstream recv --transport rdma`, which writes what it got; cmp proves
# the bytes identical.
make_image() {
  [ -f /tmp/image.bin ] && return
  # Mixed content: zero pages, repeated pages, random pages.
  dd if=/dev/urandom of=/tmp/rand.bin bs=1M count=4 2>/dev/null
  { dd if=/dev/zero bs=1M count=4 2>/dev/null; cat /tmp/rand.bin; cat /tmp/rand.bin;
    dd if=/dev/zero bs=1M count=2 2>/dev/null; dd if=/dev/urandom bs=1M count=2 2>/dev/null; } > /tmp/image.bin
}

replay_pair() { # NAME PORT RECV_EXTRA REPLAY_EXTRA
  rm -f /tmp/out.bin
  migstream recv --transport rdma --listen "$ip:$2" --once --output /tmp/out.bin $3 >/tmp/rr.log 2>&1 &
  r=$!
  sleep 0.5
  migstream replay --transport rdma --to "$peer:$2" --image /tmp/image.bin $4 >/tmp/rs.log 2>&1
  s=$?
  wait_for $r 60; rc=$?
  show recv /tmp/rr.log; show replay /tmp/rs.log
}

t_replay() {
  if ! has_cmd replay || ! has_cmd recv; then
    result rdma-replay SKIP "migstream replay/recv not in this build"
    return
  fi
  make_image
  replay_pair replay 7010 "" ""
  if [ $s -eq 0 ] && [ $rc -eq 0 ] && cmp /tmp/image.bin /tmp/out.bin >/dev/null 2>&1; then
    result rdma-replay PASS "$(wc -c < /tmp/image.bin) bytes byte-identical"
  else
    result rdma-replay FAIL "replay exit $s, recv exit $rc, cmp: $(cmp /tmp/image.bin /tmp/out.bin 2>&1 | head -1)"
  fi
}

t_fault_nokey() {
  if ! has_cmd replay || ! has_cmd recv || ! has_cmd keygen; then
    result fault-nokey SKIP "migstream replay/recv/keygen not in this build"
    return
  fi
  make_image
  migstream keygen /tmp/key >/dev/null 2>&1
  t0=$(now)
  replay_pair nokey 7011 "--key /tmp/key --timeout 5s" "--timeout 5s"
  el=$(since $t0)
  if [ $s -ne 0 ] && grep -qi "key" /tmp/rs.log && grep -qiE "key|auth" /tmp/rr.log; then
    result fault-nokey PASS "sender exit $s in ${el}s: $(grep -i key /tmp/rs.log | tail -1)"
  else
    result fault-nokey FAIL "sender exit $s, receiver exit $rc after ${el}s"
  fi
}

t_fault_version() {
  if ! has_cmd replay || ! has_cmd recv; then
    result fault-version SKIP "migstream replay/recv not in this build"
    return
  fi
  if ! migstream replay --help 2>&1 | grep -q -- "--wire-version"; then
    result fault-version SKIP "migstream replay has no --wire-version (transport-level version rejection is in rdma-unit)"
    return
  fi
  make_image
  t0=$(now)
  replay_pair version 7012 "--timeout 5s" "--timeout 5s --wire-version 99"
  el=$(since $t0)
  if [ $s -ne 0 ] && grep -qi "version" /tmp/rs.log; then
    result fault-version PASS "sender exit $s in ${el}s: $(grep -i version /tmp/rs.log | tail -1)"
  else
    result fault-version FAIL "sender exit $s, receiver exit $rc after ${el}s"
  fi
}

t_fault_kill() { # receiver killed mid-stream: the sender must fail clearly, fast
  rdma_xfer recv "$ip:7002" --bytes 8G >/tmp/kr.log 2>&1 &
  r=$!
  rdma_xfer send "$peer:7002" --bytes 8G --delay-ms 2 >/tmp/ks.log 2>&1 &
  s=$!
  sleep 3
  kill -9 $r
  t0=$(now)
  wait_for $s 30; src=$?
  el=$(since $t0)
  show send /tmp/ks.log
  if [ $src -ne 0 ] && [ $src -ne 124 ] && grep -qE "FAILED .*(disconnected|removed|flushed|status|no .* for)" /tmp/ks.log &&
     awk -v e="$el" 'BEGIN { exit !(e < 15) }'; then
    result fault-kill-receiver PASS "sender failed in ${el}s: $(grep FAILED /tmp/ks.log | cut -c1-200)"
  else
    result fault-kill-receiver FAIL "sender exit $src after ${el}s"
  fi
}

t_fault_linkdel() { # rxe0 deleted mid-stream: both ends fail clearly
  rdma_xfer recv "$ip:7003" --bytes 8G >/tmp/lr.log 2>&1 &
  r=$!
  rdma_xfer send "$peer:7003" --bytes 8G --delay-ms 2 >/tmp/ls.log 2>&1 &
  s=$!
  sleep 3
  t0=$(now)
  timeout 60 rdma link delete rxe0 >/tmp/ld.log 2>&1 &
  d=$!
  wait_for $s 30; src=$?
  wait_for $r 30; rrc=$?
  el=$(since $t0)
  wait_for $d 60; drc=$?
  show send /tmp/ls.log; show recv /tmp/lr.log; show "link delete" /tmp/ld.log
  ok=1
  for f in /tmp/ls.log /tmp/lr.log; do
    grep -q "FAILED" $f || ok=0
  done
  [ $src -ne 0 ] && [ $src -ne 124 ] && [ $rrc -ne 0 ] && [ $rrc -ne 124 ] || ok=0
  awk -v e="$el" 'BEGIN { exit !(e < 30) }' || ok=0
  if [ $ok -eq 1 ]; then
    result fault-link-delete PASS "both ends failed in ${el}s; link delete exit $drc; send: $(grep FAILED /tmp/ls.log | cut -c1-160); recv: $(grep FAILED /tmp/lr.log | cut -c1-160)"
  else
    result fault-link-delete FAIL "send exit $src, recv exit $rrc after ${el}s, link delete exit $drc"
  fi
  # Later tests need the device back.
  [ -d /sys/class/infiniband/rxe0 ] || rxe_up || say "rxe0 could not be re-created"
}

t_bench() {
  bench_rdma --addr "$ip" --bytes ${mb}M --reps 3 >/tmp/bench.log 2>&1
  rc=$?
  show bench /tmp/bench.log
  [ $rc -eq 0 ] && result bench PASS "see lines above" || result bench FAIL "exit $rc"
}

# Two VMs: a listens, b sends over real RoCEv2 packets between the kernels.
t_two_xfer() {
  if [ "$role" = a ]; then
    rdma_xfer recv "$ip:7101" --bytes ${mb}M >/tmp/x.log 2>&1; rc=$?
  else
    rdma_xfer send "$peer:7101" --bytes ${mb}M --timeout 30s >/tmp/x.log 2>&1; rc=$?
  fi
  show xfer /tmp/x.log
  [ $rc -eq 0 ] && result two-vm-xfer-$role PASS "$(grep OK /tmp/x.log)" || result two-vm-xfer-$role FAIL "exit $rc"
}

t_two_replay() {
  if ! has_cmd replay || ! has_cmd recv; then
    result two-vm-replay-$role SKIP "migstream replay/recv not in this build"
    return
  fi
  # The same seed on both sides gives the same image without shipping it.
  awk 'BEGIN { srand(7); for (i = 0; i < 8 * 1024 * 1024; i += 16) printf "%08x%08x", rand() * 4294967295, i }' > /tmp/image.bin
  if [ "$role" = a ]; then
    migstream recv --transport rdma --listen "$ip:7102" --once --output /tmp/out.bin >/tmp/x.log 2>&1; rc=$?
    show recv /tmp/x.log
    if [ $rc -eq 0 ] && cmp /tmp/image.bin /tmp/out.bin >/dev/null 2>&1; then
      result two-vm-replay-a PASS "$(wc -c < /tmp/out.bin) bytes byte-identical"
    else
      result two-vm-replay-a FAIL "recv exit $rc; cmp: $(cmp /tmp/image.bin /tmp/out.bin 2>&1 | head -1)"
    fi
  else
    sleep 2
    migstream replay --transport rdma --to "$peer:7102" --image /tmp/image.bin >/tmp/x.log 2>&1; rc=$?
    show replay /tmp/x.log
    [ $rc -eq 0 ] && result two-vm-replay-b PASS "sent" || result two-vm-replay-b FAIL "replay exit $rc"
  fi
}

t_two_kill() { # a kills its receiver mid-stream; b's sender must fail clearly
  if [ "$role" = a ]; then
    rdma_xfer recv "$ip:7103" --bytes 8G >/tmp/x.log 2>&1 &
    r=$!
    wait_progress /tmp/x.log listening
    sleep 6
    kill -9 $r
    result two-vm-kill-a PASS "receiver killed"
  else
    t0=$(now)
    rdma_xfer send "$peer:7103" --bytes 8G --delay-ms 2 --timeout 30s >/tmp/x.log 2>&1; rc=$?
    el=$(since $t0)
    show send /tmp/x.log
    if [ $rc -ne 0 ] && grep -q FAILED /tmp/x.log; then
      result two-vm-kill-b PASS "sender failed after ${el}s: $(grep FAILED /tmp/x.log | cut -c1-200)"
    else
      result two-vm-kill-b FAIL "sender exit $rc after ${el}s"
    fi
  fi
}

lane_t0=$(now)
case $role in
  single)
    t_unit
    t_xfer
    t_replay
    t_fault_nokey
    t_fault_version
    t_fault_kill
    [ "$bench" = 1 ] && t_bench
    t_fault_linkdel
    ;;
  a|b)
    t_two_xfer
    t_two_replay
    t_two_kill
    ;;
esac
say "tests took $(since $lane_t0) s"
say END
sync
poweroff -f
