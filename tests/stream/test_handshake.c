/* Hello format and the handshake, run for real over socketpairs with the fd
 * transport: client in the test thread, server (or a fake peer) in another. */
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "stream/stream.h"
#include "tests/ms_test.h"

static ms_hello make_hello(uint8_t role, uint16_t channel, uint16_t channels, uint32_t page_size,
                           const char *chain)
{
    ms_hello h;
    memset(&h, 0, sizeof h);
    h.version = MS_WIRE_VERSION;
    h.role = role;
    for (unsigned i = 0; i < MS_SESSION_ID_SIZE; i++)
        h.session_id[i] = (uint8_t)(0x50 + i);
    h.channel = channel;
    h.channels = channels;
    h.page_size = page_size;
    snprintf(h.chain, sizeof h.chain, "%s", chain);
    for (unsigned i = 0; i < MS_NONCE_SIZE; i++)
        h.nonce[i] = (uint8_t)(0xc0 + i);
    return h;
}

static ms_hello sender_hello(void) { return make_hello(MS_ROLE_SENDER, 1, 4, 4096, "zero,delta,lz4:1"); }

static void expect_msg(const char *msg, const char *needle)
{
    if (!strstr(msg, needle)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", msg, needle);
        CU_FAIL("message");
    }
}

/* ---- hello format ------------------------------------------------------- */

static void test_hello_roundtrip(void)
{
    ms_hello h = sender_hello(), g;
    uint8_t b[MS_HELLO_SIZE], b2[MS_HELLO_SIZE];

    h.flags = MS_HELLO_F_SEALED;
    ms_hello_pack(&h, b);
    CU_ASSERT_EQUAL(memcmp(b, "MIGSTRM\0", 8), 0);
    CU_ASSERT_EQUAL(ms_get_le32(b + 8), MS_WIRE_VERSION);
    CU_ASSERT_EQUAL(b[12], MS_ROLE_SENDER);
    CU_ASSERT_EQUAL(ms_get_le16(b + 14), 1);
    CU_ASSERT_EQUAL(ms_get_le16(b + 16), 4);
    CU_ASSERT_EQUAL(ms_get_le32(b + 20), 4096u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 24), MS_HELLO_F_SEALED);
    CU_ASSERT_EQUAL(memcmp(b + 28, h.session_id, 16), 0);
    CU_ASSERT_EQUAL(memcmp(b + 44, h.nonce, 32), 0);
    CU_ASSERT_STRING_EQUAL((const char *)b + 76, "zero,delta,lz4:1");
    CU_ASSERT_EQUAL(ms_get_le32(b + 156), XXH32(b, 156, 0));

    CU_ASSERT_EQUAL_FATAL(ms_hello_unpack(b, &g), MS_OK);
    CU_ASSERT_EQUAL(memcmp(&g, &h, sizeof h), 0);
    ms_hello_pack(&g, b2);
    CU_ASSERT_EQUAL(memcmp(b, b2, MS_HELLO_SIZE), 0);

    /* A receiver may leave the session parameters open. */
    h = make_hello(MS_ROLE_RECEIVER, 3, 0, 0, "");
    ms_hello_pack(&h, b);
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_OK);
}

static void test_hello_every_flip(void)
{
    ms_hello h = sender_hello(), g;
    uint8_t b[MS_HELLO_SIZE];
    unsigned accepted = 0;

    ms_hello_pack(&h, b);
    for (unsigned i = 0; i < MS_HELLO_SIZE; i++)
        for (unsigned x = 1; x < 256; x++) {
            b[i] ^= (uint8_t)x;
            if (ms_hello_unpack(b, &g) == MS_OK)
                accepted++;
            b[i] ^= (uint8_t)x;
        }
    CU_ASSERT_EQUAL(accepted, 0);
}

static void test_hello_version(void)
{
    ms_hello h = sender_hello(), g;
    uint8_t b[MS_HELLO_SIZE];

    h.version = MS_WIRE_VERSION + 1;
    ms_hello_pack(&h, b);
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_VERSION);
    expect_msg(ms_last_error(), "peer speaks wire version 3, this build speaks version 2");
}

static void expect_hello_refused(const ms_hello *h, const char *needle)
{
    uint8_t b[MS_HELLO_SIZE];
    ms_hello g;
    ms_hello_pack(h, b);
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_CORRUPT);
    expect_msg(ms_last_error(), needle);
}

