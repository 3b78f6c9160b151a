/* Key files, frame sealing and the per-channel sequence check. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "stream/stream.h"
#include "tests/ms_test.h"

static char tmpdir[64];

static void path_in_tmp(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, p, n) == (ssize_t)n);
    CU_ASSERT_FATAL(fchmod(fd, mode) == 0);
    close(fd);
}

static const char HEX[] = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

static void expect_key(const char *content, size_t n, int code, const char *needle)
{
    char path[128];
    uint8_t key[MS_KEY_SIZE];
    path_in_tmp(path, sizeof path, "k");
    write_file(path, content, n, 0600);
    int rc = ms_key_load(path, key);
    CU_ASSERT_EQUAL(rc, code);
    if (rc == MS_OK) {
        for (unsigned i = 0; i < MS_KEY_SIZE; i++)
            CU_ASSERT_EQUAL(key[i], content[0] == '0' ? i : (uint8_t)content[i]);
    } else if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", ms_last_error(), needle);
        CU_FAIL("key error message");
    }
    unlink(path);
}

static void test_key_load(void)
{
    char buf[80];
    uint8_t raw[MS_KEY_SIZE];

    for (unsigned i = 0; i < MS_KEY_SIZE; i++)
        raw[i] = (uint8_t)(0xa0 + i);
    expect_key((const char *)raw, sizeof raw, MS_OK, "");
    expect_key(HEX, 64, MS_OK, "");
    snprintf(buf, sizeof buf, "%s\n", HEX);
    expect_key(buf, 65, MS_OK, "");
    snprintf(buf, sizeof buf, "%s\r\n", HEX);
    expect_key(buf, 66, MS_OK, "");

    expect_key(HEX, 63, MS_ERR_INVAL, "is 63 bytes: expected 32 raw bytes or 64 hex digits");
    snprintf(buf, sizeof buf, "%s\n\n", HEX);
    expect_key(buf, 66, MS_ERR_INVAL, "is 66 bytes");
    snprintf(buf, sizeof buf, "%sab", HEX);
    expect_key(buf, 66, MS_ERR_INVAL, "is 66 bytes");
    expect_key("", 0, MS_ERR_INVAL, "is 0 bytes");
    memcpy(buf, HEX, 64);
    buf[10] = 'g';
    expect_key(buf, 64, MS_ERR_INVAL, "character 11 is not a hex digit");
    memset(buf, 0, 32);
    expect_key(buf, 32, MS_ERR_INVAL, "all-zero key");
    static char big[4096];
    memset(big, 'a', sizeof big);
    expect_key(big, sizeof big, MS_ERR_INVAL, "at least 67 bytes");

    uint8_t key[MS_KEY_SIZE];
    CU_ASSERT_EQUAL(ms_key_load("/nonexistent/key", key), MS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "/nonexistent/key"));
}

/* Run ms_key_load with stderr captured, return what was logged. */
static void load_capturing_stderr(const char *path, char *log, size_t n, int *rc)
{
    char lp[128];
    uint8_t key[MS_KEY_SIZE];
    path_in_tmp(lp, sizeof lp, "stderr");
    int saved = dup(2), fd = open(lp, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(saved >= 0 && fd >= 0);
    fflush(stderr);
    dup2(fd, 2);
    *rc = ms_key_load(path, key);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t got = pread(fd, log, n - 1, 0);
    log[got > 0 ? got : 0] = 0;
    close(fd);
    unlink(lp);
}

static void test_key_mode_warning(void)
{
    char path[128], log[1024];
    int rc;
    path_in_tmp(path, sizeof path, "wide");
    write_file(path, HEX, 64, 0644);
    load_capturing_stderr(path, log, sizeof log, &rc);
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "accessible by group or others (mode 0644)"));
    CU_ASSERT_EQUAL(chmod(path, 0600), 0);
    load_capturing_stderr(path, log, sizeof log, &rc);
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_EQUAL(log[0], 0);
    unlink(path);
}

