#!/bin/bash
# Xen lane: real `xl migrate` of a running guest through the migstream
# preload, in a Xen 4.17 host VM under qemu-system-x86_64 (TCG; the host's
# KVM cannot run Xen). See ../../../../shared/docs/xen-in-qemu.md for how this
# boots and why the odd flags (smap=false, -cpu max,-fsgsbase,
# tsc_mode="native") are there; the quirks this lane adds are listed where
# xen_cmdline is set (CPU pinning, no AVX).
#
# Usage: tests/vm/xen/xen-lane.sh [--build DIR] [--steps "a b ..."] [--runs N]
#                                 [--no-retry] [--budget SECS] [--keep]
#   --build DIR    meson build dir with the project's artifacts (default
#                  build): xen/libmigstream-xen.so (the preload; its steps say
#                  "SKIP: preload not built" without it) and tools/migstream
#   --steps LIST   steps to run, in order (default: all, see below)
#   --runs N       run each live-migration step N times (for time spreads)
#   --no-retry     no second attempt for steps that failed
#   --budget SECS  watchdog for one VM run (default 1200)
#   --keep         keep the work dir (dom0 tree) for inspection
#   Workload (PVH guest, 128 MiB): --hot MIB (rewritten every 10 ms, default
#   8), --sweep MIB (text pages rewritten in a cycle, default 32), --pps N
#   (sweep pages rewritten per second, default 2000).
#
# Steps (inside dom0, each with a timeout, guest counter checked after each):
#   baseline       xl migrate -s "" pvh "xl migrate-receive", no MIGSTREAM_*
#                  variable (preload loaded but idle when built)
#   inband         MIGSTREAM_TRANSPORT=inband MIGSTREAM_CODEC=zero,delta,lz4
#   tcp            side connection on 127.0.0.1 in dom0, 2 channels, key file
#   rdma           the same over RDMA verbs: Soft-RoCE (rdma_rxe) on a dummy
#                  netdev in dom0, two queue pairs, key file
#   fragmented     inband + MIGSTREAM_SCHED=fragmented
#   fault-key      tcp, receiver's key wrong: must fail, guest stays on source
#   fault-refused  tcp, side connection refused: the same
#   record         inband + MIGSTREAM_RECORD; the capture is copied out and
#                  `migstream replay` on the host must reproduce it byte for
#                  byte (and Xen's verify-stream-v2 must accept it)
#   save-plain     xl save / xl restore of a PV guest (PV guests cannot be
#                  live-migrated by Debian's Xen: no shadow paging); the PV
#                  guest boots in the background from the first fault or
#                  record step on, the PVH guest is destroyed before saving
#                  The save file comes out of the VM: `migstream inspect`
#                  must read it and `migstream replay` (2 channels, key)
#                  must rebuild it byte for byte (save-inspect, save-replay)
#   save-preload   the same through the preload (inband, zero,delta,lz4)
#   spawn-stress   (not in the default list) 200 short processes in dom0,
#                  counting crashes: a probe for the emulator flake
# Per migration it records xl's time, the bytes crossing xl's fd (mscount
# sits between xl and the receiver), the guest's downtime (largest gap
# between its counter lines as dom0 saw them, via mswatch), migstream's log
# lines, and from captured streams (the baseline's wire copy, the preload
# steps' MIGSTREAM_RECORD) rounds, pages sent, zero and resent pages
# (msxcstat).
#
# Output: one line "xen-lane: PASS ..." or "xen-lane: FAIL <steps> ..."
# (exit 0 / 1); a step that fails is retried once in a fresh VM and both
# attempts are reported. Artifacts: artifacts/xen-lane/ (serial logs,
# results.txt, per-step xl logs, the record capture).
set -uo pipefail
top=$(cd "$(dirname "$0")/../../.." && pwd)
here=$top/tests/vm/xen
cd "$top"

