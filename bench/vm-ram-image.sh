#!/bin/bash
# The RAM of a real VM for the dedup and auto benchmarks, and what QEMU's own
# migration sends for the very same guest state.
#
#   bench/vm-ram-image.sh [--out FILE] [--mem MIB] [--data-mib N] [--no-qemu-migrate]
#                         [--qemu-json FILE] [--keep]
#
# Boots a small Linux guest under qemu-system-x86_64 (TCG): the Debian kernel
# and busybox-static from the package cache the VM lanes use
# (/var/cache/migstream-vm, $MS_VM_CACHE), an initramfs that carries real
# files from this host (/usr/lib/python3.11 and up to --data-mib MiB of the
# shared libraries in /usr/lib/x86_64-linux-gnu, by name). The guest's workload copies those files into a
# tmpfs, reads every one (md5sum) and writes a gzip'ed tar of part of them
# into the tmpfs, then reports on the serial console. The host then, over QMP:
#   1. stops the guest (so the image and the migration see one state),
#   2. saves its RAM with `pmemsave` (physical 0 .. --mem MiB) to --out,
#   3. unless --no-qemu-migrate: migrates the stopped guest to a second QEMU
#      started with -incoming on 127.0.0.1, multifd on (2 channels), multifd
#      compression zstd level 1, through a byte-counting TCP relay, and
#      writes QEMU's query-migrate result plus the relay's count of bytes
#      actually carried (both directions) to --qemu-json.
# Prints the image's page statistics (zero pages, non-zero pages that are an
# exact copy of another page) at the end.
# Default out: /var/tmp/migstream-vm-ram.img (+ .qemu.json). Needs root only
# to install qemu-system-x86 when it is missing.
set -uo pipefail
main() {
top=$(cd "$(dirname "$0")/.." && pwd)
out=/var/tmp/migstream-vm-ram.img mem=512 data_mib=64 migrate=1 qjson= keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift ;;
    --mem) mem=$2; shift ;;
    --data-mib) data_mib=$2; shift ;;
    --no-qemu-migrate) migrate=0 ;;
    --qemu-json) qjson=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "vm-ram-image: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$qjson" ] || qjson=${out%.img}.qemu.json
cache=${MS_VM_CACHE:-/var/cache/migstream-vm}
work=$(mktemp -d /tmp/vm-ram-image.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ $keep -eq 1 ] && echo "vm-ram-image: work dir kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
die() { echo "vm-ram-image: FAIL: $*" >&2; exit 1; }
log() { echo "vm-ram-image: $*" >&2; }

if ! command -v qemu-system-x86_64 >/dev/null; then
  [ "$(id -u)" -eq 0 ] || die "qemu-system-x86_64 missing and not root to install it"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 >"$work/apt.log" 2>&1 ||
    die "apt-get install qemu-system-x86 (see $work/apt.log)"
fi
command -v cpio >/dev/null || die "cpio missing"
command -v python3 >/dev/null || die "python3 missing (QMP client and relay)"

# ---- kernel and busybox from the VM lanes' cache -----------------------------
deb_of() { ls "$cache/${1}_"*.deb 2>/dev/null | head -1; }
kdeb=$(ls "$cache"/linux-image-[0-9]*-amd64_*.deb 2>/dev/null | sort -V | tail -1)
if [ -z "$kdeb" ] || [ -z "$(deb_of busybox-static)" ]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$kpkg" ] || die "no kernel package in $cache and apt-cache knows none"
  mkdir -p "$cache"
  (cd "$cache" && apt-get download "$kpkg" busybox-static >"$work/download.log" 2>&1) || die "apt-get download $kpkg busybox-static"
  kdeb=$(ls "$cache"/linux-image-[0-9]*-amd64_*.deb | sort -V | tail -1)
fi
mkdir -p "$work/k" "$work/bb" "$work/root"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$work/k" --wildcards './boot/vmlinuz-*' || die "unpacking $kdeb"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* | head -1)
dpkg -x "$(deb_of busybox-static)" "$work/bb" || die "dpkg -x busybox-static"

