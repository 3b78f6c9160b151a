#!/bin/bash
# `migstream inspect` and `migstream replay` on libxc streams, libxl streams
# and `xl save` files made by migstream-xcgen: the file goes through the
# real pipeline (tcp with 2 channels and a key, fd) and the receiver must
# rebuild it byte for byte; corrupt and truncated files are refused with
# the place named. Every step runs under `timeout`.
# usage: test_replay_xl.sh PATH/TO/migstream PATH/TO/migstream-xcgen
set -u
M=${1:?usage: test_replay_xl.sh MIGSTREAM XCGEN}
G=${2:?usage: test_replay_xl.sh MIGSTREAM XCGEN}
T=$(mktemp -d /tmp/ms-xl-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
step() { printf '%-68s' "$1"; }
ok() { echo ok; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# The first value of a JSON key (nested objects repeat keys such as "pages").
field() { grep -o "\"$1\":\"\{0,1\}[^\",}]*" | head -1 | sed 's/^[^:]*://; s/"//g'; }

"$G" -t pv -s 8M -r 3 -a -X -o "$T/pv.xl" || { echo "xcgen failed"; exit 1; }
"$G" -t hvm -s 8M -r 3 -X -o "$T/hvm.xl" || exit 1
"$G" -t pv -s 4M -r 4 -V 2 -o "$T/pv.xc" || exit 1
# The libxl stream of a save file: what follows xl's header and optional data.
opt=$("$M" inspect --json "$T/hvm.xl" | field optional_data_len)
tail -c +$((48 + opt + 1)) "$T/hvm.xl" >"$T/hvm.libxl"
"$M" keygen "$T/key" >/dev/null 2>&1 || head -c 32 /dev/urandom >"$T/key"

# ---- inspect -------------------------------------------------------------------
step "inspect: xl header, libxl records and the libxc stream"
out=$(timeout 30 "$M" inspect "$T/hvm.xl")
echo "$out" | grep -q "xl header: mandatory flags 0x3 (stream v2, JSON config)" &&
    echo "$out" | grep -q "EMULATOR_CONTEXT  *1 records" && echo "$out" | grep -q "LIBXC_CONTEXT  *1 records" &&
    echo "$out" | grep -q "embedded at offset [0-9]*: libxc stream v3, x86 HVM" && ok || bad "$out"

for k in pv.xl:xl hvm.xl:xl hvm.libxl:libxl pv.xc:libxc; do
    f=${k%%:*} kind=${k##*:}
    step "inspect --json $f: format $kind, valid, whole file"
    j=$(timeout 30 "$M" inspect --json "$T/$f")
    [ "$(echo "$j" | field format)" = "$kind" ] && [ "$(echo "$j" | field valid)" = true ] &&
        [ "$(echo "$j" | field trailing_bytes)" = 0 ] && ok || bad "$j"
done

# ---- replay: the file rebuilt byte for byte ---------------------------------------
check_replay() { # NAME FILE KIND ARGS...
    local name=$1 f=$2 kind=$3
    shift 3
    step "replay $name"
    local j rc size pages
    j=$(timeout 120 "$M" replay "$@" --json -q 2>"$T/err")
    rc=$?
    size=$(stat -c %s "$f")
    pages=$("$M" inspect --json "$f" | field data_pages)
    if [ $rc = 0 ] && echo "$j" | grep -q '"identical":true' &&
        [ "$(echo "$j" | field kind)" = "$kind" ] &&
        [ "$(echo "$j" | field source_digest)" = "$(echo "$j" | field receiver_digest)" ] &&
        [ "$(echo "$j" | field stream_bytes)" = "$size" ] && [ "$(echo "$j" | field rebuilt_bytes)" = "$size" ] &&
        [ "$(echo "$j" | field pages)" = "$pages" ] && [ "$(echo "$j" | field rounds)" -ge 3 ]; then
        ok
    else
        bad "rc=$rc $(head -c 600 <<<"$j") $(cat "$T/err")"
    fi
}
check_replay "xl PV: tcp, 2 channels, key" "$T/pv.xl" xl --image "$T/pv.xl" --channels 2 --key "$T/key"
check_replay "xl HVM: tcp, 2 channels, key" "$T/hvm.xl" xl --image "$T/hvm.xl" --channels 2 --key "$T/key"
check_replay "xl HVM: fd" "$T/hvm.xl" xl --image "$T/hvm.xl" --transport fd
check_replay "xl PV: fd, 2 channels, zstd" "$T/pv.xl" xl --image "$T/pv.xl" --transport fd --channels 2 --chain zero,zstd:1
check_replay "libxl stream: tcp, 2 channels, key" "$T/hvm.libxl" libxl --image "$T/hvm.libxl" --channels 2 --key "$T/key"
check_replay "libxc v2 stream via --stream (a MIGSTREAM_RECORD capture)" "$T/pv.xc" libxc --stream "$T/pv.xc" --channels 2 --key "$T/key"
check_replay "libxc stream: fd, --format libxc" "$T/pv.xc" libxc --image "$T/pv.xc" --transport fd --format libxc

step "replay: pages travel compressed, text report says byte-identical"
out=$(timeout 60 "$M" replay --image "$T/hvm.xl" -q)
echo "$out" | grep -q "^replay: \`xl save\` file .*4 rounds found in the stream; [0-9]* libxc and 4 libxl records" &&
    echo "$out" | grep -q "^receiver file digest [0-9a-f]*: byte-identical" &&
    awk '/^throughput/ { exit !($NF > 2) }' <<<"$out" && ok || bad "$out"

step "replay: bytes after the final END are reported, not sent"
cat "$T/pv.xc" >"$T/trail.xc"
printf 'libxl records would follow here' >>"$T/trail.xc"
j=$(timeout 60 "$M" replay --image "$T/trail.xc" --json -q)
[ $? = 0 ] && echo "$j" | grep -q '"identical":true' && [ "$(echo "$j" | field trailing_bytes)" = 31 ] &&
    [ "$(echo "$j" | field stream_bytes)" = "$(stat -c %s "$T/pv.xc")" ] && ok || bad "$j"

step "replay --format image: the old opaque-image mode"
j=$(timeout 60 "$M" replay --image "$T/pv.xl" --format image --json -q)
[ $? = 0 ] && [ "$(echo "$j" | field kind)" = image ] && echo "$j" | grep -q '"identical":true' && ok || bad "$j"

step "replay: an image starting with eight 0xff bytes stays an image"
{ printf '\377\377\377\377\377\377\377\377'; head -c 40952 /dev/urandom; } >"$T/ff.img"
j=$(timeout 60 "$M" replay --image "$T/ff.img" --json -q)
[ $? = 0 ] && [ "$(echo "$j" | field kind)" = image ] && echo "$j" | grep -q '"identical":true' && ok || bad "$j"

# ---- refusals ---------------------------------------------------------------------
step "replay --format libxc on a plain image: usage error"
head -c 65536 /dev/urandom >"$T/img"
timeout 10 "$M" replay --image "$T/img" --format libxc -q >/dev/null 2>"$T/err"; rc=$?
[ $rc = 2 ] && grep -q "is not a libxc stream, libxl stream or \`xl save\` file" "$T/err" && ok || bad "rc=$rc $(cat "$T/err")"

step "replay: --rounds on an xl save file, bad --format: usage errors"
timeout 10 "$M" replay --image "$T/pv.xl" --rounds 3 -q >/dev/null 2>"$T/err"; r1=$?
timeout 10 "$M" replay --image "$T/pv.xl" --format xl -q >/dev/null 2>&1; r2=$?
[ $r1 = 2 ] && [ $r2 = 2 ] && grep -q "do not apply to a \`xl save\` file" "$T/err" && ok || bad "$r1 $r2 $(cat "$T/err")"

step "replay and inspect refuse a corrupt libxl header, naming it"
cp "$T/pv.xl" "$T/bad.xl"
printf 'X' | dd of="$T/bad.xl" bs=1 seek=$((48 + opt + 3)) conv=notrunc 2>/dev/null
timeout 30 "$M" replay --image "$T/bad.xl" -q >/dev/null 2>"$T/err"; r1=$?
timeout 30 "$M" inspect "$T/bad.xl" >/dev/null 2>"$T/err2"; r2=$?
[ $r1 = 1 ] && [ $r2 = 1 ] && grep -q "libxl header at offset $((48 + opt)): bad ident" "$T/err" &&
    grep -q "libxl header at offset $((48 + opt)): bad ident" "$T/err2" && ok || bad "$r1 $r2 $(cat "$T/err" "$T/err2")"

step "replay refuses a truncated xl save file"
head -c 3000000 "$T/pv.xl" >"$T/short.xl"
timeout 30 "$M" replay --image "$T/short.xl" --channels 2 -q >/dev/null 2>"$T/err"; rc=$?
[ $rc = 1 ] && grep -q "libxc stream at offset [0-9]*: .*stream ends after" "$T/err" && ok || bad "rc=$rc $(cat "$T/err")"

if [ $fails -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
