#!/bin/bash
# RDMA test lane: runs the project's rdma code on real verbs (Soft-RoCE,
# rdma_rxe) inside a small Linux VM under qemu-system-x86_64 with software
# emulation, because the host kernels have no RDMA support.
#
# Usage: tests/vm/rdma-lane.sh [--two-vm] [--build DIR [--no-build]] [--bench | --bench-only]
#                              [--mb N] [--budget SECS] [--keep]
#   --two-vm      two VMs joined by virtio-net over a UDP socket on 127.0.0.1:
#                 real RoCEv2 packets between two kernels
#   --build DIR   meson build dir to take binaries from (default: build-vm,
#                 configured here with -Drdma=enabled -Dxen=disabled)
#   --no-build    take the binaries already in the build dir, run no ninja
#   --bench       also run bench_rdma (CPU s/GiB, rdma vs tcp) in the VM
#   --bench-only  only bench_rdma (--mb sets the bytes per run)
#   --reps N      bench runs per transport, alternating (default 3)
#   --mb N        MiB moved by the bulk tests (default 8)
#   --budget S    watchdog for one VM run (default 270 s)
#   --keep        keep the work dir (initramfs tree) for inspection
#
# What it does: installs missing host tools (qemu-system-x86, cpio, kmod) with
# apt-get; fetches Debian packages with `apt-get download` into a cache and
# unpacks them with dpkg -x / dpkg-deb (never installed into /): the kernel
# (only the module folders needed), busybox-static, iproute2 (ip, rdma),
# libibverbs1 + ibverbs-providers (rxe), librdmacm1; copies the project's
# binaries and every shared library they need (ELF NEEDED walk, failing
# loudly if one is missing); builds a gzip'ed cpio initramfs whose /init is
# tests/vm/init.sh; boots it; and reads "MS-TEST NAME PASS|FAIL|SKIP" lines
# from the serial log, kept in artifacts/rdma-lane*.log.
# Prints one line "rdma-lane: PASS ..." or "rdma-lane: FAIL <test> ..." and
# exits 0 / 1.
set -uo pipefail
# Everything runs from main(), parsed whole before it starts, so editing this
# file while a lane runs cannot derail it.
main() {
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

two_vm=0 build="" nobuild=0 bench=0 reps=3 mb=8 budget=270 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --two-vm) two_vm=1 ;;
    --build) build=$2; shift ;;
    --no-build) nobuild=1 ;;
    --bench) bench=1 ;;
    --bench-only) bench=2 ;;
    --reps) reps=$2; shift ;;
    --mb) mb=$2; shift ;;
    --budget) budget=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "rdma-lane: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

art=$top/artifacts
cache=${MS_VM_CACHE:-/var/cache/migstream-vm}
work=$(mktemp -d /tmp/rdma-lane.XXXXXX)
mkdir -p "$art" "$cache"
t_start=$(date +%s)
cleanup() { [ $keep -eq 1 ] && echo "rdma-lane: work dir kept: $work" || rm -rf "$work"; }
trap cleanup EXIT

fail_setup() {
  echo "rdma-lane: FAIL setup: $*"
  exit 1
}
log() { echo "rdma-lane: $*" >&2; }

# ---- host tools -------------------------------------------------------------
apt_updated=0
apt_update() {
  [ $apt_updated -eq 1 ] && return 0
  apt_updated=1
  log "apt-get update"
  apt-get -o DPkg::Lock::Timeout=300 update -q >"$work/apt-update.log" 2>&1 ||
    { cat "$work/apt-update.log" >&2; return 1; }
}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v readelf >/dev/null || need+=(binutils)
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
pkg-config --exists libibverbs librdmacm 2>/dev/null || need+=(libibverbs-dev librdmacm-dev)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail_setup "missing ${need[*]} and not root to install them"
  apt_update || fail_setup "apt-get update failed"
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
    "${need[@]}" >"$work/apt-install.log" 2>&1 || { tail -20 "$work/apt-install.log"; fail_setup "apt-get install ${need[*]}"; }
fi