# ---- initramfs: busybox, the workload, real files ---------------------------
r=$work/root
mkdir -p "$r"/{bin,proc,sys,dev,tmp,mnt,data}
cp "$work/bb/bin/busybox" "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
[ -d /usr/lib/python3.11 ] && cp -a /usr/lib/python3.11 "$r/data/python3.11"
mkdir -p "$r/data/lib"
# The first data_mib MiB of shared libraries, in name order, so the guest's
# content is the same from run to run on one host.
find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' | sort |
  awk -v lim=$((data_mib * 1048576)) '{ cmd = "stat -c %s \"" $0 "\""; cmd | getline s; close(cmd);
        if (tot + s > lim) next; tot += s; print }' |
  while read -r f; do cp "$f" "$r/data/lib/"; done
log "initramfs data: $(du -sm "$r/data" | cut -f1) MiB of real files"
cat >"$r/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=80% work /mnt
echo "MS-VM: workload start"
cp -a /data /mnt/copy
find /mnt/copy -type f | xargs md5sum >/mnt/md5.txt
tar -cf - -C /data python3.11 | gzip -1 >/mnt/python.tar.gz
echo "MS-VM: $(du -sm /mnt | cut -f1) MiB in tmpfs; $(grep -E 'MemFree|^Cached|Shmem:' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
echo "MS-VM: WORKLOAD-DONE"
while :; do sleep 3600; done
EOF
chmod +x "$r/init"
(cd "$r" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz") || die "building the initramfs"

# ---- QMP client and byte-counting relay ---------------------------------------
cat >"$work/qmp.py" <<'EOF'
import json, socket, sys, time
def connect(path):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile('rw')
    json.loads(f.readline()); cmd(f, 'qmp_capabilities'); return f
def cmd(f, name, **args):
    f.write(json.dumps({'execute': name, 'arguments': args}) + '\n'); f.flush()
    while True:
        m = json.loads(f.readline())
        if 'return' in m: return m['return']
        if 'error' in m: sys.exit('%s: %s' % (name, m['error']))
op = sys.argv[1]
if op == 'save':   # save SOCK FILE BYTES
    f = connect(sys.argv[2]); cmd(f, 'stop')
    cmd(f, 'pmemsave', val=0, size=int(sys.argv[4]), filename=sys.argv[3])
elif op == 'migrate':  # migrate SRC DST PORT_DST PORT_RELAY
    src, dst = connect(sys.argv[2]), connect(sys.argv[3])
    for f in (src, dst):
        cmd(f, 'migrate-set-capabilities', capabilities=[{'capability': 'multifd', 'state': True}])
        cmd(f, 'migrate-set-parameters', **{'multifd-channels': 2, 'multifd-compression': 'zstd',
                                            'multifd-zstd-level': 1})
    cmd(dst, 'migrate-incoming', uri='tcp:127.0.0.1:' + sys.argv[4])
    cmd(src, 'migrate', uri='tcp:127.0.0.1:' + sys.argv[5])
    while True:
        st = cmd(src, 'query-migrate')
        if st.get('status') in ('completed', 'failed', 'cancelled'): break
        time.sleep(0.2)
    print(json.dumps({'source': st, 'parameters': cmd(src, 'query-migrate-parameters')}))
EOF
cat >"$work/relay.py" <<'EOF'
# relay.py LISTEN_PORT TARGET_PORT COUNT_FILE: forwards every connection,
# counts the bytes carried each way, rewrites COUNT_FILE after each change.
import socket, sys, threading, json
lp, tp, cf = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tot = {'to_destination': 0, 'to_source': 0, 'connections': 0}
lock = threading.Lock()
def pump(a, b, key):
    while True:
        d = a.recv(1 << 20)
        if not d: break
        b.sendall(d)
        with lock: tot[key] += len(d)
    with lock:
        open(cf, 'w').write(json.dumps(tot))
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(('127.0.0.1', lp)); ls.listen(16)
while True:
    c, _ = ls.accept(); t = socket.create_connection(('127.0.0.1', tp))
    with lock: tot['connections'] += 1
    threading.Thread(target=pump, args=(c, t, 'to_destination'), daemon=True).start()
    threading.Thread(target=pump, args=(t, c, 'to_source'), daemon=True).start()
EOF

# ---- boot, run the workload, save RAM ----------------------------------------
qemu_args=(-machine pc -accel tcg -m "$mem" -smp 1 -nodefaults -vga none -display none
           -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1")
qemu-system-x86_64 "${qemu_args[@]}" -serial "file:$work/src.log" \
  -qmp "unix:$work/src.qmp,server=on,wait=off" -no-reboot &
pids+=($!)
log "booting the guest ($mem MiB, TCG)"
t0=$(date +%s)
until grep -q "MS-VM: WORKLOAD-DONE" "$work/src.log" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || die "guest QEMU exited (log: $(tail -5 "$work/src.log"))"
  [ $(($(date +%s) - t0)) -lt 900 ] || die "workload not done within 900 s"
  sleep 2
done
grep "MS-VM:" "$work/src.log" | tr -d '\r' >&2
log "workload done after $(($(date +%s) - t0)) s; stopping the guest and saving its RAM"
python3 "$work/qmp.py" save "$work/src.qmp" "$out" $((mem * 1048576)) || die "QMP stop/pmemsave"
log "saved $(stat -c %s "$out") bytes to $out"

if [ $migrate -eq 1 ]; then
  dport=$((40000 + RANDOM % 10000)) rport=$((50000 + RANDOM % 10000))
  qemu-system-x86_64 "${qemu_args[@]}" -serial "file:$work/dst.log" \
    -qmp "unix:$work/dst.qmp,server=on,wait=off" -incoming defer &
  pids+=($!)
  python3 "$work/relay.py" "$rport" "$dport" "$work/relay.json" &
  pids+=($!)
  sleep 2
  log "QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') multifd zstd:1 migration of the stopped guest"
  python3 "$work/qmp.py" migrate "$work/src.qmp" "$work/dst.qmp" "$dport" "$rport" >"$work/mig.json" ||
    die "QMP migration"
  # Both QEMUs gone, every relayed connection is closed and counted.
  kill "${pids[0]}" "${pids[1]}" 2>/dev/null
  wait "${pids[0]}" "${pids[1]}" 2>/dev/null
  for _ in $(seq 50); do [ -s "$work/relay.json" ] && break; sleep 0.2; done
  sleep 1
  python3 - "$work/mig.json" "$work/relay.json" "$qjson" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2]))
