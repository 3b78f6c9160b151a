#!/bin/bash
# End-to-end checks of `migstream recv | replay | inspect` as processes:
# round trips with verified digests, records, keys, and faults where a real
# process is killed. Every step runs under `timeout`: a hang is a failure.
# usage: test_cli.sh PATH/TO/migstream [PATH/TO/migstream-dirtier]
set -u
M=${1:?usage: test_cli.sh MIGSTREAM [DIRTIER]}
DIRTIER=${2:-}
T=$(mktemp -d /tmp/ms-cli.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$T"' EXIT
fails=0
step() { printf '%-64s' "$1"; }
ok() { echo ok; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -1; }

# Start `recv` in the background; sets RPID and PORT.
start_recv() {
    # Truncate first: the child truncates only when it starts, and reading a
    # previous step's "listening on" line would send us to a dead port.
    : >"$T/recv.out"; : >"$T/recv.err"
    "$M" recv --listen 127.0.0.1:0 --quiet "$@" >"$T/recv.out" 2>"$T/recv.err" &
    RPID=$!
    PORT=
    for _ in $(seq 400); do
        PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/recv.err")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    return 1
}

# Wait up to 30 s for recv to end; a recv still running then is killed, so a
# failed step can never hang the suite. Returns recv's exit status.
reap_recv() {
    timeout 30 tail --pid=$RPID -f /dev/null
    kill -0 $RPID 2>/dev/null && { echo "recv still running after 30 s: killed" >&2; kill -9 $RPID; }
    wait $RPID
}

# ---- usage ------------------------------------------------------------------
for c in recv replay inspect; do
    step "$c --help"
    out=$(timeout 10 "$M" $c --help) && echo "$out" | grep -q "^usage: migstream $c" && ok || bad "$c --help"
done
step "bad usage exits 2"
timeout 10 "$M" replay --sample 1M --rounds 0 >/dev/null 2>&1; r1=$?
timeout 10 "$M" replay >/dev/null 2>&1; r2=$?
timeout 10 "$M" recv --listen 127.0.0.1:0 >/dev/null 2>&1; r3=$?
timeout 10 "$M" replay --sample 1M --chain zero,bogus >/dev/null 2>&1; r4=$?
[ $r1 = 2 ] && [ $r2 = 2 ] && [ $r3 = 2 ] && [ $r4 = 2 ] && ok || bad "exit codes $r1 $r2 $r3 $r4"

step "--max-rounds must be a whole number (migrate and sim alike)"
e1=$(timeout 10 "$M" sim --model uniform,size=64M,rate=1000 --max-rounds 2.5 2>&1 >/dev/null); r1=$?
e2=$(timeout 10 "$M" migrate --max-rounds -1 -- true 2>&1 >/dev/null); r2=$?
[ $r1 = 2 ] && [ $r2 = 2 ] && echo "$e1" | grep -q "'2.5' is not a whole number" &&
    echo "$e2" | grep -q "'-1' is not a whole number" && ok || bad "exit $r1 $r2: $e1 / $e2"

# ---- local round trips --------------------------------------------------------
for t in tcp fd; do
    for ch in 1 3 8; do
        step "replay $t, $ch channels, 3 rounds: identical"
        out=$(timeout 60 "$M" replay --sample 8M --rounds 3 --mutate 0.1 --channels $ch --transport $t --workers 2 --json)
        rc=$?
        [ $rc = 0 ] && echo "$out" | grep -q '"identical":true' &&
            [ "$(echo "$out" | json_field source_digest)" = "$(echo "$out" | json_field receiver_digest)" ] &&
            ok || bad "rc=$rc $out"
    done
done

step "replay of an image file, sealed, bandwidth cap honoured"
head -c 6000000 /dev/urandom >"$T/img"
dd if=/dev/zero bs=1M count=2 >>"$T/img" 2>/dev/null
"$M" keygen "$T/key" >/dev/null
out=$(timeout 60 "$M" replay --image "$T/img" --rounds 2 --key "$T/key" --channels 2 --max-bandwidth 20000000 --json)
rc=$?
secs=$(echo "$out" | json_field wall_s)
wire=$(echo "$out" | sed -n 's/.*"sender":{[^}]*"total":{[^}]*"wire_bytes":\([0-9]*\).*/\1/p')
# The cap is a ceiling: the transfer may not be faster than wire / rate.
[ $rc = 0 ] && echo "$out" | grep -q '"identical":true' && echo "$out" | grep -q '"sealed":true' &&
    awk -v s="$secs" -v w="$wire" 'BEGIN { exit !(w > 6000000 && s >= 0.9 * w / 20000000) }' && ok ||
    bad "rc=$rc secs=$secs wire=$wire"

step "replay --chain zero,auto --json reports auto's choices"
out=$(timeout 60 "$M" replay --sample 16M --chain zero,auto --json)
rc=$?
autojs=$(echo "$out" | tr -d '\n' | grep -o '"auto":{"choices":.*"current":"[^"]*"}')
frames=$(echo "$autojs" | grep -o '"frames":[0-9]*' | cut -d: -f2 | awk '{ n += $1 } END { print n + 0 }')
inb=$(echo "$autojs" | grep -o '"in_bytes":[0-9]*' | cut -d: -f2 | awk '{ n += $1 } END { print n + 0 }')
plain=$(timeout 60 "$M" replay --sample 1M --chain zero,lz4 --json)
[ $rc = 0 ] && echo "$out" | grep -q '"identical":true' && [ "$frames" -gt 0 ] && [ "$inb" -gt 0 ] &&
    ! echo "$plain" | grep -q '"auto":' && ok || bad "rc=$rc frames=$frames in_bytes=$inb auto=${autojs:0:200}"

step "replay --dedup-cache / --delta-cache: sizes used, impossible ones refused"
out=$(timeout 60 "$M" replay --sample 16M --rounds 2 --chain zero,dedup,delta,lz4 --dedup-cache 256M \
      --delta-cache 8M --channels 2 --json)
rc=$?
err=$("$M" replay --sample 1M --dedup-cache 32G 2>&1 >/dev/null)
rc2=$?
[ $rc = 0 ] && echo "$out" | grep -q '"identical":true' && [ $rc2 = 2 ] &&
    echo "$err" | grep -q "dedup-cache '32G': expected a store size from 1M to 16G" && ok ||
    bad "rc=$rc rc2=$rc2 err=$err"

# ---- recv + replay --to, record, inspect, replay of the record -----------------
step "recv <- replay --to with a key: digests agree"
start_recv --key "$T/key" --out "$T/out.img" --json || bad "recv did not start"
out=$(timeout 60 "$M" replay --sample 16M --rounds 3 --channels 4 --key "$T/key" --to 127.0.0.1:$PORT --record "$T/rec" --json)
rc=$?
reap_recv; rrc=$?
src=$(echo "$out" | json_field source_digest)
cp "$T/recv.out" "$T/recv.json"
dst=$(json_field image_digest <"$T/recv.json")
[ $rc = 0 ] && [ $rrc = 0 ] && [ -n "$src" ] && [ "$src" = "$dst" ] && echo "$out" | grep -q '"receiver_acknowledged_stream":true' &&
    [ "$(stat -c %s "$T/out.img")" = $((16 * 1024 * 1024)) ] && ok || bad "rc=$rc rrc=$rrc src=$src dst=$dst"

step "recv --out writes the image byte for byte"
start_recv --out "$T/copy.img" || bad "recv did not start"
timeout 60 "$M" replay --image "$T/img" --channels 3 --to 127.0.0.1:$PORT --quiet >/dev/null 2>&1
rc=$?
reap_recv; rrc=$?
size=$(stat -c %s "$T/img")
pages=$(( (size + 4095) / 4096 ))
# The last page is zero-padded: the copy is whole pages, the image's bytes then zeros.
[ $rc = 0 ] && [ $rrc = 0 ] && [ "$(stat -c %s "$T/copy.img")" = $((pages * 4096)) ] &&
    cmp -s -n "$size" "$T/img" "$T/copy.img" &&
    [ -z "$(tail -c +$((size + 1)) "$T/copy.img" | tr -d '\0' | head -c 1)" ] && ok || bad "rc=$rc rrc=$rrc"

step "inspect the sealed record"
out=$(timeout 30 "$M" inspect --key "$T/key" --json "$T/rec")
rc=$?
[ $rc = 0 ] && echo "$out" | grep -q '"complete":true' && echo "$out" | grep -q '"verified":true' &&
    [ "$(echo "$out" | json_field image_digest)" = "$src" ] && ok || bad "rc=$rc $out"
step "inspect --frames lists every frame"
n=$(timeout 30 "$M" inspect --frames --no-verify "$T/rec" | grep -cE '^ +[0-9]+ +[0-9]+ (PAGES|ROUND_END|END)')
frames=$(timeout 30 "$M" inspect --json --no-verify "$T/rec" | sed -n 's/.*"frames":\([0-9]*\),"frame_bytes".*/\1/p')
[ "$n" -gt 10 ] && [ "$n" = "$frames" ] && ok || bad "listed $n, total $frames"
step "inspect without the key: headers only, says why"
out=$(timeout 30 "$M" inspect "$T/rec")
[ $? = 0 ] && echo "$out" | grep -q "give --key" && ok || bad "$out"
step "replay --stream of the record: identical, other chain"
out=$(timeout 60 "$M" replay --stream "$T/rec" --key "$T/key" --chain zero,zstd:1 --channels 2 --json)
rc=$?
[ $rc = 0 ] && echo "$out" | grep -q '"identical":true' && [ "$(echo "$out" | json_field source_digest)" = "$src" ] &&
    ok || bad "rc=$rc $out"

step "--json output parses as JSON (replay, recv, inspect)"
jok=1
for f in "$T/recv.json"; do python3 -m json.tool "$f" >/dev/null 2>&1 || jok=0; done
timeout 60 "$M" replay --sample 2M --rounds 2 --json | python3 -m json.tool >/dev/null 2>&1 || jok=0
timeout 30 "$M" inspect --json --frames --key "$T/key" "$T/rec" | python3 -m json.tool >/dev/null 2>&1 || jok=0
[ $jok = 1 ] && ok || bad "invalid JSON"

# ---- corrupt and truncated records ------------------------------------------------
step "inspect: a flipped byte is refused (sealed: integrity, exit 5)"
cp "$T/rec" "$T/rec.bad"
printf '\x55' | dd of="$T/rec.bad" bs=1 seek=300000 conv=notrunc 2>/dev/null
timeout 30 "$M" inspect --key "$T/key" "$T/rec.bad" >"$T/bad.out" 2>&1
rc=$?
[ $rc = 5 ] && ok || bad "exit $rc: $(tail -3 "$T/bad.out")"
step "inspect: a truncated record is refused (exit 1)"
head -c 1000000 "$T/rec" >"$T/rec.cut"
timeout 30 "$M" inspect --key "$T/key" "$T/rec.cut" >"$T/cut.out" 2>&1
rc=$?
[ $rc = 1 ] && grep -qi "without END\|inside frame" "$T/cut.out" && ok || bad "exit $rc: $(cat "$T/cut.out")"
step "inspect: a hello of another version is refused (exit 4)"
cp "$T/rec" "$T/rec.v2"
printf '\x03' | dd of="$T/rec.v2" bs=1 seek=8 conv=notrunc 2>/dev/null
timeout 30 "$M" inspect "$T/rec.v2" >"$T/v2.out" 2>&1
rc=$?
[ $rc = 4 ] && grep -q "version 3" "$T/v2.out" && ok || bad "exit $rc: $(cat "$T/v2.out")"

# ---- keys -------------------------------------------------------------------------
step "wrong key: refused (exit 5), the listener then serves the right one"
"$M" keygen "$T/key2" >/dev/null
start_recv --key "$T/key" --discard --json || bad "recv did not start"
timeout 30 "$M" replay --sample 1M --key "$T/key2" --to 127.0.0.1:$PORT --quiet >/dev/null 2>"$T/wrong.err"
wrc=$?
timeout 30 "$M" replay --sample 1M --key "$T/key" --to 127.0.0.1:$PORT --quiet >/dev/null 2>&1
grc=$?
reap_recv; rrc=$?
[ $wrc = 5 ] && [ $grc = 0 ] && [ $rrc = 0 ] && grep -q '"result":"ok"' "$T/recv.out" &&
    grep -q "dropped connection" "$T/recv.err" && ok || bad "wrong=$wrc good=$grc recv=$rrc"
step "key on one side only: refused on both"
start_recv --key "$T/key" --discard || bad "recv did not start"
timeout 30 "$M" replay --sample 1M --to 127.0.0.1:$PORT --quiet >/dev/null 2>&1
src_rc=$?
kill $RPID 2>/dev/null; wait $RPID 2>/dev/null
[ $src_rc != 0 ] && ok || bad "unsealed sender accepted by a keyed receiver"
step "listener reachable from other hosts needs --key or --insecure"
timeout 10 "$M" recv --listen 0.0.0.0:0 --discard >/dev/null 2>"$T/open.err"
rc=$?
[ $rc = 5 ] && grep -q -- "--insecure" "$T/open.err" && ok || bad "exit $rc"

# ---- killed processes ---------------------------------------------------------------
step "receiver killed mid-stream: sender fails fast, non-zero"
start_recv --discard --timeout 2s || bad "recv did not start"
( sleep 1; kill -9 $RPID ) &
t0=$(date +%s.%N)
timeout 60 "$M" replay --sample 64M --rounds 4 --channels 2 --max-bandwidth 4M --timeout 2s \
    --to 127.0.0.1:$PORT --quiet --json >"$T/killed.out" 2>/dev/null
rc=$?
t1=$(date +%s.%N)
wait 2>/dev/null
[ $rc != 0 ] && [ $rc != 124 ] && grep -q '"result":"error"' "$T/killed.out" &&
    awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 6) }' && ok || bad "exit $rc, $t0 .. $t1"

