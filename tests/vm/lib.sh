# Shared setup for the VM lanes (tests/vm/rdma-lane.sh, tests/vm/xen/xen-lane.sh):
# host tools, Debian packages fetched into a cache and unpacked (never
# installed into /), kernel modules in dependency order, and the shared
# libraries a binary needs. Sourced, not run. Before sourcing, the lane sets
# `lane` (its name, prefixing every message), `work` (its scratch dir) and
# `cache` (where .deb files are kept between runs).

log() { echo "$lane: $*" >&2; }
fail_setup() {
  echo "$lane: FAIL setup: $*"
  exit 1
}

# Package lists are refreshed at most once per run, and only when needed.
apt_updated=0
apt_update() {
  [ $apt_updated -eq 1 ] && return 0
  apt_updated=1
  log "apt-get update"
  apt-get -o DPkg::Lock::Timeout=300 update -q >"$work/apt-update.log" 2>&1 ||
    { cat "$work/apt-update.log" >&2; return 1; }
}

# install_host_packages PKG... : install what the lane's host side lacks.
install_host_packages() {
  [ $# -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || fail_setup "missing $* and not root to install them"
  apt_update || fail_setup "apt-get update failed"
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
    "$@" >"$work/apt-install.log" 2>&1 || { tail -20 "$work/apt-install.log"; fail_setup "apt-get install $*"; }
}

deb_of() { ls "$cache/${1}_"*.deb 2>/dev/null | head -1; }

# kernel_package: sets kpkg and kver to Debian's current linux-image-amd64.
kernel_package() {
  local q='/Depends: linux-image-[0-9]/ { print $2; exit }'
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk "$q")
  if [ -z "$kpkg" ]; then
    apt_update || fail_setup "apt-get update failed"
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk "$q")
  fi
  [ -n "$kpkg" ] || fail_setup "cannot find the kernel package (apt-cache depends linux-image-amd64)"
  kver=${kpkg#linux-image-}
}

# fetch_debs PKG... : every package's .deb in the cache, downloading what is
# missing; stale package lists get one update and a second try.
fetch_debs() {
  local fetch=() p
  for p in "$@"; do [ -n "$(deb_of "$p")" ] || fetch+=("$p"); done
  if [ ${#fetch[@]} -gt 0 ]; then
    log "apt-get download ${fetch[*]}"
    if ! (cd "$cache" && apt-get download "${fetch[@]}" >"$work/download.log" 2>&1); then
      apt_update || fail_setup "apt-get update failed"
      (cd "$cache" && apt-get download "${fetch[@]}" >"$work/download.log" 2>&1) ||
        { tail -20 "$work/download.log"; fail_setup "apt-get download ${fetch[*]}"; }
    fi
  fi
  for p in "$@"; do [ -n "$(deb_of "$p")" ] || fail_setup "package $p missing from $cache"; done
}

# unpack_debs DIR PKG... : dpkg -x each package into DIR.
unpack_debs() {
  local dir=$1 p
  shift
  for p in "$@"; do dpkg -x "$(deb_of "$p")" "$dir" || fail_setup "dpkg -x $p"; done
}

# unpack_kernel KROOT MODULE_GLOB... : the kernel image, module metadata and
# only the module folders given (a few MB of ~400), then depmod; sets vmlinuz.
unpack_kernel() {
  local kroot=$1 globs=() g
  shift
  for g in "$@"; do globs+=("./lib/modules/*/kernel/$g"); done
  dpkg-deb --fsys-tarfile "$(deb_of "$kpkg")" | tar -x -C "$kroot" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/modules.builtin' './lib/modules/*/modules.order' \
    './lib/modules/*/modules.builtin.modinfo' "${globs[@]}" || fail_setup "unpacking $kpkg"
  depmod -b "$kroot" "$kver" || fail_setup "depmod -b for $kver"
  vmlinuz=$kroot/boot/vmlinuz-$kver
  [ -f "$vmlinuz" ] || fail_setup "no $vmlinuz in $kpkg"
}

# install_modules KROOT ROOTFS MODULE... : the modules and their dependencies
# copied into ROOTFS, each once, listed in load order in ROOTFS/etc/ms-modules.
install_modules() {
  local kroot=$1 rootfs=$2 m path rel
  shift 2
  : >"$rootfs/etc/ms-modules"
  for m in "$@"; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>>"$work/modprobe.log" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | while read -r path; do
    rel=${path#"$kroot"}
    mkdir -p "$rootfs$(dirname "$rel")"
    cp "$path" "$rootfs$rel"
    echo "$rel" >>"$rootfs/etc/ms-modules"
  done
}

# busybox_tree BUSYBOX DIR : busybox in DIR/bin with a link per applet,
# leaving files already there alone.
busybox_tree() {
  local a
  cp "$1" "$2/bin/busybox" || fail_setup "no busybox in busybox-static"
  for a in $("$2/bin/busybox" --list); do
    [ -e "$2/bin/$a" ] || ln -s busybox "$2/bin/$a"
  done
}

# Shared libraries by ELF NEEDED, searched in the lane's `libdirs` in order;
# copy_deps FILE DEST copies each one not yet copied (or already inside
# `rootfs`) into DEST, failing loudly if one is missing.
declare -A lib_copied=()
find_lib() {
  local d
  for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  return 1
}
copy_deps() {
  local f=$1 dest=$2 n p
  for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${lib_copied[$n]:-}" ] && continue
    lib_copied[$n]=1
    p=$(find_lib "$n") || fail_setup "shared library $n (needed by $(basename "$f")) not found"
    case $p in "$rootfs"/*) ;; *) cp -L "$p" "$dest/$n" ;; esac
    copy_deps "$p" "$dest"
  done
}