m['relay'] = r
json.dump(m, open(sys.argv[3], 'w'), indent=1)
s = m['source']; ram = s.get('ram', {})
print('qemu: status %s, total-time %s ms, ram.total %s, ram.transferred %s, ram.duplicate %s pages, '
      'ram.normal %s pages, multifd-bytes %s' % (s.get('status'), s.get('total-time'), ram.get('total'),
      ram.get('transferred'), ram.get('duplicate'), ram.get('normal'), ram.get('multifd-bytes')))
print('qemu: relay carried %d bytes to the destination, %d back, over %d connections'
      % (r['to_destination'], r['to_source'], r['connections']))
EOF
fi

# ---- what the image holds --------------------------------------------------------
python3 - "$out" <<'EOF'
import hashlib, sys
zero = bytes(4096); seen = {}; n = z = dup = 0
with open(sys.argv[1], 'rb') as f:
    while True:
        p = f.read(4096)
        if len(p) < 4096: break
        n += 1
        if p == zero: z += 1; continue
        h = hashlib.blake2b(p, digest_size=16).digest()
        if h in seen: dup += 1
        else: seen[h] = 1
nz = n - z
print('image: %d pages, %d zero (%.1f%%), %d non-zero, of which %d are copies of another page (%.1f%%), '
      '%d distinct' % (n, z, 100.0 * z / n, nz, dup, 100.0 * dup / max(nz, 1), len(seen)))
EOF
}
main "$@"