static void test_hello_fields(void)
{
    ms_hello h;
    uint8_t b[MS_HELLO_SIZE];
    ms_hello g;

    h = sender_hello(); h.role = 3;
    expect_hello_refused(&h, "unknown role 3");
    h = sender_hello(); h.flags = 0x10;
    expect_hello_refused(&h, "unknown flag bits 0x10");
    h = sender_hello(); h.channels = 0;
    expect_hello_refused(&h, "channel count 0 outside 1..256");
    h = sender_hello(); h.channels = 257; h.channel = 0;
    expect_hello_refused(&h, "channel count 257");
    h = sender_hello(); h.channel = 4;
    expect_hello_refused(&h, "channel index 4 not below channel count 4");
    h = sender_hello(); h.page_size = 4095;
    expect_hello_refused(&h, "page size 4095 is not a power of two");
    h = sender_hello(); h.page_size = 256;
    expect_hello_refused(&h, "page size 256");
    h = sender_hello(); h.page_size = 0;
    expect_hello_refused(&h, "page size 0");
    h = sender_hello(); h.chain[0] = 0;
    expect_hello_refused(&h, "must name its codec chain");
    h = sender_hello(); h.chain[2] = '\t';
    expect_hello_refused(&h, "non-printable byte 0x09 at 2");

    /* Raw-byte faults with a correct check: what a careless peer might send. */
    h = sender_hello();
    ms_hello_pack(&h, b);
    b[100] = 'x'; /* after the chain's NUL */
    ms_put_le32(b + 156, XXH32(b, 156, 0));
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_CORRUPT);
    expect_msg(ms_last_error(), "chain text padding is not zero");
    ms_hello_pack(&h, b);
    memset(b + 76, 'a', 64);
    ms_put_le32(b + 156, XXH32(b, 156, 0));
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_CORRUPT);
    expect_msg(ms_last_error(), "not NUL-terminated");
    for (unsigned off = 0; off < 3; off++) {
        static const unsigned reserved[] = {13, 19, 18};
        ms_hello_pack(&h, b);
        b[reserved[off]] = 1;
        ms_put_le32(b + 156, XXH32(b, 156, 0));
        CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_CORRUPT);
        expect_msg(ms_last_error(), "reserved bytes are not zero");
    }
    ms_hello_pack(&h, b);
    b[7] = 'X';
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &g), MS_ERR_CORRUPT);
    expect_msg(ms_last_error(), "bad magic");
}

/* ---- handshake over a socketpair ---------------------------------------- */

typedef struct side {
    ms_conn *c;
    ms_hello mine, peer;
    const uint8_t *psk;
    ms_session_keys keys;
    int rc;
    char msg[512];
} side;

static void *server_main(void *arg)
{
    side *s = arg;
    s->rc = ms_handshake_server_read(s->c, &s->peer);
    if (s->rc == MS_OK)
        s->rc = ms_handshake_server_finish(s->c, &s->peer, &s->mine, s->psk, &s->keys);
    snprintf(s->msg, sizeof s->msg, "%s", s->rc ? ms_last_error() : "");
    return NULL;
}

static void client_run(side *s)
{
    s->rc = ms_handshake_client(s->c, &s->mine, s->psk, &s->peer, &s->keys);
    snprintf(s->msg, sizeof s->msg, "%s", s->rc ? ms_last_error() : "");
}

static void conn_pair(ms_conn **a, ms_conn **b)
{
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[0], sv[0], true, a) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[1], sv[1], true, b) == MS_OK);
    (*a)->timeout_ms = (*b)->timeout_ms = 5000;
}

static const uint8_t KEY_A[MS_KEY_SIZE] = "0123456789abcdef0123456789abcdef";
static const uint8_t KEY_B[MS_KEY_SIZE] = "0123456789abcdef0123456789abcdeF";

static ms_hello receiver_any(void) { return make_hello(MS_ROLE_RECEIVER, 0, 0, 0, ""); }

/* Client with `cmine`/`cpsk` against a server with `smine`/`spsk`. */
static void run_pair(side *cl, side *sv, ms_hello cmine, const uint8_t *cpsk, ms_hello smine,
                     const uint8_t *spsk)
{
    pthread_t t;
    memset(cl, 0, sizeof *cl);
    memset(sv, 0, sizeof *sv);
    conn_pair(&cl->c, &sv->c);
    cl->mine = cmine;
    cl->psk = cpsk;
    sv->mine = smine;
    sv->psk = spsk;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, server_main, sv) == 0);
    client_run(cl);
    /* The client is done either way; closing lets a server that still
     * waits see end of stream instead of its timeout. */
    ms_conn_close(cl->c);
    pthread_join(t, NULL);
    ms_conn_close(sv->c);
}