static void test_key_generate(void)
{
    char path[128];
    uint8_t k1[MS_KEY_SIZE], k2[MS_KEY_SIZE];
    struct stat st;

    path_in_tmp(path, sizeof path, "gen");
    unlink(path);
    mode_t old = umask(0);
    int rc = ms_key_generate(path);
    umask(old);
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    CU_ASSERT_EQUAL(st.st_size, 65);
    CU_ASSERT_EQUAL(ms_key_load(path, k1), MS_OK);
    /* Never overwritten: the key stays the same. */
    CU_ASSERT_EQUAL(ms_key_generate(path), MS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "refusing to overwrite"));
    CU_ASSERT_EQUAL(ms_key_load(path, k2), MS_OK);
    CU_ASSERT_EQUAL(memcmp(k1, k2, MS_KEY_SIZE), 0);
    unlink(path);
    CU_ASSERT_EQUAL(ms_key_generate(path), MS_OK);
    CU_ASSERT_EQUAL(ms_key_load(path, k2), MS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(k1, k2, MS_KEY_SIZE), 0);
    unlink(path);
}

/* ---- sealing ------------------------------------------------------------ */

/* Keys as a handshake would hand them out: the sender's tx is the
 * receiver's rx and the other way round. */
static ms_session_keys sender_keys, receiver_keys;

static void make_keys(void)
{
    memset(&sender_keys, 0, sizeof sender_keys);
    sender_keys.sealed = true;
    sender_keys.role = MS_ROLE_SENDER;
    for (unsigned i = 0; i < MS_KEY_SIZE; i++) {
        sender_keys.tx[i] = (uint8_t)(i + 1);
        sender_keys.rx[i] = (uint8_t)(0x80 + i);
    }
    receiver_keys = sender_keys;
    receiver_keys.role = MS_ROLE_RECEIVER;
    memcpy(receiver_keys.tx, sender_keys.rx, MS_KEY_SIZE);
    memcpy(receiver_keys.rx, sender_keys.tx, MS_KEY_SIZE);
}

#define BODY 1000

typedef struct sealed_frame {
    uint8_t hdr[MS_FRAME_HDR_SIZE];
    uint8_t body[BODY + MS_SEAL_TAG_SIZE];
    size_t len;
} sealed_frame;

static void seal_frame(sealed_frame *f, uint16_t channel, uint64_t seq)
{
    ms_frame_hdr h = {
        .type = MS_FRAME_OPAQUE, .flags = MS_FRAME_F_SEALED, .channel = channel, .seq = seq,
        .raw_len = BODY, .stage_len = BODY, .enc_len = BODY + MS_SEAL_TAG_SIZE,
    };
    for (unsigned i = 0; i < BODY; i++)
        f->body[i] = (uint8_t)(i * 31 + seq);
    h.hash = ms_content_hash(NULL, 0, f->body, BODY);
    ms_frame_hdr_pack(&h, f->hdr);
    CU_ASSERT_EQUAL_FATAL(ms_seal(&sender_keys, f->hdr, channel, seq, f->body, BODY, &f->len), MS_OK);
    CU_ASSERT_EQUAL(f->len, BODY + MS_SEAL_TAG_SIZE);
}

/* What a receiver does with a frame that arrived on `channel`: parse the
 * header, open the seal (authenticating the header), then check order. */
static int receive(const ms_session_keys *k, ms_seq_check *sc, uint16_t channel, const sealed_frame *in)
{
    sealed_frame f = *in;
    ms_frame_hdr h;
    size_t out = 0;
    int rc = ms_frame_hdr_unpack(f.hdr, &h);
    if (rc == MS_OK)
        rc = ms_open(k, f.hdr, channel, h.seq, f.body, f.len, &out);
    if (rc == MS_OK)
        rc = ms_seq_check_accept(sc, h.seq);
    if (rc == MS_OK && (out != BODY || ms_content_hash(NULL, 0, f.body, out) != h.hash))
        rc = MS_ERR_HASH;
    return rc;
}

static void expect_msg(const char *needle)
{
    if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", ms_last_error(), needle);
        CU_FAIL("message");
    }
}

static void test_seal_roundtrip(void)
{
    sealed_frame f;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&f, 1, 42);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 1, &f), MS_OK);
    /* The body on the wire is not the plaintext. */
    CU_ASSERT_NOT_EQUAL(f.body[0], 42);
}