all_steps="baseline inband tcp rdma fragmented fault-key fault-refused record save-plain save-preload"
build=$top/build steps=$all_steps runs=1 retry=1 budget=1200 keep=0
hot=8 sweep=32 pps=2000
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(cd "$2" 2>/dev/null && pwd) || { echo "xen-lane: no build dir $2" >&2; exit 2; }; shift ;;
    --steps) steps=$2; shift ;;
    --runs) runs=$2; shift ;;
    --no-retry) retry=0 ;;
    --budget) budget=$2; shift ;;
    --keep) keep=1 ;;
    --hot) hot=$2; shift ;;
    --sweep) sweep=$2; shift ;;
    --pps) pps=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;p}' "$0"; exit 0 ;;
    *) echo "xen-lane: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

art=$top/artifacts/xen-lane
cache=${MS_VM_CACHE:-/var/cache/migstream-vm}
work=$(mktemp -d /tmp/xen-lane.XXXXXX)
rm -rf "$art"
mkdir -p "$art" "$cache"
t_start=$(date +%s)
qemu_pid=""
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  if [ $keep -eq 1 ]; then echo "xen-lane: work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

lane=xen-lane
. "$top/tests/vm/lib.sh"

# ---- host tools -----------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v readelf >/dev/null || need+=(binutils)
command -v modprobe >/dev/null || need+=(kmod)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v python3 >/dev/null || need+=(python3)
install_host_packages ${need[@]+"${need[@]}"}

# ---- Debian packages --------------------------------------------------------------
kernel_package
# libgcc-s1: glibc dlopens libgcc_s for pthread_cancel; xl create aborts without it.
pkgs=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils libxenmisc4.17
      libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1
      libxenstore4 libxentoolcore1 libxentoollog1 libyajl2 libext2fs2 liblzma5 libuuid1 libzstd1 zlib1g
      libncurses6 libtinfo6 libc6 libgcc-s1 busybox-static
      iproute2 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200 libmnl0 libbsd0 libmd0
      libcap2 libelf1)
fetch_debs "$kpkg" "${pkgs[@]}"

pkgroot=$work/pkgroot kroot=$work/kroot rootfs=$work/dom0 groot=$work/guest
mkdir -p "$pkgroot" "$kroot" "$rootfs" "$groot"
unpack_debs "$pkgroot" "${pkgs[@]}"
# Xen's modules, the disk, and Soft-RoCE for the rdma step.
unpack_kernel "$kroot" 'drivers/xen/*' 'drivers/block/virtio_blk.ko' 'drivers/virtio/*' \
  'drivers/infiniband/core/*' 'drivers/infiniband/sw/rxe/*' 'drivers/net/dummy.ko' 'net/ipv4/udp_tunnel.ko' \
  'net/ipv6/ip6_udp_tunnel.ko' 'fs/configfs/*' 'crypto/crc32_generic.ko' 'arch/x86/crypto/crc32-pclmul.ko'
xen_gz=$pkgroot/boot/xen-4.17-amd64.gz
[ -f "$xen_gz" ] || fail_setup "no $xen_gz in xen-hypervisor-4.17-amd64"
gunzip -c "$xen_gz" >"$work/xen" || fail_setup "gunzip $xen_gz"

# ---- the lane's own helpers, static (the guest has no libc) ----------------------------
for t in msdirty mscount mswatch msxcstat; do
  gcc -std=gnu11 -O2 -static -Wall -Wextra -Werror -o "$work/$t" "$here/$t.c" 2>"$work/gcc-$t.log" ||
    { cat "$work/gcc-$t.log"; fail_setup "compiling tests/vm/xen/$t.c"; }
done