/* A sealed frame from one side must open on the other. */
static void check_seal_between(const ms_session_keys *from, const ms_session_keys *to, uint16_t channel)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE], body[64 + MS_SEAL_TAG_SIZE];
    ms_frame_hdr h = {.type = MS_FRAME_OPAQUE, .flags = MS_FRAME_F_SEALED, .channel = channel,
                      .seq = 9, .raw_len = 64, .stage_len = 64, .enc_len = 64 + MS_SEAL_TAG_SIZE};
    size_t n;
    memset(body, 0x5a, 64);
    ms_frame_hdr_pack(&h, hdr);
    CU_ASSERT_EQUAL_FATAL(ms_seal(from, hdr, channel, 9, body, 64, &n), MS_OK);
    CU_ASSERT_EQUAL(ms_open(to, hdr, channel, 9, body, n, &n), MS_OK);
    CU_ASSERT_EQUAL(n, 64);
    CU_ASSERT_EQUAL(body[63], 0x5a);
}

static void test_same_key(void)
{
    side cl, sv;
    run_pair(&cl, &sv, sender_hello(), KEY_A, receiver_any(), KEY_A);
    CU_ASSERT_EQUAL(cl.rc, MS_OK);
    CU_ASSERT_EQUAL(sv.rc, MS_OK);
    if (cl.rc || sv.rc) {
        fprintf(stderr, "\n  client: %s\n  server: %s\n", cl.msg, sv.msg);
        return;
    }
    CU_ASSERT(cl.keys.sealed && sv.keys.sealed);
    CU_ASSERT_EQUAL(cl.keys.role, MS_ROLE_SENDER);
    CU_ASSERT_EQUAL(sv.keys.role, MS_ROLE_RECEIVER);
    CU_ASSERT_EQUAL(memcmp(cl.keys.tx, sv.keys.rx, MS_KEY_SIZE), 0);
    CU_ASSERT_EQUAL(memcmp(cl.keys.rx, sv.keys.tx, MS_KEY_SIZE), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(cl.keys.tx, cl.keys.rx, MS_KEY_SIZE), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(cl.keys.tx, KEY_A, MS_KEY_SIZE), 0);
    /* What each side saw of the other. */
    CU_ASSERT_EQUAL(sv.peer.page_size, 4096u);
    CU_ASSERT_STRING_EQUAL(sv.peer.chain, "zero,delta,lz4:1");
    CU_ASSERT_EQUAL(sv.peer.channel, 1);
    CU_ASSERT_EQUAL(sv.peer.channels, 4);
    CU_ASSERT(sv.peer.flags & MS_HELLO_F_SEALED);
    CU_ASSERT_EQUAL(cl.peer.role, MS_ROLE_RECEIVER);
    CU_ASSERT_EQUAL(cl.peer.channel, 1); /* echoed */
    CU_ASSERT_EQUAL(memcmp(cl.peer.session_id, sv.peer.session_id, MS_SESSION_ID_SIZE), 0);
    /* The handshake drew fresh nonces instead of the caller's. */
    CU_ASSERT_NOT_EQUAL(memcmp(sv.peer.nonce, sender_hello().nonce, MS_NONCE_SIZE), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(sv.peer.nonce, cl.peer.nonce, MS_NONCE_SIZE), 0);
    check_seal_between(&cl.keys, &sv.keys, 1);
    check_seal_between(&sv.keys, &cl.keys, 1);

    /* Keys are per session and per channel: another run (new nonces) and
     * another channel give other keys. */
    side cl2, sv2;
    ms_hello other = sender_hello();
    other.channel = 2;
    run_pair(&cl2, &sv2, sender_hello(), KEY_A, receiver_any(), KEY_A);
    CU_ASSERT_EQUAL(cl2.rc, MS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(cl.keys.tx, cl2.keys.tx, MS_KEY_SIZE), 0);
    run_pair(&cl2, &sv2, other, KEY_A, receiver_any(), KEY_A);
    CU_ASSERT_EQUAL(cl2.rc, MS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(cl.keys.tx, cl2.keys.tx, MS_KEY_SIZE), 0);
}