static void test_tampered_header(void)
{
    sealed_frame f, g;
    ms_seq_check sc = {0};
    unsigned checked = 0;
    make_keys();
    seal_frame(&f, 1, 42);
    /* A flip alone is caught by the header check ... */
    g = f;
    g.hdr[17] ^= 1;
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 1, &g), MS_ERR_CORRUPT);
    /* ... and with the check recomputed (a deliberate attacker), by the seal:
     * every header byte is associated data. */
    for (unsigned i = 4; i < 52; i++) {
        if (i == 5 || i == 6 || i == 7 || (i >= 8 && i < 16) || (i >= 36 && i < 40))
            continue; /* flags, channel, seq, enc_len: their own checks below */
        g = f;
        g.hdr[i] ^= (i == 4) ? 0x07 : 0x40; /* type: OPAQUE (2) becomes PING (5) */
        ms_put_le32(g.hdr + 52, XXH32(g.hdr, 52, 0));
        ms_frame_hdr h;
        if (ms_frame_hdr_unpack(g.hdr, &h) != MS_OK)
            continue; /* refused as malformed, also fine */
        CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 1, &g), MS_ERR_TAMPERED);
        expect_msg("seal does not verify");
        checked++;
    }
    CU_ASSERT(checked >= 20); /* round, fragment, codec, lengths, hash */
    /* The flag stripped: an unsealed frame in a sealed session. */
    g = f;
    g.hdr[5] = 0;
    ms_put_le32(g.hdr + 52, XXH32(g.hdr, 52, 0));
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 1, &g), MS_ERR_TAMPERED);
    expect_msg("not sealed, in a sealed session");
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 1, &f), MS_OK);
}

static void test_tampered_body(void)
{
    sealed_frame f, g;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&f, 0, 7);
    for (size_t i = 0; i < f.len; i += 37) {
        g = f;
        g.body[i] ^= 0x10;
        CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &g), MS_ERR_TAMPERED);
    }
    g = f;
    g.body[f.len - 1] ^= 1; /* last tag byte */
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &g), MS_ERR_TAMPERED);
    expect_msg("frame 7 on channel 0: seal does not verify");
}

static void test_truncated_body(void)
{
    sealed_frame f, g;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&f, 0, 7);
    g = f;
    g.len = f.len - 1;
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &g), MS_ERR_TRUNCATED);
    expect_msg("sealed body is 1015 bytes, header says 1016");
    g.len = 3;
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &g), MS_ERR_TRUNCATED);
    /* A header rewritten to match the shorter body fails the seal instead. */
    ms_put_le32(g.hdr + 36, (uint32_t)(f.len - 1));
    ms_put_le32(g.hdr + 52, XXH32(g.hdr, 52, 0));
    g.len = f.len - 1;
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &g), MS_ERR_TAMPERED);
}

static void test_wrong_channel(void)
{
    sealed_frame f, g;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&f, 1, 42);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 2, &f), MS_ERR_TAMPERED);
    expect_msg("sealed for channel 1, arrived on channel 2");
    /* Header rewritten to claim channel 2: the nonce and AD no longer match. */
    g = f;
    ms_put_le16(g.hdr + 6, 2);
    ms_put_le32(g.hdr + 52, XXH32(g.hdr, 52, 0));
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 2, &g), MS_ERR_TAMPERED);
    expect_msg("seal does not verify");
}

static void test_replayed(void)
{
    sealed_frame a, b;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&a, 0, 10);
    seal_frame(&b, 0, 14);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &a), MS_OK);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &a), MS_ERR_REPLAY);
    expect_msg("frame 10: already received on this channel");
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &b), MS_OK);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &a), MS_ERR_REPLAY);
    /* Rewriting the seq of a replayed frame breaks its seal. */
    sealed_frame c = a;
    ms_put_le64(c.hdr + 8, 20);
    ms_put_le32(c.hdr + 52, XXH32(c.hdr, 52, 0));
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &c), MS_ERR_TAMPERED);
}

static void test_reordered(void)
{
    sealed_frame a, b;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&a, 3, 5);
    seal_frame(&b, 3, 6);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 3, &b), MS_OK);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 3, &a), MS_ERR_REORDER);
    expect_msg("frame 5: arrived after frame 6");
}

