#!/bin/sh
# /init of the Xen lane's dom0 (busybox sh under Xen 4.17 in QEMU/TCG).
# Starts the toolstack, boots the test guests and runs the steps named in
# /etc/ms-lane.conf (written by xen-lane.sh), printing on the serial console
#   MS-STEP <step> PASS|FAIL|SKIP <detail>
#   MS-RESULT step=<step> key=value ...
# and finally "MS-LANE: END". Files for the host (xl logs, migstream logs,
# the MIGSTREAM_RECORD capture, console logs, results.txt) go as a tar
# archive onto the raw virtio disk /dev/vda (and the plain `xl save` file
# raw onto /dev/vdb).
#
# Every process spawned in this dom0 is slow (a fork+exec costs ~0.5 s
# under TCG on a busy host) and short-lived busybox processes are where the
# emulator's flake shows (a bad FS base), so polling is done by one
# long-lived watcher (mswatch) and the checks read its output with awk.
export PATH=/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp

. /etc/ms-lane.conf

say() { echo "MS-LANE: $*"; }
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
out=/out
mkdir -p $out
step_line() { echo "MS-STEP $1 $2 $3"; echo "MS-STEP $1 $2 $3" >>$out/steps.txt; }
result_line() { echo "MS-RESULT step=$*"; echo "step=$*" >>$out/results.txt; }
: >$out/results.txt
: >$out/steps.txt