static void test_unsealed(void)
{
    side cl, sv;
    run_pair(&cl, &sv, sender_hello(), NULL, make_hello(MS_ROLE_RECEIVER, 0, 4, 4096, "zero,delta,lz4:1"),
             NULL);
    CU_ASSERT_EQUAL(cl.rc, MS_OK);
    CU_ASSERT_EQUAL(sv.rc, MS_OK);
    CU_ASSERT(!cl.keys.sealed && !sv.keys.sealed);
    CU_ASSERT(!(sv.peer.flags & MS_HELLO_F_SEALED));
}

/* sender_hello() with `cpsk` against a server with `smine`/`spsk`: both
 * ends must refuse with `code`, the client's message containing cl_needle
 * and the server's sv_needle (NULL: its wording is not checked). */
static void expect_refused(side *cl, side *sv, const uint8_t *cpsk, ms_hello smine, const uint8_t *spsk, int code,
                           const char *cl_needle, const char *sv_needle)
{
    run_pair(cl, sv, sender_hello(), cpsk, smine, spsk);
    CU_ASSERT_EQUAL(cl->rc, code);
    CU_ASSERT_EQUAL(sv->rc, code);
    expect_msg(cl->msg, cl_needle);
    if (sv_needle)
        expect_msg(sv->msg, sv_needle);
}

static void test_wrong_key(void)
{
    side cl, sv;
    expect_refused(&cl, &sv, KEY_A, receiver_any(), KEY_B, MS_ERR_AUTH, "peer does not hold the pre-shared key",
                   "peer does not hold the pre-shared key");
    CU_ASSERT(!cl.keys.sealed && !sv.keys.sealed);
}

static void test_sealed_vs_unsealed(void)
{
    side cl, sv;
    expect_refused(&cl, &sv, KEY_A, receiver_any(), NULL, MS_ERR_MISMATCH,
                   "this side has a key and seals frames, the peer has no key",
                   "the peer has a key and seals frames, this side has no key");
    expect_refused(&cl, &sv, NULL, receiver_any(), KEY_A, MS_ERR_MISMATCH, "the peer has a key",
                   "this side has a key");
}

static void test_param_mismatch(void)
{
    side cl, sv;
    expect_refused(&cl, &sv, KEY_A, make_hello(MS_ROLE_RECEIVER, 0, 0, 8192, ""), KEY_A, MS_ERR_MISMATCH,
                   "page size: this side 4096, peer 8192", "page size: this side 8192, peer 4096");
    expect_refused(&cl, &sv, NULL, make_hello(MS_ROLE_RECEIVER, 0, 0, 0, "zstd:3"), NULL, MS_ERR_MISMATCH,
                   "codec chain: this side 'zero,delta,lz4:1', peer 'zstd:3'", NULL);
    expect_refused(&cl, &sv, NULL, make_hello(MS_ROLE_RECEIVER, 0, 2, 0, ""), NULL, MS_ERR_MISMATCH,
                   "channel count: this side 4, peer 2", "channel count: this side 2, peer 4");
    expect_refused(&cl, &sv, NULL, make_hello(MS_ROLE_SENDER, 0, 4, 4096, "zero,delta,lz4:1"), NULL,
                   MS_ERR_MISMATCH, "both ends are senders", NULL);
}

/* A fake server that speaks another version. */
static void *fake_next_server(void *arg)
{
    side *s = arg;
    uint8_t in[MS_HELLO_SIZE], out[MS_HELLO_SIZE];
    ms_hello h = make_hello(MS_ROLE_RECEIVER, 0, 0, 0, "");
    h.version = MS_WIRE_VERSION + 1;
    ms_hello_pack(&h, out);
    s->rc = ms_conn_recv(s->c, in, sizeof in, NULL);
    if (s->rc == MS_OK)
        s->rc = ms_conn_send(s->c, out, sizeof out);
    return NULL;
}