step "sender killed mid-stream: receiver fails fast, non-zero"
start_recv --discard --timeout 2s --json || bad "recv did not start"
# (no `timeout` wrapper: the kill must reach migstream itself)
"$M" replay --sample 64M --rounds 4 --channels 2 --max-bandwidth 4M --to 127.0.0.1:$PORT --quiet >/dev/null 2>&1 &
SPID=$!
sleep 1
kill -9 $SPID
t0=$(date +%s.%N)
reap_recv; rrc=$?
t1=$(date +%s.%N)
[ $rrc != 0 ] && grep -q '"result":"error"' "$T/recv.out" && grep -qE 'truncated|closed' "$T/recv.out" &&
    awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 4) }' && ok || bad "recv exit $rrc: $(cat "$T/recv.out")"

step "sender stopped (SIGSTOP): receiver times out, non-zero"
start_recv --discard --timeout 1500ms --json || bad "recv did not start"
"$M" replay --sample 64M --channels 2 --max-bandwidth 4M --to 127.0.0.1:$PORT --quiet >/dev/null 2>&1 &
SPID=$!
sleep 0.7
kill -STOP $SPID
reap_recv; rrc=$?
kill -CONT $SPID 2>/dev/null
timeout 30 tail --pid=$SPID -f /dev/null; wait $SPID; src=$?
[ $src != 0 ] && [ $rrc = 4 ] && grep -q "timed out" "$T/recv.out" && ok || bad "recv exit $rrc: $(cat "$T/recv.out")"