# ---- guest initrd (PVH and PV): busybox + msdirty ------------------------------------------
mkdir -p "$groot"/{bin,proc,dev,sys}
cp "$pkgroot/bin/busybox" "$groot/bin/busybox" || fail_setup "no busybox in busybox-static"
for a in sh cat grep mount sleep uname echo; do ln -sf busybox "$groot/bin/$a"; done
cp "$work/msdirty" "$groot/bin/msdirty"
cp "$here/guest-init.sh" "$groot/init"
chmod +x "$groot/init"
(cd "$groot" && find . | cpio -o -H newc --quiet) >"$work/guest-initrd.cpio" || fail_setup "cpio (guest)"

# ---- dom0 tree -------------------------------------------------------------------------------
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib64,lib/x86_64-linux-gnu,usr/lib/migstream,proc,sys,dev,tmp,run,boot,out,etc/xen,etc/ms,var/lib,var/log}
busybox_tree "$pkgroot/bin/busybox" "$rootfs"
# The toolstack where libxl expects it (/usr/lib/xen-4.17/bin/libxl-save-helper
# is compiled into libxl) and its libraries; docs, man pages, python left out.
(cd "$pkgroot" && tar -c --exclude='./usr/share' --exclude='./boot' --exclude='./usr/lib/xen-4.17/lib/python' \
   --exclude='./usr/lib/xen-4.17/boot' --exclude='./bin' --exclude='./sbin/ldconfig*' ./usr ./lib ./lib64 ./etc) |
  tar -x -C "$rootfs" --keep-directory-symlink || fail_setup "copying the toolstack"
