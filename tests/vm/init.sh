#!/bin/sh
# /init of the RDMA lane's VM (busybox sh). Loads Soft-RoCE, runs the
# project's binaries against it and prints one "MS-TEST NAME PASS|FAIL|SKIP
# detail" line per test on the serial console, then "MS-LANE: END".
# Kernel command line: ms_role=single|a|b|bench  ms_mb=N (bulk MiB)  ms_budget=S
# (watchdog)  ms_bench=0|1  ms_reps=N (bench)  ms_ip=A.B.C.D  ms_peer=A.B.C.D.
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /dev/pts /run
mount -t tmpfs tmp /tmp

role=single mb=32 budget=240 bench=0 reps=3 ip=10.0.0.1 peer=10.0.0.1
for a in $(cat /proc/cmdline); do
  case $a in
    ms_role=*) role=${a#ms_role=} ;;
    ms_mb=*) mb=${a#ms_mb=} ;;
    ms_budget=*) budget=${a#ms_budget=} ;;
    ms_bench=*) bench=${a#ms_bench=} ;;
    ms_reps=*) reps=${a#ms_reps=} ;;
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
if [ "$role" = a ] || [ "$role" = b ]; then
  dev=eth0
else
  ip link add dummy0 type dummy 2>/dev/null  # the module may have made it already
  dev=dummy0
  # Jumbo frames, as RoCE deployments use: rxe then runs a 4096-byte path
  # MTU instead of 1024, a quarter of the packets to emulate.
  ip link set dummy0 mtu 9000
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

# wait_progress FILE PATTERN SECS: until PATTERN shows in FILE.
wait_progress() {
  n=0
  while [ $n -lt $(($3 * 10)) ]; do
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

# The stream layer's own sender and receiver over rdma (hello, keys,
# sealing, chain, 3 rounds, 2 channels); the receiver compares the image it
# rebuilt with the sender's, byte for byte.
t_stream() { # NAME KEYARGS
  rdma_stream recv "$ip:$3" --mb $mb $2 >/tmp/sr.log 2>&1 &
  r=$!
  rdma_stream send "$peer:$3" --mb $mb --rounds 3 --channels 2 $2 >/tmp/ss.log 2>&1
  s=$?
  wait_for $r 60; rc=$?
  show recv /tmp/sr.log; show send /tmp/ss.log
  if [ $s -eq 0 ] && [ $rc -eq 0 ] && grep -q "byte-identical" /tmp/sr.log; then
    result $1 PASS "$(grep OK /tmp/sr.log | cut -c1-200)"
  else
    result $1 FAIL "send exit $s, recv exit $rc"
  fi
}

make_key() { [ -f /tmp/key ] || { head -c 32 /dev/urandom | xxd -p -c 64 > /tmp/key; chmod 600 /tmp/key; }; }

t_fault_nokey() { # receiver holds a key, the sender has none
  make_key
  t0=$(now)
  rdma_stream recv "$ip:7011" --mb 4 --key /tmp/key --accept-timeout 15 >/tmp/nr.log 2>&1 &
  r=$!
  rdma_stream send "$peer:7011" --mb 4 --channels 1 >/tmp/ns.log 2>&1
  s=$?
  el=$(since $t0)
  wait_for $r 40; rc=$?
  show send /tmp/ns.log; show recv /tmp/nr.log
  if [ $s -ne 0 ] && grep -q "FAILED.*key" /tmp/ns.log && grep -qiE "dropped connection.*key" /tmp/nr.log &&
     awk -v e="$el" 'BEGIN { exit !(e < 15) }'; then
    result fault-nokey PASS "sender exit $s in ${el}s: $(grep FAILED /tmp/ns.log | cut -c1-200); receiver: $(grep -i dropped /tmp/nr.log | head -1 | cut -c1-200)"
  else
    result fault-nokey FAIL "sender exit $s after ${el}s, receiver exit $rc"
  fi
}

t_fault_version() { # a sender claiming another wire version
  t0=$(now)
  rdma_stream recv "$ip:7012" --mb 4 --accept-timeout 15 >/tmp/vr.log 2>&1 &
  r=$!
  rdma_stream hello "$peer:7012" --wire-version 3 >/tmp/vs.log 2>&1
  s=$?
  el=$(since $t0)
  wait_for $r 40; rc=$?
  show hello /tmp/vs.log; show recv /tmp/vr.log
  if [ $s -eq 0 ] && grep -q "wire version" /tmp/vs.log && grep -qiE "dropped connection.*version 3" /tmp/vr.log; then
    result fault-version PASS "in ${el}s: $(grep OK /tmp/vs.log | cut -c1-120); receiver: $(grep -i dropped /tmp/vr.log | head -1 | cut -c1-160)"
  else
    result fault-version FAIL "hello exit $s after ${el}s, receiver exit $rc"
  fi
}

# `migstream replay --transport rdma` to `migstream recv --transport rdma`:
# the tools' own digests must match and the written image must cmp equal.
tools_rdma() { [ -x /bin/migstream ] && migstream replay --help 2>&1 | grep -q "rdma" &&
               migstream recv --help 2>&1 | grep -q "rdma"; }

make_image() {
  [ -f /tmp/image.bin ] && return
  # Zero, repeated and random pages; the last page is not zero so the
  # receiver's file has the full length.
  dd if=/dev/urandom of=/tmp/rand.bin bs=1M count=4 2>/dev/null
  { dd if=/dev/zero bs=1M count=4 2>/dev/null; cat /tmp/rand.bin; cat /tmp/rand.bin;
    dd if=/dev/zero bs=1M count=2 2>/dev/null; dd if=/dev/urandom bs=1M count=2 2>/dev/null; } > /tmp/image.bin
}

t_replay() {
  if ! tools_rdma; then
    result rdma-replay SKIP "migstream replay/recv in this build do not take --transport rdma yet"
    return
  fi
  make_image
  rm -f /tmp/out.bin
  migstream recv --transport rdma --listen "$ip:7010" --insecure --out /tmp/out.bin --sessions 1 \
    --accept-timeout 60s --timeout 30s -q >/tmp/rr.log 2>&1 &
  r=$!
  sleep 0.5
  migstream replay --transport rdma --to "$peer:7010" --image /tmp/image.bin --channels 2 --timeout 30s -q \
    >/tmp/rs.log 2>&1
  s=$?
  wait_for $r 60; rc=$?
  show recv /tmp/rr.log; show replay /tmp/rs.log
  if [ $s -eq 0 ] && [ $rc -eq 0 ] && cmp /tmp/image.bin /tmp/out.bin >/dev/null 2>&1; then
    result rdma-replay PASS "$(wc -c < /tmp/image.bin) bytes byte-identical (cmp), replay exit 0"
  else
    result rdma-replay FAIL "replay exit $s, recv exit $rc, cmp: $(cmp /tmp/image.bin /tmp/out.bin 2>&1 | head -1)"
  fi
}

# replay's in-process receiver over rdma: on the rxe netdev's address, as
# Soft-RoCE cannot use 127.0.0.1 (--listen-addr).
t_replay_local() {
  tools_rdma || { result rdma-replay-local SKIP "migstream replay in this build does not take --transport rdma"; return; }
  timeout 120 migstream replay --transport rdma --listen-addr "$ip" --sample 8M --rounds 3 --mutate 0.1 --channels 2 \
    --timeout 30s -q >/tmp/rl.log 2>&1
  s=$?
  show replay-local /tmp/rl.log
  if [ $s -eq 0 ] && grep -q "byte-identical" /tmp/rl.log; then
    result rdma-replay-local PASS "$(grep 'receiver image digest' /tmp/rl.log)"
  else
    result rdma-replay-local FAIL "replay exit $s: $(grep -m1 FAILED /tmp/rl.log)"
  fi
}

t_fault_kill() { # receiver killed mid-stream: the sender must fail clearly, fast
  rdma_xfer recv "$ip:7002" --bytes 8G >/tmp/kr.log 2>&1 &
  r=$!
  rdma_xfer send "$peer:7002" --bytes 8G --delay-ms 2 >/tmp/ks.log 2>&1 &
  s=$!
  wait_progress /tmp/kr.log progress 60 || say "fault-kill-receiver: no progress before the kill"
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
  wait_progress /tmp/lr.log progress 60 || say "fault-link-delete: no progress before the delete"
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

t_bench() { # alternating tcp / rdma runs, then rdma with every byte copied
  bench_rdma --addr "$ip" --bytes ${mb}M --reps $reps >/tmp/bench.log 2>&1
  rc=$?
  bench_rdma --addr "$ip" --bytes ${mb}M --reps 2 --transport rdma --rdma-opts zcopy-min=off >>/tmp/bench.log 2>&1 ||
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

t_two_stream() { # a whole sealed session across the two kernels
  printf '%064d\n' 7 > /tmp/key; chmod 600 /tmp/key  # the same key on both VMs
  if [ "$role" = a ]; then
    rdma_stream recv "$ip:7102" --mb $mb --key /tmp/key --accept-timeout 120 >/tmp/x.log 2>&1; rc=$?
    show recv /tmp/x.log
    [ $rc -eq 0 ] && result two-vm-stream-a PASS "$(grep OK /tmp/x.log | cut -c1-200)" ||
      result two-vm-stream-a FAIL "recv exit $rc"
  else
    rdma_stream send "$peer:7102" --mb $mb --key /tmp/key --rounds 3 --channels 2 >/tmp/x.log 2>&1; rc=$?
    show send /tmp/x.log
    [ $rc -eq 0 ] && result two-vm-stream-b PASS "$(grep OK /tmp/x.log | cut -c1-200)" ||
      result two-vm-stream-b FAIL "send exit $rc"
  fi
}

t_two_kill() { # a kills its receiver mid-stream; b's sender must fail clearly
  if [ "$role" = a ]; then
    rdma_xfer recv "$ip:7103" --bytes 8G >/tmp/x.log 2>&1 &
    r=$!
    wait_progress /tmp/x.log progress 120 || say "two-vm-kill: no progress before the kill"
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
  bench)
    t_bench
    ;;
  single)
    t_unit
    t_xfer
    t_stream rdma-stream "" 7020
    make_key
    t_stream rdma-stream-sealed "--key /tmp/key" 7021
    t_replay
    t_replay_local
    t_fault_nokey
    t_fault_version
    t_fault_kill
    [ "$bench" = 1 ] && t_bench
    t_fault_linkdel
    ;;
  a|b)
    t_two_xfer
    t_two_stream
    t_two_kill
    ;;
esac
say "tests took $(since $lane_t0) s"
say END
sync
poweroff -f