static void test_version_mismatch(void)
{
    side cl, sv;
    pthread_t t;
    uint8_t b[MS_HELLO_SIZE];
    ms_hello h;

    /* Our client against a server of the next version. */
    memset(&cl, 0, sizeof cl);
    memset(&sv, 0, sizeof sv);
    conn_pair(&cl.c, &sv.c);
    cl.mine = sender_hello();
    CU_ASSERT_FATAL(pthread_create(&t, NULL, fake_next_server, &sv) == 0);
    client_run(&cl);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(cl.rc, MS_ERR_VERSION);
    expect_msg(cl.msg, "peer speaks wire version 3, this build speaks version 2");
    ms_conn_close(cl.c);
    ms_conn_close(sv.c);

    /* A client of the next version against our server: the server refuses and answers with
     * its own version so the client can say why. */
    memset(&sv, 0, sizeof sv);
    conn_pair(&cl.c, &sv.c);
    sv.mine = receiver_any();
    h = sender_hello();
    h.version = MS_WIRE_VERSION + 1;
    ms_hello_pack(&h, b);
    CU_ASSERT_EQUAL(ms_conn_send(cl.c, b, sizeof b), MS_OK);
    server_main(&sv);
    CU_ASSERT_EQUAL(sv.rc, MS_ERR_VERSION);
    expect_msg(sv.msg, "peer speaks wire version 3, this build speaks version 2");
    CU_ASSERT_EQUAL(ms_conn_recv(cl.c, b, sizeof b, NULL), MS_OK);
    CU_ASSERT_EQUAL(ms_get_le32(b + 8), MS_WIRE_VERSION);
    CU_ASSERT_EQUAL(ms_hello_unpack(b, &h), MS_OK);
    ms_conn_close(cl.c);
    ms_conn_close(sv.c);
}

/* A man in the middle that rewrites one byte of the client's nonce (and
 * fixes the hello's check) then relays everything else. */
typedef struct mitm {
    ms_conn *to_client, *to_server;
    int hello_offset; /* byte of the client's hello to change */
} mitm;

static int relay(ms_conn *from, ms_conn *to, size_t n, int change_at)
{
    uint8_t buf[MS_HELLO_SIZE];
    int rc = ms_conn_recv(from, buf, n, NULL);
    if (rc < 0)
        return rc;
    if (change_at >= 0) {
        buf[change_at] ^= 1;
        ms_put_le32(buf + 156, XXH32(buf, 156, 0));
    }
    return ms_conn_send(to, buf, n);
}

static void *mitm_main(void *arg)
{
    mitm *m = arg;
    if (relay(m->to_client, m->to_server, MS_HELLO_SIZE, m->hello_offset) == MS_OK &&
        relay(m->to_server, m->to_client, MS_HELLO_SIZE, -1) == MS_OK &&
        relay(m->to_server, m->to_client, MS_PROOF_SIZE, -1) == MS_OK)
        relay(m->to_client, m->to_server, MS_PROOF_SIZE, -1);
    ms_conn_close(m->to_client);
    ms_conn_close(m->to_server);
    return NULL;
}

static void test_mitm(void)
{
    /* Nonce, session id, then flags and chain bytes (parameters that both
     * ends would otherwise accept). */
    static const int offsets[] = {44, 75, 28};
    for (unsigned i = 0; i < sizeof offsets / sizeof *offsets; i++) {
        side cl, sv;
        mitm m = {.hello_offset = offsets[i]};
        pthread_t tm, ts;
        memset(&cl, 0, sizeof cl);
        memset(&sv, 0, sizeof sv);
        conn_pair(&cl.c, &m.to_client);
        conn_pair(&m.to_server, &sv.c);
        cl.mine = sender_hello();
        cl.psk = sv.psk = KEY_A;
        sv.mine = receiver_any();
        CU_ASSERT_FATAL(pthread_create(&tm, NULL, mitm_main, &m) == 0);
        CU_ASSERT_FATAL(pthread_create(&ts, NULL, server_main, &sv) == 0);
        client_run(&cl);
        ms_conn_close(cl.c);
        pthread_join(tm, NULL);
        pthread_join(ts, NULL);
        /* The server echoes the session id it saw, so a changed one is
         * caught as a mismatch by the client before the proofs. */
        if (offsets[i] == 28) {
            CU_ASSERT_EQUAL(cl.rc, MS_ERR_MISMATCH);
            expect_msg(cl.msg, "another session id");
        } else {
            CU_ASSERT_EQUAL(cl.rc, MS_ERR_AUTH);
        }
        CU_ASSERT_EQUAL(sv.rc, offsets[i] == 28 ? MS_ERR_CLOSED : MS_ERR_AUTH);
        ms_conn_close(sv.c);
    }
}