# Guests get the kernel as an uncompressed ELF: libxenguest's XZ path failed
# here ("unable to XZ decompress kernel: Invalid kernel"), and decompressing
# 8 MB of XZ under TCG costs seconds per xl create anyway.
python3 - "$vmlinuz" "$rootfs/boot/guest-vmlinux" <<'PY' || fail_setup "extracting vmlinux from $vmlinuz"
import lzma, struct, sys
img = open(sys.argv[1], "rb").read()
setup_sects = img[0x1f1] or 4
payload_offset = struct.unpack_from("<I", img, 0x248)[0]
dec = lzma.LZMADecompressor()
elf = dec.decompress(img[(setup_sects + 1) * 512 + payload_offset:])
if not dec.eof or elf[:4] != b"\x7fELF":
    sys.exit("payload is not one XZ stream holding an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
cp "$work/guest-initrd.cpio" "$rootfs/boot/guest-initrd.cpio"
for t in mscount mswatch msxcstat; do cp "$work/$t" "$rootfs/bin/$t"; done
cp "$here/dom0-init.sh" "$rootfs/init"
chmod +x "$rootfs/init"
echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"

# Kernel modules in dependency order, each once.
install_modules "$kroot" "$rootfs" xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc virtio_pci virtio_blk \
  crc32_generic crc32_pclmul rdma_rxe rdma_ucm dummy
grep -q xen-privcmd.ko "$rootfs/etc/ms-modules" || fail_setup "module list lacks xen-privcmd (see $work/modprobe.log)"

# The project's artifacts.
preload=""
pl=$(ls "$build"/xen/libmigstream-xen.so "$build"/xen/libmigstream-xen.so.* 2>/dev/null | head -1)
if [ -n "$pl" ]; then
  cp -L "$pl" "$rootfs/usr/lib/migstream/libmigstream-xen.so"
  preload=/usr/lib/migstream/libmigstream-xen.so
fi
migstream=""
if [ -x "$build/tools/migstream" ]; then
  cp "$build/tools/migstream" "$rootfs/usr/bin/migstream"
  migstream=$build/tools/migstream
fi
log "build dir $build: preload ${pl:-not built}, migstream ${migstream:-not built}"

# Every shared library by ELF NEEDED: the unpacked packages first, then the
# build dir, then the host (lz4, zstd, sodium, ... our binaries link).
libdirs=("$rootfs/lib/x86_64-linux-gnu" "$rootfs/usr/lib/x86_64-linux-gnu" "$rootfs/usr/lib/xen-4.17/lib/x86_64-linux-gnu"
         "$build" "$build/xen" /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu)
while read -r f; do
  head -c 4 "$f" 2>/dev/null | grep -q ELF && copy_deps "$f" "$rootfs/usr/lib/x86_64-linux-gnu"
done < <(find "$rootfs/usr/lib/xen-4.17/bin" "$rootfs/usr/lib/migstream" "$rootfs/usr/bin" -type f)
[ -e "$rootfs/lib64/ld-linux-x86-64.so.2" ] || fail_setup "no ld-linux-x86-64.so.2 from libc6"

# Keys for the tcp steps: the right one on both ends, a wrong one for the fault.
for k in key wrong.key; do
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$rootfs/etc/ms/$k"
  echo >>"$rootfs/etc/ms/$k"
  chmod 600 "$rootfs/etc/ms/$k"
done

# ---- boot ---------------------------------------------------------------------------------
# Emulator quirks worked around here (see also xen-in-qemu.md):
# - smap=false: dom0 crashes within seconds without it under TCG.
# - dom0 on one vCPU pinned to CPU 0, guests pinned to CPU 1 (MS_GUEST_CPUS):
#   with dom0 and the HVM-container guest sharing a CPU, dom0 processes
#   crashed on a wrong FS base (7 of ~150 spawns); pinned, none of 200.
# - no AVX family in the CPU model (QEMU 7.2's TCG has it): the PVH guest's
#   init died once on #UD at a VEX instruction glibc had picked for it.
xen_cmdline="console=com1 com1=115200,8n1 noreboot dom0_mem=1024M,max:1024M bootscrub=false spec-ctrl=no smap=false ${MS_XEN_EXTRA-dom0_max_vcpus=1 dom0_vcpus_pin}"
run_vm() { # ATTEMPT STEPS LOG DISK
  local attempt=$1 st=$2 logf=$3 disk=$4
  cat >"$rootfs/etc/ms-lane.conf" <<EOF
MS_STEPS="$st"
MS_ATTEMPT=$attempt
MS_PRELOAD="$preload"
MS_BUDGET=$((budget - 30))
MS_TIMEOUT=480
MS_BOOT_WAIT=420
MS_GUEST_MB=128
MS_HOT=$hot
MS_SWEEP=$sweep
MS_PPS=$pps
MS_PRINT=100
MS_CODEC=zero,delta,lz4
MS_PORT=47000
MS_GUEST_CPUS="${MS_GUEST_CPUS-1}"
MS_STRESS_N=${MS_STRESS_N:-200}
MS_CAPTURE_BASELINE=1
EOF
  (cd "$rootfs" && find . | cpio -o -H newc --quiet) >"$work/dom0.cpio" || fail_setup "cpio (dom0)"
  rm -f "$disk" "$disk.save"
  truncate -s 1G "$disk"
  truncate -s 512M "$disk.save"
  log "attempt $attempt: dom0 initrd $(du -h "$work/dom0.cpio" | cut -f1), steps: $st"
  : >"$logf"
  timeout --kill-after=10 "$budget" qemu-system-x86_64 -accel "${MS_QEMU_ACCEL:-tcg}" -nographic -no-reboot -m 2048 -smp 2 \
    -cpu "${MS_QEMU_CPU:-max,-fsgsbase,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq,-avx-vnni}" -monitor none -serial stdio -net none \
    -drive "file=$disk,format=raw,if=virtio" -drive "file=$disk.save,format=raw,if=virtio" \
    -kernel "$work/xen" -append "$xen_cmdline" \
    -initrd "$vmlinuz console=hvc0 earlyprintk=xen rdinit=/init,$work/dom0.cpio" \
    </dev/null >"$logf" 2>&1 &
  qemu_pid=$!
  # dom0 cannot power the emulated machine off through Xen: stop QEMU once
  # the END line (written after the results disk is synced) shows up.
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if tr -d '\r' <"$logf" | grep -q '^MS-LANE: END'; then
      sleep 1
      kill "$qemu_pid" 2>/dev/null
      break
    fi
    sleep 2
  done
  wait "$qemu_pid" 2>/dev/null
  qemu_pid=""
}

# Steps expanded with --runs: live migrations N times, the rest once.
plan=""
for s in $steps; do
  case $s in
    baseline|inband|tcp|rdma|fragmented)
      if [ "$runs" -gt 1 ]; then for i in $(seq 1 "$runs"); do plan="$plan $s.$i"; done; else plan="$plan $s"; fi ;;
    *) plan="$plan $s" ;;
  esac
