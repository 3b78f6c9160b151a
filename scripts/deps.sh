#!/bin/bash
# Install the Debian 12 packages migstream builds, tests and demonstrates with.
# Usage: scripts/deps.sh          (as root, or with sudo available)
set -euo pipefail

PKGS=(
  # build
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  liblz4-dev libzstd-dev libsodium-dev libxxhash-dev libcunit1-dev
  libibverbs-dev librdmacm-dev libxen-dev
  # tests, workloads, links and plots
  stress-ng redis-server redis-tools iproute2 gnuplot-nox xen-utils-4.17 python3
  # VM lanes (Soft-RoCE, Xen under QEMU): kernels and packages are fetched by the lanes
  qemu-system-x86 cpio kmod busybox-static
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: run as root (need apt-get)" >&2; exit 1; }
  SUDO=sudo
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Installing redis-server starts a system service we do not use; policy-rc.d
# keeps package scripts from starting daemons on this machine.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