# ---- project binaries -------------------------------------------------------
if [ -z "$build" ] && [ $nobuild -eq 0 ]; then
  build=$top/build-vm
  if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Drdma=enabled -Dxen=disabled -Dbuildtype=debugoptimized >"$work/meson.log" 2>&1 ||
      { tail -30 "$work/meson.log"; fail_setup "meson setup $build"; }
  fi
fi
[ -n "$build" ] || fail_setup "--no-build needs --build DIR"
targets=(tests/rdma/test_rdma tests/rdma/rdma_xfer tests/rdma/rdma_stream tests/rdma/bench_rdma)
if [ $nobuild -eq 1 ]; then
  [ -x "$build/tools/migstream" ] && targets+=(tools/migstream)
else
  ninja -C "$build" -t targets all 2>/dev/null | grep -q '^tools/migstream:' && targets+=(tools/migstream)
  ninja -C "$build" "${targets[@]}" >"$work/ninja.log" 2>&1 || { tail -30 "$work/ninja.log"; fail_setup "ninja ${targets[*]}"; }
fi
bins=()
for t in "${targets[@]}"; do bins+=("$build/$t"); done

# ---- Debian packages ---------------------------------------------------------
# libc and libgcc come from the host, which built the binaries.
deb_of() { ls "$cache/${1}_"*.deb 2>/dev/null | head -1; }
fetch_debs() { # sets kpkg, kver, pkgs; 1 if anything is missing
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$kpkg" ] || return 1
  kver=${kpkg#linux-image-}
  pkgs=("$kpkg" busybox-static iproute2 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200
        libmnl0 libbsd0 libmd0 libcap2 libelf1)
  local fetch=() p
  for p in "${pkgs[@]}"; do [ -n "$(deb_of "$p")" ] || fetch+=("$p"); done
  if [ ${#fetch[@]} -gt 0 ]; then
    log "apt-get download ${fetch[*]}"
    (cd "$cache" && apt-get download "${fetch[@]}" >"$work/download.log" 2>&1) || return 1
  fi
  for p in "${pkgs[@]}"; do [ -n "$(deb_of "$p")" ] || return 1; done
}
# Stale or missing package lists: update once and try again.
if ! fetch_debs; then
  apt_update || fail_setup "apt-get update failed"
  fetch_debs || { tail -20 "$work/download.log" 2>/dev/null
                  fail_setup "cannot fetch ${kpkg:-the kernel package (apt-cache depends linux-image-amd64)} and the VM's packages"; }
fi

pkgroot=$work/pkgroot kroot=$work/kroot rootfs=$work/rootfs
mkdir -p "$pkgroot" "$kroot" "$rootfs"
for p in "${pkgs[@]}"; do
  [ "$p" = "$kpkg" ] || dpkg -x "$(deb_of "$p")" "$pkgroot" || fail_setup "dpkg -x $p"
done
# Only the module folders Soft-RoCE and virtio-net need (~12 MB of ~400).
dpkg-deb --fsys-tarfile "$(deb_of "$kpkg")" | tar -x -C "$kroot" --wildcards \
  './boot/vmlinuz-*' './lib/modules/*/modules.builtin' './lib/modules/*/modules.order' \
  './lib/modules/*/modules.builtin.modinfo' './lib/modules/*/kernel/drivers/infiniband/core/*' \
  './lib/modules/*/kernel/drivers/infiniband/sw/rxe/*' './lib/modules/*/kernel/drivers/net/dummy.ko' \
  './lib/modules/*/kernel/drivers/net/virtio_net.ko' './lib/modules/*/kernel/drivers/net/net_failover.ko' \
  './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/net/core/failover.ko' \
  './lib/modules/*/kernel/net/ipv4/udp_tunnel.ko' './lib/modules/*/kernel/net/ipv6/ip6_udp_tunnel.ko' \
  './lib/modules/*/kernel/fs/configfs/*' './lib/modules/*/kernel/crypto/crc32_generic.ko' \
  './lib/modules/*/kernel/arch/x86/crypto/crc32-pclmul.ko' ||
  fail_setup "unpacking $kpkg"
depmod -b "$kroot" "$kver" || fail_setup "depmod -b for $kver"
vmlinuz=$kroot/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || fail_setup "no $vmlinuz in $kpkg"

# ---- initramfs ----------------------------------------------------------------
mkdir -p "$rootfs"/{bin,sbin,usr/bin,etc/libibverbs.d,lib64,lib/x86_64-linux-gnu,proc,sys,dev,tmp,run}
cp "$pkgroot/bin/busybox" "$rootfs/bin/busybox" || fail_setup "no busybox in busybox-static"
for a in $("$rootfs/bin/busybox" --list); do
  [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"
done
cp "$top/tests/vm/init.sh" "$rootfs/init"
chmod +x "$rootfs/init"

# Modules in dependency order, each once ("rdma_rxe needs crc32_generic";
# with crc32_pclmul loaded before it, rxe computes its ICRC with carry-less
# multiplication, as a real host's kernel would, not byte tables).
: >"$rootfs/etc/ms-modules"
for m in crc32_generic crc32_pclmul rdma_rxe rdma_ucm dummy virtio_pci virtio_net; do
  modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>>"$work/modprobe.log" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r path; do
  rel=${path#"$kroot"}
  mkdir -p "$rootfs$(dirname "$rel")"
  cp "$path" "$rootfs$rel"
  echo "$rel" >>"$rootfs/etc/ms-modules"
done
grep -q rdma_rxe.ko "$rootfs/etc/ms-modules" || fail_setup "module list lacks rdma_rxe (see $work/modprobe.log)"

# Binaries: ours, ip and rdma from iproute2, the rxe verbs provider.
for b in "${bins[@]}"; do cp "$b" "$rootfs/bin/" || fail_setup "copy $b"; done
rm -f "$rootfs/bin/ip"
cp "$pkgroot/bin/ip" "$rootfs/bin/ip" && cp "$pkgroot/usr/bin/rdma" "$rootfs/bin/rdma" ||
  fail_setup "ip/rdma missing from iproute2"
provider=$(ls "$pkgroot"/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so 2>/dev/null | head -1)
[ -n "$provider" ] || fail_setup "no rxe provider in ibverbs-providers"
mkdir -p "$rootfs/usr/lib/x86_64-linux-gnu/libibverbs"
cp "$provider" "$rootfs/usr/lib/x86_64-linux-gnu/libibverbs/"
cp "$pkgroot/etc/libibverbs.d/rxe.driver" "$rootfs/etc/libibverbs.d/" || fail_setup "no rxe.driver"

# Shared libraries by ELF NEEDED, from the unpacked packages first, then the
# host (libraries our binaries were linked against: lz4, zstd, sodium, ...).
libdirs=("$pkgroot/lib/x86_64-linux-gnu" "$pkgroot/usr/lib/x86_64-linux-gnu" /lib/x86_64-linux-gnu
         /usr/lib/x86_64-linux-gnu)
find_lib() {
  for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  return 1
}
declare -A copied=()
copy_deps() {
  local f=$1 n p
  for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${copied[$n]:-}" ] && continue
    p=$(find_lib "$n") || fail_setup "shared library $n (needed by $(basename "$f")) not found"
    copied[$n]=1
    cp -L "$p" "$rootfs/lib/x86_64-linux-gnu/$n"
    copy_deps "$p"
  done
}
elfs=("$rootfs"/bin/* "$rootfs/usr/lib/x86_64-linux-gnu/libibverbs/"*.so)
for f in "${elfs[@]}"; do
  [ -L "$f" ] && continue
  copy_deps "$f"
done
# glibc dlopens libgcc_s for pthread_exit/cancel; nothing lists it.
for n in libgcc_s.so.1; do
  [ -n "${copied[$n]:-}" ] && continue
  p=$(find_lib "$n") || fail_setup "$n not found"
  cp -L "$p" "$rootfs/lib/x86_64-linux-gnu/$n"
done
cp -L "$(find_lib ld-linux-x86-64.so.2)" "$rootfs/lib64/ld-linux-x86-64.so.2" || fail_setup "no ld-linux"
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$rootfs/etc/ld.so.conf"
echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"

initrd=$work/initrd.cpio.gz
(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd" || fail_setup "cpio"
log "initramfs $(du -h "$initrd" | cut -f1), kernel $kver, setup $(( $(date +%s) - t_start )) s"

# ---- boot -----------------------------------------------------------------------
# No display, monitor or terminal: the serial console goes to a file and
# setsid keeps qemu away from the caller's terminal (two VMs at once).
qemu_base=(qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1024 -display none -vga none
           -monitor none -no-reboot -kernel "$vmlinuz" -initrd "$initrd")
cmdline="console=ttyS0 quiet panic=-1 ms_mb=$mb ms_budget=$((budget - 15)) ms_bench=$bench ms_reps=$reps"

run_vm() { # LOG EXTRA_CMDLINE QEMU_NET_ARGS...
  local logf=$1 extra=$2 rc
  shift 2
  rm -f "$logf"
  setsid -w timeout --kill-after=10 "$budget" "${qemu_base[@]}" -serial "file:$logf" \
    -append "$cmdline $extra" "$@" </dev/null >"$logf.qemu" 2>&1
  rc=$?
  [ -s "$logf.qemu" ] && { echo "--- qemu (exit $rc):"; cat "$logf.qemu"; } >>"$logf"
  rm -f "$logf.qemu"
  return $rc
}

logs=()
if [ $two_vm -eq 0 ]; then
  logs=("$art/rdma-lane-serial.log")
  role=single
  [ $bench -eq 2 ] && role=bench
  run_vm "${logs[0]}" "ms_role=$role ms_ip=10.0.0.1 ms_peer=10.0.0.1" -net none
else
  pa=$((20000 + RANDOM % 20000)) pb=$((pa + 1))
  logs=("$art/rdma-lane-vm-a.log" "$art/rdma-lane-vm-b.log")
  run_vm "${logs[0]}" "ms_role=a ms_ip=10.0.0.1 ms_peer=10.0.0.2" \
    -netdev socket,id=n0,udp=127.0.0.1:$pb,localaddr=127.0.0.1:$pa \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:4d:53:01,romfile= &
  va=$!
  run_vm "${logs[1]}" "ms_role=b ms_ip=10.0.0.2 ms_peer=10.0.0.1" \
    -netdev socket,id=n0,udp=127.0.0.1:$pa,localaddr=127.0.0.1:$pb \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:4d:53:02,romfile= &
  vb=$!
  wait $va
  wait $vb
fi

# ---- verdict --------------------------------------------------------------------
pass=0 failn=0 skip=0 failed=()
for l in "${logs[@]}"; do
  tr -d '\r' <"$l" | grep -E '^MS-TEST ' | while read -r _ name res detail; do
    printf '  %-24s %-4s %s\n' "$name" "$res" "$detail"
  done
  while read -r _ name res _; do
    case $res in
      PASS) pass=$((pass + 1)) ;;
      SKIP) skip=$((skip + 1)) ;;
      *) failn=$((failn + 1)); failed+=("$name") ;;
    esac
  done < <(tr -d '\r' <"$l" | grep -E '^MS-TEST ')
  if ! tr -d '\r' <"$l" | grep -q '^MS-LANE: END'; then
    failn=$((failn + 1))
    why=$(tr -d '\r' <"$l" | grep -m1 -E 'WATCHDOG|Kernel panic|MS-LANE: insmod' || echo "no END line (host timeout ${budget}s?)")
    failed+=("vm[$(basename "$l" .log)]: $why")
  fi
done
took=$(( $(date +%s) - t_start ))
echo "rdma-lane: $pass passed, $failn failed, $skip skipped"
if [ $failn -eq 0 ] && [ $pass -gt 0 ]; then
  echo "rdma-lane: PASS ($([ $two_vm -eq 1 ] && echo two VMs || echo one VM), ${took}s; serial log: ${logs[*]#"$top/"})"
  exit 0
fi
echo "rdma-lane: FAIL ${failed[*]} (${took}s; serial log: ${logs[*]#"$top/"})"
exit 1
}

main "$@"