# Whatever hangs, the host still gets what was written so far: the watchdog
# saves /out and ends the run.
finish() {
  say "copying results out"
  mkdir -p $out/console
  cp /var/log/xen/console/* $out/console/ 2>/dev/null
  (cd $out && tar -cf /dev/vda .) && sync
  say END
  sleep 2
  poweroff -f
}
( sleep "$MS_BUDGET"; say "WATCHDOG: run not finished within $MS_BUDGET s"; finish ) &
watchdog=$!

# ---- toolstack ----------------------------------------------------------------
while read -r m; do
  insmod "$m" 2>/tmp/insmod.err || grep -q "File exists" /tmp/insmod.err || say "insmod $m: $(cat /tmp/insmod.err)"
done </etc/ms-modules
mount -t xenfs xenfs /proc/xen || { step_line setup FAIL "mount xenfs failed"; finish; }
ip link set lo up
rm -rf /var/run && ln -s /run /var/run
mkdir -p /run/xen /run/xenstored /var/lock /var/lib/xen /var/lib/xenstored /var/log/xen/console
xenstored --pid-file=/run/xenstored.pid || { step_line setup FAIL "xenstored did not start"; finish; }
xen-init-dom0 >/tmp/init-dom0.log 2>&1 || { step_line setup FAIL "xen-init-dom0: $(tail -1 /tmp/init-dom0.log)"; finish; }
xenconsoled --log=guest --log-dir=/var/log/xen/console || { step_line setup FAIL "xenconsoled did not start"; finish; }
counters=$out/counters.txt
mswatch /var/log/xen/console $counters &
say "toolstack up: $(xl info 2>/dev/null | grep -E '^(xen_version|nr_cpus|free_memory)' | tr -s ' ' | tr '\n' ' ')"

# ---- guests ---------------------------------------------------------------------
guest_extra="console=hvc0 rdinit=/init quiet ms_hot=$MS_HOT ms_sweep=$MS_SWEEP ms_pps=$MS_PPS ms_print=$MS_PRINT"
write_cfg() { # NAME TYPE
  cat >/etc/xen/$1.cfg <<EOF
name = "$1"
type = "$2"
memory = $MS_GUEST_MB
maxmem = $MS_GUEST_MB
vcpus = 1
kernel = "/boot/guest-vmlinux"
ramdisk = "/boot/guest-initrd.cpio"
extra = "$guest_extra"
tsc_mode = "native"
cpus = "$MS_GUEST_CPUS"
on_crash = "preserve"
EOF
}

# counter NAME: the highest counter the guest has printed, in any of its
# console logs (after a local migration: guest-NAME--incoming.log).
counter() {
  awk -v g="$1" '($1 == g || $1 == g "--incoming") && $2 + 0 > m { m = $2 + 0 } END { print m + 0 }' $counters
}

# wait_counter NAME ABOVE SECS: wait until the counter exceeds ABOVE.
wait_counter() {
  n=0
  while [ "$(counter $1)" -le "$2" ]; do
    n=$((n + 1))
    [ $n -gt "$3" ] && return 1
    sleep 1
  done
}

# downtime NAME FROM: the largest gap in dom0 time between consecutive
# counters above FROM (first time each was seen), minus the print period;
# "ok" if the counters since FROM are contiguous, else how many are missing.
downtime() {
  awk -v g="$1" -v from="$2" -v period="$MS_PRINT" '
      ($1 == g || $1 == g "--incoming") && $2 + 0 >= from {
        c = $2 + 0; if (!(c in t) || $3 + 0 < t[c]) t[c] = $3 + 0; if (c > hi) hi = c }
      END {
        gap = 0; holes = 0
        for (c = from + 1; c <= hi; c++) {
          if (!(c in t) || !((c - 1) in t)) { holes++; continue }
          d = t[c] - t[c - 1]; if (d > gap) gap = d
        }
        dt = gap - period; if (dt < 0) dt = 0
        printf "%d %s\n", dt, holes ? "missing=" holes : "ok"
      }' $counters
}

start_guest() { # NAME TYPE
  write_cfg $1 $2
  tc=$(now_ms)
  if ! xl create /etc/xen/$1.cfg >$out/create-$1.log 2>&1; then
    echo "xl create failed: $(grep -i error $out/create-$1.log | head -2 | tr '\n' ' ')"
    return 1
  fi
  echo "step=create-$1 xl_create_ms=$(($(now_ms) - tc))" >>$out/results.txt
  wait_counter $1 2 "$MS_BOOT_WAIT" && return 0
  echo "no counter within ${MS_BOOT_WAIT}s ($(xl list $1 2>&1 | tail -1 | tr -s ' ')): $(grep -E 'panic|MSGUEST|Oops|RIP:' /var/log/xen/console/guest-$1.log 2>/dev/null | tail -3 | tr '\r\n' '  ')"
  return 1
}

# ---- live-migration steps --------------------------------------------------------
# lo_bytes: bytes received on dom0's loopback, where the tcp steps' side
# connections run (headers included: what a link would carry). Nothing
# else in dom0 uses the network.
lo_bytes() { awk -F'[: ]+' '$2 == "lo" { print $3 }' /proc/net/dev; }
preload_env=""
[ -n "$MS_PRELOAD" ] && preload_env="LD_PRELOAD=$MS_PRELOAD"

# migrate STEP EXPECT RECV_PREFIX [VAR=VALUE ...]: live-migrate the PVH guest
# to this host with the given environment on `xl migrate` (so also on the
# receiver, which inherits it; RECV_PREFIX, e.g. "env X=Y", changes the
# receiver's). EXPECT is ok (must migrate, guest runs on the destination)
# or fail (must fail cleanly, guest goes on running on the source).
# mscount between xl and the receiver counts the bytes crossing xl's fd; for
# the baseline it also keeps a copy, summarised by msxcstat (rounds, pages).
# A MIGSTREAM_RECORD=/tmp/... capture is summarised the same way.
migrate() {
  step=$1 expect=$2 recv=$3
  shift 3
  g=pvh
  if [ $pvh_gone = 1 ]; then
    start_guest pvh pvh >/tmp/start-pvh.txt && pvh_gone=0
  fi
  d0=$(xl domid $g 2>/dev/null)
  [ -n "$d0" ] || { step_line $step FAIL "guest $g not running before the step"; return 1; }
  wait_counter $g $(($(counter $g) + 1)) 20
  c0=$(counter $g)
  tee=""
  case $step in baseline*) [ "$MS_CAPTURE_BASELINE" = 1 ] && tee=/tmp/$step.stream ;; esac
  rec=""
  for a in "$@"; do case $a in MIGSTREAM_RECORD=*) rec=${a#MIGSTREAM_RECORD=} ;; esac; done
  rune="/bin/mscount $out/$step.wire $tee | $recv xl -vv migrate-receive"
  echo "env $preload_env $* xl -vv migrate -s \"\" $g \"$rune\"" >$out/$step.cmd
  lo0=$(lo_bytes)
  t0=$(now_ms)
  env $preload_env "$@" timeout -s KILL "$MS_TIMEOUT" xl -vv migrate -s "" $g "$rune" >$out/$step.log 2>&1
  rc=$?
  t1=$(now_ms)
  ms=$((t1 - t0))
  lo=$(($(lo_bytes) - lo0))
  wire=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' $out/$step.wire 2>/dev/null)
  d1=$(xl domid $g 2>/dev/null)
  # After a failure the sender's xl may return before the receiver has torn
  # down the half-built domain: give it time before calling it left behind.
  n=0
  while leftover=$(xl list 2>/dev/null | awk '$1 ~ /--incoming$/ { print $1 }') && [ -n "$leftover" ] && [ $n -lt 30 ]; do
    n=$((n + 2))
    sleep 2
  done
  [ -n "$leftover" ] && xl destroy "$leftover" >/dev/null 2>&1
  wait_counter $g $((c0 + 5)) 60 && running=yes || running=no
  c1=$(counter $g)
  set -- $(downtime $g $c0)
  down=$1 contig=$2
  stat=""
  for f in $tee $rec; do
    [ -f "$f" ] && stat="$stat $(msxcstat $f 2>&1 | tr ' ' '\n' | grep -E '^(rounds|data_pages|zero_pages|resent_pages|round_pages)=' | tr '\n' ' ')"
    case $f in /tmp/*) rm -f "$f" ;; esac
  done
  result_line "$step rc=$rc time_ms=$ms wire_bytes=${wire:-?} lo_bytes=$lo downtime_ms=$down counter=$c0..$c1 $contig domid=$d0..${d1:-none}$stat$(ms_stats $out/$step.log)"
  detail="rc=$rc ${ms}ms wire=${wire:-?}B downtime=${down}ms counter $c0->$c1 ($contig) domid $d0->${d1:-none}"
  if [ $rc -eq 137 ]; then
    step_line $step FAIL "timed out after ${MS_TIMEOUT}s: $detail; $(tail -2 $out/$step.log | tr '\n' ' ')"
    return 1
  fi
  if [ "$expect" = ok ]; then
    if [ $rc -ne 0 ]; then
      step_line $step FAIL "xl migrate failed: $detail; $(grep -iE 'error|fail' $out/$step.log | tail -2 | tr '\n' ' ')"
    elif [ -z "$d1" ] || [ "$d1" = "$d0" ]; then
      step_line $step FAIL "guest not on a new domain after migration: $detail"
    elif [ $running = no ] || [ "$contig" != ok ]; then
      step_line $step FAIL "guest counter did not continue on the destination: $detail"
    else
      step_line $step PASS "$detail"
      return 0
    fi
  else
    if [ $rc -eq 0 ]; then
      step_line $step FAIL "migration succeeded but should have failed: $detail"
    elif [ "$d1" != "$d0" ]; then
      step_line $step FAIL "guest not on its source domain after the failed migration: $detail"
    elif [ -n "$leftover" ]; then
      step_line $step FAIL "failed migration left domain $leftover behind: $detail"
    elif [ $running = no ] || [ "$contig" != ok ]; then
      step_line $step FAIL "guest did not keep running on the source: $detail"
    else
      step_line $step PASS "failed cleanly, guest still running on the source: $detail; xl: $(grep -iE 'error|fail' $out/$step.log | tail -1 | cut -c1-200)"
      return 0
    fi
  fi
  return 1
}

# ms_stats LOG: the preload's own summary (MIGSTREAM_LOG=info prints
# ms_stats_print's report on stderr, which xl keeps): rounds, pages, raw and
# wire MiB of the sender, and the fragmented schedule's stop line.
ms_stats() {
  awk '
    /migstream-xen sender: [0-9]+ round/ { for (i = 1; i <= NF; i++) if ($i ~ /^round/) r = $(i - 1); snd = 1; next }
    snd && $1 == "total" && $2 ~ /^[0-9]+$/ && $3 == "pages" { p = $2; raw = $4; wire = $8; ratio = $12; snd = 0 }
    /fragmented schedule stops/ {
      stop = 1
      if (match($0, /[0-9]+ held back/)) held = substr($0, RSTART, RLENGTH - 10)
      if (match($0, /stops (at|after) round [0-9]+/)) { sr = substr($0, RSTART, RLENGTH); sub(/.* /, "", sr) }
    }
    END {
      if (r != "") printf " ms_rounds=%s ms_pages=%s ms_raw_mib=%s ms_wire_mib=%s ms_ratio=%s", r, p, raw, wire, ratio
      if (stop) printf " ms_frag_stop_round=%s ms_frag_held_back=%s", sr, held
    }' "$1"
}

need_preload() { # STEP
  [ -n "$MS_PRELOAD" ] && return 0
  step_line $1 SKIP "preload not built"
  return 1
}

inband="MIGSTREAM_TRANSPORT=inband MIGSTREAM_CODEC=$MS_CODEC MIGSTREAM_LOG=info"
tcp="MIGSTREAM_TRANSPORT=tcp MIGSTREAM_CODEC=$MS_CODEC MIGSTREAM_CHANNELS=2 MIGSTREAM_KEY_FILE=/etc/ms/key MIGSTREAM_LOG=info"
port="127.0.0.1:$MS_PORT"
rdma="MIGSTREAM_TRANSPORT=rdma MIGSTREAM_CODEC=$MS_CODEC MIGSTREAM_CHANNELS=2 MIGSTREAM_KEY_FILE=/etc/ms/key MIGSTREAM_LOG=info"
rdma_ip=10.0.0.1

step_baseline() { migrate $1 ok ""; }
# inband and fragmented also record the libxc stream, so msxcstat can count
# the pages each scheduler resent (the capture is dropped afterwards).
step_inband() { need_preload $1 && migrate $1 ok "" $inband MIGSTREAM_RECORD=/tmp/$1.xc; }
step_tcp() { need_preload $1 && migrate $1 ok "" $tcp MIGSTREAM_PEER=$port MIGSTREAM_LISTEN=$port; }
step_fragmented() { need_preload $1 && migrate $1 ok "" $inband MIGSTREAM_SCHED=fragmented MIGSTREAM_RECORD=/tmp/$1.xc; }
# rdma: Soft-RoCE (rdma_rxe) on a dummy netdev in dom0, set up on first use;
# the side connections then run over real verbs between two processes.
rxe_state=none
rxe_up() {
  [ $rxe_state = up ] && return 0
  [ $rxe_state = none ] || return 1
  rxe_state=failed
  ip link add dummy0 type dummy 2>/dev/null # the module may have made it already
  ip link set dummy0 mtu 9000
  ip addr add $rdma_ip/24 dev dummy0 && ip link set dummy0 up || return 1
  rdma link add rxe0 type rxe netdev dummy0 >/tmp/rxe.log 2>&1 || return 1
  n=0
  while ! [ -r /sys/class/infiniband/rxe0/ports/1/gids/1 ] ||
        grep -q '^0000:0000:0000:0000:0000:0000:0000:0000$' /sys/class/infiniband/rxe0/ports/1/gids/1; do
    n=$((n + 1)); [ $n -gt 100 ] && return 1
    sleep 0.1
  done
  rxe_state=up
}
step_rdma() {
  need_preload $1 || return
  rxe_up || { step_line $1 FAIL "rxe0 on dummy0 did not come up: $(cat /tmp/rxe.log 2>/dev/null) $(rdma link 2>&1)"; return 1; }
  migrate $1 ok "" $rdma MIGSTREAM_PEER=$rdma_ip:$((MS_PORT + 2)) MIGSTREAM_LISTEN=$rdma_ip:$((MS_PORT + 2))
}
step_record() {
  need_preload $1 || return
  migrate $1 ok "" $inband MIGSTREAM_RECORD=$out/record.xc &&
    result_line "$1 record_bytes=$(wc -c <$out/record.xc) record_sha256=$(sha256sum $out/record.xc | cut -d' ' -f1)"
}
step_fault_key() {
  need_preload $1 && migrate $1 fail "env MIGSTREAM_KEY_FILE=/etc/ms/wrong.key" $tcp \
    MIGSTREAM_PEER=$port MIGSTREAM_LISTEN=$port
}
step_fault_refused() {
  # The sender's side connection goes to a port nobody listens on.
  need_preload $1 && migrate $1 fail "" $tcp MIGSTREAM_PEER=127.0.0.1:$((MS_PORT + 1)) MIGSTREAM_LISTEN=$port
}

# ---- save/restore steps (PV guest) ------------------------------------------------
# The PV guest boots in the background while the unmeasured steps (faults,
# record) run: booting costs minutes under TCG.
pv_state=none pv_pid="" pv_t0=0
pv_boot_async() {
  [ $pv_state = none ] || return 0
  pv_state=booting
  pv_t0=$(now_ms)
  start_guest pv pv >/tmp/start-pv.txt 2>&1 &
  pv_pid=$!
}
pv_up() {
  pv_boot_async
  if [ $pv_state = booting ]; then
    if wait $pv_pid; then
      pv_state=up
      result_line "pv-boot boot_ms=$(($(now_ms) - pv_t0))"
    else
      pv_state=failed
      say "PV guest did not come up: $(cat /tmp/start-pv.txt)"
    fi
  fi
  [ $pv_state = up ]
}

# saverestore STEP [VAR=VALUE ...]: xl save / xl restore of the PV guest
# with the given environment on both commands.
saverestore() {
  step=$1
  shift
  g=pv
  pv_up || { step_line $step FAIL "PV guest did not boot: $(cat /tmp/start-pv.txt)"; return 1; }
  d0=$(xl domid $g 2>/dev/null)
  [ -n "$d0" ] || { step_line $step FAIL "PV guest not running before the step"; return 1; }
  wait_counter $g $(($(counter $g) + 1)) 20
  c0=$(counter $g)
  f=/tmp/$step.save
  t0=$(now_ms)
  env $preload_env "$@" timeout -s KILL "$MS_TIMEOUT" xl -vv save $g $f >$out/$step.save.log 2>&1
  rc=$?
  t1=$(now_ms)
  size=$(wc -c <$f 2>/dev/null)
  if [ $rc -ne 0 ]; then
    step_line $step FAIL "xl save rc=$rc: $(grep -iE 'error|fail' $out/$step.save.log | tail -2 | tr '\n' ' ')"
    return 1
  fi
  stat=""
  [ "$MS_CAPTURE_BASELINE" = 1 ] && [ $# -eq 0 ] &&
    stat=" $(msxcstat $f 2>&1 | tr ' ' '\n' | grep -E '^(data_pages|zero_pages)=' | tr '\n' ' ')"
  env $preload_env "$@" timeout -s KILL "$MS_TIMEOUT" xl -vv restore $f >$out/$step.restore.log 2>&1
  rrc=$?
  t2=$(now_ms)
  # The plain save file goes to the host, which inspects and replays it (a
  # real `xl save` file for migstream's xl/libxl/libxc reader): raw onto
  # the second disk, as dom0's RAM is short, its length in the results.
  if [ $step = save-plain ] && [ -n "$MS_PRELOAD" ] && cat $f >/dev/vdb 2>/tmp/vdb.err && sync; then
    wc -c <$f >$out/save-plain.size
  elif [ $step = save-plain ]; then
    say "save file not copied out: $(cat /tmp/vdb.err 2>/dev/null)"
  fi
  rm -f $f
  d1=$(xl domid $g 2>/dev/null)
  wait_counter $g $((c0 + 5)) 60 && running=yes || running=no
  c1=$(counter $g)
  set -- $(downtime $g $c0)
  result_line "$step rc=$rc/$rrc save_ms=$((t1 - t0)) restore_ms=$((t2 - t1)) file_bytes=${size:-?} downtime_ms=$1 counter=$c0..$c1 $2 domid=$d0..${d1:-none}$stat"
  detail="save ${size:-?}B in $((t1 - t0))ms, restore $((t2 - t1))ms, guest paused ${1}ms, counter $c0->$c1 ($2), domid $d0->${d1:-none}"
  if [ $rrc -ne 0 ]; then
    step_line $step FAIL "xl restore rc=$rrc: $(grep -iE 'error|fail' $out/$step.restore.log | tail -2 | tr '\n' ' ')"
  elif [ -z "$d1" ] || [ $running = no ] || [ "$2" != ok ]; then
    step_line $step FAIL "restored guest's counter did not continue: $detail"
  else
    step_line $step PASS "$detail"
    return 0
  fi
  return 1
}
step_save_plain() { saverestore $1; }
step_save_preload() { need_preload $1 && saverestore $1 $inband; }

# spawn-stress: many short processes while the guest runs, counting those
# that crash (the TCG flake this lane retries for); a probe of the emulator.
step_spawn_stress() {
  i=0 bad=0 t0=$(now_ms)
  while [ $i -lt "$MS_STRESS_N" ]; do
    echo x | /bin/mscount /dev/null >/dev/null 2>&1 || bad=$((bad + 1))
    i=$((i + 1))
  done
  result_line "$1 spawned=$i crashed=$bad ms=$(($(now_ms) - t0))"
  [ $bad -eq 0 ] && step_line $1 PASS "$i processes, none crashed" || step_line $1 FAIL "$bad of $i processes crashed"
}

# ---- run ------------------------------------------------------------------------
mkdir -p /etc/ms
pvh_gone=0
t=$(now_ms)
say "starting the PVH guest"
start_guest pvh pvh >/tmp/start-pvh.txt || { step_line setup FAIL "PVH guest: $(cat /tmp/start-pvh.txt)"; finish; }
result_line "setup pvh_boot_ms=$(($(now_ms) - t)) attempt=$MS_ATTEMPT"
say "PVH guest up after $(($(now_ms) - t)) ms"

for s in $MS_STEPS; do
  case $s in
    fault-*|record*) pv_boot_async ;;
    save-*)
      # The PVH guest has done its part: its vCPU would slow the PV guest.
      if [ $pvh_gone = 0 ]; then xl destroy pvh >/dev/null 2>&1; pvh_gone=1; fi ;;
  esac
  fn=step_$(echo "${s%%.*}" | tr - _)
  say "step $s"
  $fn $s
done
kill $watchdog 2>/dev/null
finish