done
plan=${plan# }

# verdicts ATTEMPT: reads the attempt's serial log into $work/verdict-N
# ("step PASS|FAIL|SKIP detail"); steps with no line are "FAIL not reached".
verdicts() {
  local n=$1 logf=$art/serial-attempt$1.log s
  tr -d '\r' <"$logf" | sed -n 's/^MS-STEP //p' >"$work/verdict-$n.raw"
  : >"$work/verdict-$n"
  for s in ${2}; do
    if grep -q "^$s " "$work/verdict-$n.raw"; then
      grep "^$s " "$work/verdict-$n.raw" | tail -1 >>"$work/verdict-$n"
    else
      why=$(tr -d '\r' <"$logf" | grep -m1 -E 'WATCHDOG|MS-STEP setup|Kernel panic|Panic on CPU|segfault' || true)
      echo "$s FAIL not reached${why:+ ($why)}" >>"$work/verdict-$n"
    fi
  done
}
extract() { # ATTEMPT DISK
  mkdir -p "$art/attempt$1"
  tar -xf "$2" -C "$art/attempt$1" 2>/dev/null || log "attempt $1: no results archive on the disk"
  # The plain save file went raw onto the second disk (dom0's RAM cannot
  # hold it next to the record capture); its length is in save-plain.size.
  local n
  n=$(cat "$art/attempt$1/save-plain.size" 2>/dev/null) &&
    head -c "$n" "$2.save" >"$art/attempt$1/save-plain.save"
  rm -f "$2.save"
}

# ---- attempt 1, and a retry of what failed ------------------------------------------------
run_vm 1 "$plan" "$art/serial-attempt1.log" "$work/disk1.img"
extract 1 "$work/disk1.img"
verdicts 1 "$plan"
failed=$(awk '$2 == "FAIL" { printf "%s ", $1 }' "$work/verdict-1")
failed=${failed% }
if [ -n "$failed" ] && [ $retry -eq 1 ]; then
  log "attempt 1 failed: $failed; retrying those in a fresh VM"
  run_vm 2 "$failed" "$art/serial-attempt2.log" "$work/disk2.img"
  extract 2 "$work/disk2.img"
  verdicts 2 "$failed"
fi

# ---- host-side check of the record capture --------------------------------------------------
host_line=""
record_check() { # DIR
  local cap=$1/record.xc out
  [ -f "$cap" ] || { echo "record-host FAIL the record step passed but no record.xc came out of the VM" >>"$work/host-verdicts"; return 0; }
  local vs=$pkgroot/usr/lib/xen-4.17/bin/verify-stream-v2
  if PYTHONPATH=$pkgroot/usr/lib/xen-4.17/lib/python python3 "$vs" -i "$cap" >"$art/record-verify-stream-v2.log" 2>&1; then
    echo "record-verify PASS Xen's verify-stream-v2 accepts the capture ($(wc -c <"$cap") bytes; $("$work/msxcstat" "$cap" | cut -d" " -f6-10))" >>"$work/host-verdicts"
  else
    echo "record-verify FAIL verify-stream-v2 rejects the capture: $(tail -1 "$art/record-verify-stream-v2.log")" >>"$work/host-verdicts"
  fi
  if [ -z "$migstream" ] || ! "$migstream" replay --help >/dev/null 2>&1; then
    echo "record-replay SKIP migstream replay not built" >>"$work/host-verdicts"
    return 0
  fi
  # The capture as a libxc stream if this build replays those; otherwise as
  # an opaque image, which still proves its bytes survive the pipeline.
  local how="as a libxc stream"
  "$migstream" replay --stream "$cap" --json -q >"$art/record-replay.json" 2>"$art/record-replay.log"
  if grep -q '"code":-14' "$art/record-replay.json"; then
    how="as an opaque image (this build does not replay libxc streams)"
    "$migstream" replay --image "$cap" --json -q >"$art/record-replay.json" 2>"$art/record-replay.log"
  fi
  out=$(tr -d '\n' <"$art/record-replay.json")
  if echo "$out" | grep -q '"identical":true'; then
    echo "record-replay PASS migstream replay reproduced the capture byte for byte $how: $(echo "$out" | grep -o '"source_digest":"[0-9a-f]*","receiver_digest":"[0-9a-f]*"')" >>"$work/host-verdicts"
  else
    echo "record-replay FAIL migstream replay $how: $(echo "$out" | grep -o '"error":{[^}]*}' || tail -2 "$art/record-replay.log" | tr '\n' ' ')" >>"$work/host-verdicts"
  fi
}
# save_check DIR: the plain `xl save` file of a real PV guest through
# migstream's own reader (inspect) and the pipeline (replay, 2 sealed
# channels), which must rebuild it byte for byte.
save_check() {
  local f=$1/save-plain.save
  [ -f "$f" ] || { echo "save-inspect FAIL the save-plain step passed but no save file came out of the VM" >>"$work/host-verdicts"; return 0; }
  if [ -z "$migstream" ]; then
    echo "save-inspect SKIP migstream not built" >>"$work/host-verdicts"
    return 0
  fi
  if "$migstream" inspect --json "$f" >"$art/save-inspect.json" 2>"$art/save-inspect.log"; then
    echo "save-inspect PASS migstream inspect reads the real xl save file ($(wc -c <"$f") bytes): $("$migstream" inspect "$f" 2>&1 | sed -n 1,2p | tr '\n' ' ' | cut -c1-160)" >>"$work/host-verdicts"
  else
    echo "save-inspect FAIL $(tail -1 "$art/save-inspect.log")" >>"$work/host-verdicts"
  fi
  "$migstream" keygen "$work/save.key" >/dev/null 2>&1
  "$migstream" replay --image "$f" --channels 2 --key "$work/save.key" --json -q >"$art/save-replay.json" 2>"$art/save-replay.log"
  local out
  out=$(tr -d '\n' <"$art/save-replay.json")
  if echo "$out" | grep -q '"identical":true'; then
    echo "save-replay PASS migstream replay rebuilt the xl save file byte for byte over 2 sealed channels: $(echo "$out" | grep -o '"source_digest":"[0-9a-f]*","receiver_digest":"[0-9a-f]*"')" >>"$work/host-verdicts"
  else
    echo "save-replay FAIL $(echo "$out" | grep -o '"error":{[^}]*}' || tail -2 "$art/save-replay.log" | tr '\n' ' ')" >>"$work/host-verdicts"
  fi
  rm -f "$f"
}
: >"$work/host-verdicts"
if grep -q '^record PASS' "$work/verdict-1"; then record_check "$art/attempt1"
elif [ -f "$work/verdict-2" ] && grep -q '^record PASS' "$work/verdict-2"; then record_check "$art/attempt2"; fi
if grep -q '^save-plain PASS' "$work/verdict-1"; then save_check "$art/attempt1"
elif [ -f "$work/verdict-2" ] && grep -q '^save-plain PASS' "$work/verdict-2"; then save_check "$art/attempt2"; fi

# ---- report ------------------------------------------------------------------------------------
final_fail=() flaky=() npass=0 nskip=0
for s in $plan; do
  v1=$(grep "^$s " "$work/verdict-1" | head -1)
  v2=$( [ -f "$work/verdict-2" ] && grep "^$s " "$work/verdict-2" | head -1 || true)
  r1=$(echo "$v1" | awk '{ print $2 }')
  r2=$(echo "$v2" | awk '{ print $2 }')
  printf '  %-14s %s\n' "$s" "${v1#"$s "}"
  [ -n "$v2" ] && printf '  %-14s retry: %s\n' "" "${v2#"$s "}"
  final=${r2:-$r1}
  case $final in
    PASS) npass=$((npass + 1)); [ "$r1" = FAIL ] && flaky+=("$s") ;;
    SKIP) nskip=$((nskip + 1)) ;;
    *) final_fail+=("$s") ;;
  esac
