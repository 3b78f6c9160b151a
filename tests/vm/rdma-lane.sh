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

lane=rdma-lane
. "$top/tests/vm/lib.sh"

# ---- host tools -------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v readelf >/dev/null || need+=(binutils)
command -v meson >/dev/null || need+=(meson)
command -v ninja >/dev/null || need+=(ninja-build)
pkg-config --exists libibverbs librdmacm 2>/dev/null || need+=(libibverbs-dev librdmacm-dev)
install_host_packages ${need[@]+"${need[@]}"}

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
kernel_package
pkgs=(busybox-static iproute2 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200
      libmnl0 libbsd0 libmd0 libcap2 libelf1)
fetch_debs "$kpkg" "${pkgs[@]}"

pkgroot=$work/pkgroot kroot=$work/kroot rootfs=$work/rootfs
mkdir -p "$pkgroot" "$kroot" "$rootfs"
unpack_debs "$pkgroot" "${pkgs[@]}"
# Only the module folders Soft-RoCE and virtio-net need (~12 MB of ~400).
unpack_kernel "$kroot" 'drivers/infiniband/core/*' 'drivers/infiniband/sw/rxe/*' 'drivers/net/dummy.ko' \
  'drivers/net/virtio_net.ko' 'drivers/net/net_failover.ko' 'drivers/virtio/*' 'net/core/failover.ko' \
  'net/ipv4/udp_tunnel.ko' 'net/ipv6/ip6_udp_tunnel.ko' 'fs/configfs/*' 'crypto/crc32_generic.ko' \
  'arch/x86/crypto/crc32-pclmul.ko'

# ---- initramfs ----------------------------------------------------------------
mkdir -p "$rootfs"/{bin,sbin,usr/bin,etc/libibverbs.d,lib64,lib/x86_64-linux-gnu,proc,sys,dev,tmp,run}
busybox_tree "$pkgroot/bin/busybox" "$rootfs"
cp "$top/tests/vm/init.sh" "$rootfs/init"
chmod +x "$rootfs/init"

# Modules in dependency order, each once ("rdma_rxe needs crc32_generic";
# with crc32_pclmul loaded before it, rxe computes its ICRC with carry-less
# multiplication, as a real host's kernel would, not byte tables).
install_modules "$kroot" "$rootfs" crc32_generic crc32_pclmul rdma_rxe rdma_ucm dummy virtio_pci virtio_net
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
elfs=("$rootfs"/bin/* "$rootfs/usr/lib/x86_64-linux-gnu/libibverbs/"*.so)
for f in "${elfs[@]}"; do
  [ -L "$f" ] && continue
  copy_deps "$f" "$rootfs/lib/x86_64-linux-gnu"
done
# glibc dlopens libgcc_s for pthread_exit/cancel; nothing lists it.
for n in libgcc_s.so.1; do
  [ -n "${lib_copied[$n]:-}" ] && continue
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