static void test_wrong_direction(void)
{
    sealed_frame f;
    ms_seq_check sc = {0};
    make_keys();
    seal_frame(&f, 0, 1);
    /* The sender opening its own frame uses the receiver->sender key and
     * direction: refused. */
    CU_ASSERT_EQUAL(receive(&sender_keys, &sc, 0, &f), MS_ERR_TAMPERED);
    /* Same key, other direction byte in the nonce: still refused. */
    ms_session_keys k = sender_keys;
    memcpy(k.rx, sender_keys.tx, MS_KEY_SIZE);
    CU_ASSERT_EQUAL(receive(&k, &sc, 0, &f), MS_ERR_TAMPERED);
    CU_ASSERT_EQUAL(receive(&receiver_keys, &sc, 0, &f), MS_OK);
}

static void test_seal_misuse(void)
{
    sealed_frame f;
    ms_frame_hdr h = {.type = MS_FRAME_OPAQUE, .flags = MS_FRAME_F_SEALED, .channel = 0, .seq = 1,
                      .enc_len = BODY}; /* forgot the tag */
    size_t out;
    ms_session_keys none = {0};
    make_keys();
    ms_frame_hdr_pack(&h, f.hdr);
    CU_ASSERT_EQUAL(ms_seal(&sender_keys, f.hdr, 0, 1, f.body, BODY, &out), MS_ERR_INVAL);
    h.enc_len = BODY + MS_SEAL_TAG_SIZE;
    ms_frame_hdr_pack(&h, f.hdr);
    CU_ASSERT_EQUAL(ms_seal(&sender_keys, f.hdr, 1, 1, f.body, BODY, &out), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_seal(&none, f.hdr, 0, 1, f.body, BODY, &out), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_seal(&sender_keys, f.hdr, 0, 1, f.body, BODY, &out), MS_OK);
}

static void test_seq_rule(void)
{
    ms_seq_check sc = {0};
    /* Per-channel seqs have gaps (the global seq is spread over channels). */
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 10), MS_OK);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 20), MS_OK);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 30), MS_OK);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 30), MS_ERR_REPLAY);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 20), MS_ERR_REPLAY);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 25), MS_ERR_REORDER);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 0), MS_ERR_REORDER);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&sc, 31), MS_OK);
    /* Seq 0 is a valid first frame. */
    ms_seq_check z = {0};
    CU_ASSERT_EQUAL(ms_seq_check_accept(&z, 0), MS_OK);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&z, 0), MS_ERR_REPLAY);
    /* Beyond the window: a seq older than anything remembered. */
    ms_seq_check w = {0};
    for (uint64_t s = 100; s < 100 + 3 * MS_SEQ_WINDOW; s++)
        CU_ASSERT_EQUAL(ms_seq_check_accept(&w, s * 4), MS_OK);
    uint64_t last = (100 + 3 * MS_SEQ_WINDOW - 1) * 4;
    CU_ASSERT_EQUAL(ms_seq_check_accept(&w, last - 4 * (MS_SEQ_WINDOW - 1)), MS_ERR_REPLAY);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&w, last - 4 * (MS_SEQ_WINDOW - 1) + 1), MS_ERR_REORDER);
    CU_ASSERT_EQUAL(ms_seq_check_accept(&w, last - 4 * MS_SEQ_WINDOW), MS_ERR_REORDER);
    expect_msg("older than the last 16 frames");
}

static int suite_init(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-test-seal-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int suite_clean(void) { return rmdir(tmpdir); }

static const ms_test_case seal_tests[] = {
    {"key file formats", test_key_load},
    {"key file mode warning", test_key_mode_warning},
    {"key generate: 0600, never overwrites", test_key_generate},
    {"seal/open round trip", test_seal_roundtrip},
    {"tampered header byte", test_tampered_header},
    {"tampered body byte", test_tampered_body},
    {"truncated body", test_truncated_body},
    {"wrong channel", test_wrong_channel},
    {"replayed frame", test_replayed},
    {"reordered frame", test_reordered},
    {"wrong direction key", test_wrong_direction},
    {"seal misuse refused", test_seal_misuse},
    {"sequence rule", test_seq_rule},
    {NULL, NULL},
};

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("stream", suite_init, suite_clean);
    for (const ms_test_case *c = seal_tests; c->name; c++)
        CU_add_test(s, c->name, c->fn);
    return ms_test_run_all();
}