done
while read -r s res detail; do
  printf '  %-14s %s %s\n' "$s" "$res" "$detail"
  case $res in PASS) npass=$((npass + 1)) ;; SKIP) nskip=$((nskip + 1)) ;; *) final_fail+=("$s") ;; esac
done <"$work/host-verdicts"
for a in 1 2; do
  [ -f "$art/attempt$a/results.txt" ] && sed "s/^/attempt=$a /" "$art/attempt$a/results.txt"
done >"$art/results.txt"
# One row per migration: bytes first (times are noisy under emulation).
awk '
  function v(k,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] } return "-" }
  v("time_ms") != "-" || v("save_ms") != "-" {
    s = v("step"); w = v("wire_bytes"); if (w == "-") w = v("file_bytes")
    # tcp steps: the side connection (dom0 loopback bytes) plus xl fd bytes.
    if (v("lo_bytes") + 0 > 4096) w = w + v("lo_bytes")
    # rdma steps: rxe loops local traffic back inside the kernel, so the
    # side connection is counted by the preload (MiB, 1 decimal).
    if (s ~ /^rdma/ && v("ms_wire_mib") != "-") w = int(w + v("ms_wire_mib") * 1048576)
    if (v("rc") != "0" && v("rc") != "0/0") w = "-"
    if (s ~ /^baseline/ && w + 0 > 0 && base == "") base = w
    if (s ~ /^save-plain/ && w + 0 > 0 && sbase == "") sbase = w
    b = s ~ /^save-/ ? sbase : base
    r = (b != "" && w + 0 > 0) ? sprintf("%.2f", b / w) : "-"
    t = v("time_ms"); if (t == "-") t = v("save_ms") "+" v("restore_ms")
    rd = v("rounds"); if (rd == "-") rd = v("ms_rounds")
    dp = v("data_pages"); if (dp == "-") dp = v("ms_pages")
    printf "%-8s %-16s %4s %12s %7s %6s %10s %8s %8s %9s %s\n", v("attempt"), s, v("rc"), w, r, rd,
      dp, v("zero_pages"), v("resent_pages"), v("downtime_ms"), t
  }' "$art/results.txt" >"$work/rows"
{
  printf "%-8s %-16s %4s %12s %7s %6s %10s %8s %8s %9s %s\n" attempt step rc wire_bytes xbase rounds data_pages zero resent downtime_ms time_ms
  cat "$work/rows"
} >"$art/summary.txt"
cat "$art/summary.txt"
took=$(( $(date +%s) - t_start ))
echo "xen-lane: $npass passed, ${#final_fail[@]} failed, $nskip skipped"
logs="artifacts/xen-lane/serial-attempt1.log$([ -f "$work/verdict-2" ] && echo ' artifacts/xen-lane/serial-attempt2.log')"
if [ ${#final_fail[@]} -eq 0 ] && [ $npass -gt 0 ]; then
  echo "xen-lane: PASS (${took}s${flaky[*]:+; passed on retry: ${flaky[*]}}; serial log: $logs)"
  exit 0
fi
echo "xen-lane: FAIL ${final_fail[*]} (${took}s; serial log: $logs)"
exit 1