# ---- rdma ---------------------------------------------------------------------
step "--help of replay and recv documents rdma"
{ "$M" replay --help | grep -q -- "--transport tcp|fd|rdma" && "$M" replay --help | grep -q -- "--rdma-opts SPEC" &&
  "$M" replay --help | grep -q -- "--listen-addr ADDR" && "$M" recv --help | grep -q -- "--transport tcp|fd|rdma" &&
  "$M" recv --help | grep -q -- "--rdma-opts SPEC"; } && ok || bad "rdma options missing from --help"

# Without an RDMA device (or without the transport built in) both tools must
# say so at once and fail, never wait on the connection manager.
if ls /sys/class/infiniband/* >/dev/null 2>&1; then
    step "replay/recv --transport rdma without a device"; echo "skipped (this host has an RDMA device)"
else
    rdma_why='no RDMA device|this build has no RDMA transport'
    step "replay --transport rdma: clear failure within seconds"
    t0=$(date +%s.%N)
    timeout 10 "$M" replay --sample 1M --transport rdma --to 192.0.2.1:7010 --timeout 2s -q \
        >"$T/rdma.out" 2>"$T/rdma.err"; rc=$?
    t1=$(date +%s.%N)
    [ $rc != 0 ] && [ $rc != 124 ] && grep -Eq "^migstream replay: .*($rdma_why)" "$T/rdma.err" &&
        awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 5) }' && ok || bad "rc=$rc: $(cat "$T/rdma.err")"

    step "replay --transport rdma, local receiver: clear failure"
    timeout 10 "$M" replay --sample 1M --transport rdma --listen-addr 127.0.0.1 -q >/dev/null 2>"$T/rdma.err"; rc=$?
    [ $rc != 0 ] && [ $rc != 124 ] && grep -Eq "$rdma_why" "$T/rdma.err" && ok || bad "rc=$rc: $(cat "$T/rdma.err")"

    step "recv --transport rdma: clear failure"
    timeout 10 "$M" recv --transport rdma --listen 127.0.0.1:0 --discard -q >/dev/null 2>"$T/rdma.err"; rc=$?
    [ $rc != 0 ] && [ $rc != 124 ] && grep -Eq "^migstream recv: .*($rdma_why)" "$T/rdma.err" && ok ||
        bad "rc=$rc: $(cat "$T/rdma.err")"
fi

step "rdma usage errors exit 2"
timeout 10 "$M" replay --sample 1M --transport rdma >/dev/null 2>"$T/u1"; u1=$?
timeout 10 "$M" replay --sample 1M --rdma-opts slots=8 >/dev/null 2>&1; u2=$?
timeout 10 "$M" recv --listen 127.0.0.1:0 --discard --transport rdma --rdma-opts bogus=1 >/dev/null 2>&1; u3=$?
[ $u1 = 2 ] && [ $u2 = 2 ] && [ $u3 = 2 ] && grep -Eq -- "--listen-addr|this build has no RDMA" "$T/u1" && ok ||
    bad "exit codes $u1 $u2 $u3: $(cat "$T/u1")"

# ---- dirtyrate -------------------------------------------------------------------
step "dirtyrate --help; bad windows exit 2"
timeout 10 "$M" dirtyrate --help | grep -q "^usage: migstream dirtyrate" && h=0 || h=1
timeout 10 "$M" dirtyrate --interval 30ms --window 100ms -- true >/dev/null 2>"$T/dr.err"; w1=$?
timeout 10 "$M" dirtyrate --duration 10ms --interval 50ms -- true >/dev/null 2>&1; w2=$?
[ $h = 0 ] && [ $w1 = 2 ] && [ $w2 = 2 ] && grep -q "not a multiple of --interval" "$T/dr.err" && ok ||
    bad "help $h, exit codes $w1 $w2: $(cat "$T/dr.err")"
if [ -n "$DIRTIER" ] && [ "$(id -u)" = 0 ]; then
    # 4096 pages, 20000 random writes/s: every 50 ms read finds ~900 pages
    # (busy); the same memory written 10 times a second is quiet.
    step "dirtyrate of a live writer: busy and quiet"
    busy=$(timeout 60 "$M" dirtyrate --duration 1s --window 500ms --json --ready ready --warmup 0 -- \
        "$DIRTIER" --size 16M --rate 20000 --hot 1 --counter 0 2>"$T/dr1.err"); r1=$?
    calm=$(timeout 60 "$M" dirtyrate --duration 1s --window 500ms --json --ready ready --warmup 0 -- \
        "$DIRTIER" --size 16M --rate 10 --counter 0 2>"$T/dr2.err"); r2=$?
    if [ $r1 = 1 ] && grep -q "cannot track process memory here" "$T/dr1.err"; then
        echo "skipped ($(head -c 120 "$T/dr1.err"))"
    else
        python3 - "$busy" "$calm" <<'PY' && ok || bad "rc $r1 $r2: $busy / $calm / $(cat "$T/dr1.err" "$T/dr2.err")"
import json, sys
b, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert b["windows"]["n"] == 2 and c["windows"]["n"] == 2, (b["windows"], c["windows"])
assert b["windows"]["mean_pages_per_s"] > 4000, b["windows"]
assert b["quiet"]["intervals"] == 0 and b["quiet"]["of"] == 20, b["quiet"]
assert c["windows"]["mean_pages_per_s"] < 40, c["windows"]
assert c["quiet"]["intervals"] == 20, c["quiet"]
assert 4096 <= b["pages"] < 8192 and b["touched_pages"] > 4000, (b["pages"], b["touched_pages"])
PY
    fi
fi

if [ $fails -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