static void test_timeout_and_close(void)
{
    side cl;
    ms_conn *other;
    memset(&cl, 0, sizeof cl);
    conn_pair(&cl.c, &other);
    cl.c->timeout_ms = 200;
    cl.mine = sender_hello();
    uint64_t t0 = ms_now_ns();
    client_run(&cl);
    double waited = (double)(ms_now_ns() - t0) / 1e9;
    CU_ASSERT_EQUAL(cl.rc, MS_ERR_TIMEOUT);
    CU_ASSERT(waited >= 0.15 && waited < 3.0);
    expect_msg(cl.msg, "handshake: reading the peer's hello");
    ms_conn_close(cl.c);
    ms_conn_close(other);

    /* The peer is gone before answering. */
    conn_pair(&cl.c, &other);
    ms_conn_close(other);
    client_run(&cl);
    CU_ASSERT_EQUAL(cl.rc, MS_ERR_CLOSED);
    expect_msg(cl.msg, "handshake");
    ms_conn_close(cl.c);

    /* A client that sends a sealed hello and leaves before its proof. */
    conn_pair(&cl.c, &other);
    uint8_t b[MS_HELLO_SIZE];
    ms_hello h = sender_hello(), peer;
    ms_session_keys keys;
    h.flags = MS_HELLO_F_SEALED;
    ms_hello_pack(&h, b);
    CU_ASSERT_EQUAL(ms_conn_send(cl.c, b, sizeof b), MS_OK);
    ms_conn_close(cl.c);
    CU_ASSERT_EQUAL(ms_handshake_server_read(other, &peer), MS_OK);
    ms_hello mine = receiver_any();
    CU_ASSERT_EQUAL(ms_handshake_server_finish(other, &peer, &mine, KEY_A, &keys), MS_ERR_CLOSED);
    CU_ASSERT(!keys.sealed);
    ms_conn_close(other);
}

/* Oneway: the writer's hello (and key proof) go into a pipe; nothing comes
 * back. */
static void oneway_run(const uint8_t *wkey, const uint8_t *rkey, side *w, side *r)
{
    int p[2];
    memset(w, 0, sizeof *w);
    memset(r, 0, sizeof *r);
    CU_ASSERT_FATAL(pipe(p) == 0);
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, p[1], true, &w->c) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], -1, true, &r->c) == MS_OK);
    w->c->timeout_ms = r->c->timeout_ms = 2000;
    w->mine = sender_hello();
    w->mine.flags = MS_HELLO_F_ONEWAY;
    w->psk = wkey;
    r->mine = receiver_any();
    r->psk = rkey;
    client_run(w);
    ms_conn_close(w->c);
    server_main(r);
    ms_conn_close(r->c);
}

static void test_oneway(void)
{
    side w, r;
    oneway_run(KEY_A, KEY_A, &w, &r);
    CU_ASSERT_EQUAL(w.rc, MS_OK);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT(r.peer.flags & MS_HELLO_F_ONEWAY);
    CU_ASSERT(w.keys.sealed && r.keys.sealed);
    CU_ASSERT_EQUAL(memcmp(w.keys.tx, r.keys.rx, MS_KEY_SIZE), 0);
    check_seal_between(&w.keys, &r.keys, 1);

    oneway_run(KEY_A, KEY_B, &w, &r);
    CU_ASSERT_EQUAL(w.rc, MS_OK); /* the writer cannot know */
    CU_ASSERT_EQUAL(r.rc, MS_ERR_AUTH);
    expect_msg(r.msg, "sealed with another key");

    oneway_run(KEY_A, NULL, &w, &r);
    CU_ASSERT_EQUAL(r.rc, MS_ERR_MISMATCH);
    oneway_run(NULL, NULL, &w, &r);
    CU_ASSERT_EQUAL(w.rc, MS_OK);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT(!r.keys.sealed);
}

static const ms_test_case handshake_tests[] = {
    {"hello round trip and offsets", test_hello_roundtrip},
    {"hello: every byte corruption refused", test_hello_every_flip},
    {"hello: version mismatch names both versions", test_hello_version},
    {"hello: each field error named", test_hello_fields},
    {"handshake: same key", test_same_key},
    {"handshake: unsealed", test_unsealed},
    {"handshake: wrong key -> AUTH on both sides", test_wrong_key},
    {"handshake: sealed vs unsealed -> MISMATCH", test_sealed_vs_unsealed},
    {"handshake: page size, chain, channels, roles", test_param_mismatch},
    {"handshake: version mismatch, both directions", test_version_mismatch},
    {"handshake: man in the middle", test_mitm},
    {"handshake: timeout and early close", test_timeout_and_close},
    {"handshake: oneway", test_oneway},
    {NULL, NULL},
};

MS_TEST_MAIN(ms_test_add_suite("stream", handshake_tests))
