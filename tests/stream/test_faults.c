/* Faults: every one must end with a clear error on both ends, within a
 * bounded time, and never with a success. A proxy thread sits between the
 * sender and the receiver and flips a byte, drops bytes or a whole frame,
 * repeats a frame, stalls, or cuts the connection. Killed processes are
 * real processes (fork + SIGKILL). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <sys/wait.h>

#include "pipeline_harness.h"

#define FAULT_TIMEOUT_MS 1500

/* ---- proxy --------------------------------------------------------------- */

typedef struct proxy {
    int a, b;               /* a: toward the sender, b: toward the receiver */
    long flip_at;           /* sender->receiver byte offset to flip, -1 none */
    long drop_at, drop_len; /* bytes to drop, drop_len 0 none */
    long stall_at;          /* stop forwarding both ways here, -1 none */
    long cut_at;            /* close both sides here, -1 none */
    long skip;              /* bytes before the first frame (hello, proof) */
    long drop_frame, dup_frame; /* frame index to drop / send twice, -1 none */
    /* frame tracking */
    long pos, frame_idx;
    uint8_t hdr[MS_FRAME_HDR_SIZE];
    size_t hdr_have;
    long frame_left;
    uint8_t *frame_copy;
    size_t copy_len, copy_cap;
    int stop, stalled; /* __atomic */
    pthread_t t, t2;
} proxy;

static void proxy_init(proxy *p)
{
    memset(p, 0, sizeof *p);
    p->flip_at = p->stall_at = p->cut_at = p->drop_frame = p->dup_frame = -1;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Forward one sender->receiver byte run, applying the faults. Frames are
 * tracked byte by byte (header, then enc_len body bytes) so a whole frame
 * can be dropped or repeated. */
static int forward_frames(proxy *p, const uint8_t *buf, size_t n)
{
    uint8_t *out = malloc(2 * n + p->copy_cap + 1);
    size_t o = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = buf[i];
        long off = p->pos++;
        bool keep = !(p->drop_len && off >= p->drop_at && off < p->drop_at + p->drop_len);
        if (off == p->flip_at)
            c ^= 0x5a;
        if (off < p->skip || (p->drop_frame < 0 && p->dup_frame < 0)) {
            if (keep)
                out[o++] = c;
            continue;
        }
        if (p->frame_left == 0) {
            p->hdr[p->hdr_have++] = c;
            if (p->hdr_have == MS_FRAME_HDR_SIZE)
                p->frame_left = (long)ms_get_le32(p->hdr + 36);
        } else {
            p->frame_left--;
        }
        bool end = p->hdr_have == MS_FRAME_HDR_SIZE && p->frame_left == 0;
        if (p->frame_idx == p->drop_frame)
            keep = false;
        if (p->frame_idx == p->dup_frame) {
            if (p->copy_len == p->copy_cap) {
                p->copy_cap = p->copy_cap ? 2 * p->copy_cap : 65536;
                p->frame_copy = realloc(p->frame_copy, p->copy_cap);
                out = realloc(out, 2 * n + p->copy_cap + 1);
            }
            p->frame_copy[p->copy_len++] = c;
        }
        if (keep)
            out[o++] = c;
        if (end) {
            if (p->frame_idx == p->dup_frame) {
                memcpy(out + o, p->frame_copy, p->copy_len);
                o += p->copy_len;
            }
            p->frame_idx++;
            p->hdr_have = 0;
        }
    }
    if (o)
        rc = write_all(p->b, out, o);
    free(out);
    return rc;
}

/* Sender -> receiver, with the faults. */
static void *proxy_fwd(void *arg)
{
    proxy *p = arg;
    uint8_t buf[16384];
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        if (p->stall_at >= 0 && p->pos >= p->stall_at) {
            __atomic_store_n(&p->stalled, 1, __ATOMIC_RELEASE);
            usleep(10000);
            continue;
        }
        struct pollfd fd = {p->a, POLLIN, 0};
        if (poll(&fd, 1, 50) <= 0)
            continue;
        size_t want = sizeof buf;
        if (p->stall_at >= 0 && p->stall_at - p->pos < (long)want)
            want = (size_t)(p->stall_at - p->pos);
        if (p->cut_at >= 0 && p->cut_at - p->pos < (long)want)
            want = (size_t)(p->cut_at - p->pos);
        ssize_t n = read(p->a, buf, want);
        if (n <= 0) {
            shutdown(p->b, SHUT_WR); /* end of stream travels on */
            break;
        }
        if (forward_frames(p, buf, (size_t)n) < 0 || (p->cut_at >= 0 && p->pos >= p->cut_at)) {
            /* Receiver gone, or the link is cut: both ends see it, as with
             * a reset TCP connection. */
            shutdown(p->a, SHUT_RDWR);
            shutdown(p->b, SHUT_RDWR);
            break;
        }
    }
    return NULL;
}

/* Receiver -> sender, untouched (but it stalls with the other direction). */
static void *proxy_back(void *arg)
{
    proxy *p = arg;
    uint8_t buf[16384];
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&p->stalled, __ATOMIC_ACQUIRE)) {
            usleep(10000);
            continue;
        }
        struct pollfd fd = {p->b, POLLIN, 0};
        if (poll(&fd, 1, 50) <= 0)
            continue;
        ssize_t n = read(p->b, buf, sizeof buf);
        if (n <= 0) {
            shutdown(p->a, SHUT_WR);
            break;
        }
        if (write_all(p->a, buf, (size_t)n) < 0) {
            shutdown(p->a, SHUT_RDWR);
            shutdown(p->b, SHUT_RDWR);
            break;
        }
    }
    return NULL;
}

/* ---- a session through proxies -------------------------------------------- */

typedef struct run {
    const char *chain;
    bool sealed;
    unsigned channels, rounds, npages;
    int sink_fail_after;     /* receiver's sink fails after this many pages */
    bool abort_midway;       /* the sender aborts after the first round */
    proxy px[TH_MAXCH];
    int tx_rc, rx_rc;
    char tx_msg[512], rx_msg[512];
    double secs;
} run;

static void run_init(run *r, unsigned channels, bool sealed)
{
    memset(r, 0, sizeof *r);
    r->chain = "zero,delta,lz4";
    r->sealed = sealed;
    r->channels = channels;
    r->rounds = 3;
    r->npages = 1200;
    for (unsigned i = 0; i < TH_MAXCH; i++) {
        proxy_init(&r->px[i]);
        r->px[i].skip = MS_HELLO_SIZE + (sealed ? 32 : 0);
    }
}

static int send_rounds(ms_sender *s, run *r, uint8_t *image, uint64_t *pfns)
{
    int rc = MS_OK;
    for (unsigned round = 0; round < r->rounds && rc == MS_OK; round++) {
        size_t n = round == 0 ? r->npages : r->npages / 5;
        for (size_t i = 0; i < n && rc == MS_OK; i += 100) {
            size_t k = n - i < 100 ? n - i : 100;
            for (size_t j = 0; j < k; j++)
                pfns[j] = (i + j) * (round ? 5 : 1) % r->npages;
            uint8_t *buf = malloc(k * MS_PAGE_SIZE);
            for (size_t j = 0; j < k; j++) {
                memcpy(buf + j * MS_PAGE_SIZE, image + pfns[j] * MS_PAGE_SIZE, MS_PAGE_SIZE);
                buf[j * MS_PAGE_SIZE + round] ^= 1;
            }
            rc = ms_sender_pages(s, round, 0, pfns, buf, k);
            free(buf);
        }
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, round);
        if (rc == MS_OK && r->abort_midway) {
            ms_sender_abort(s, "operator pressed ctrl-c");
            rc = ms_sender_pages(s, round + 1, 0, pfns, image, 1);
        }
    }
    return rc;
}

static void run_session(run *r)
{
    ms_conn *snd[TH_MAXCH];
    th_rx rx;
    th_sink sink;
    ms_sender *s = NULL;
    uint8_t *image = malloc((size_t)r->npages * MS_PAGE_SIZE);
    uint64_t *pfns = malloc(100 * sizeof *pfns);
    uint64_t t0 = ms_now_ns();
    int rc;

    for (size_t i = 0; i < r->npages; i++)
        th_fill_page(image + i * MS_PAGE_SIZE, i, 5);
    memset(&rx, 0, sizeof rx);
    th_sink_init(&sink);
    sink.fail_after_pages = r->sink_fail_after;
    rx.n = r->channels;
    for (unsigned i = 0; i < r->channels; i++) {
        int s1[2], s2[2];
        CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s1) == 0);
        CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s2) == 0);
        ms_fd_conn_new(s1[0], s1[0], true, &snd[i]);
        ms_fd_conn_new(s2[1], s2[1], true, &rx.conns[i]);
        r->px[i].a = s1[1];
        r->px[i].b = s2[0];
        pthread_create(&r->px[i].t, NULL, proxy_fwd, &r->px[i]);
        pthread_create(&r->px[i].t2, NULL, proxy_back, &r->px[i]);
    }
    ms_session_config cfg = {.workers = 2, .timeout_ms = FAULT_TIMEOUT_MS, .frame_pages = 32};
    ms_chain_parse(r->chain, &cfg.chain);
    cfg.key = r->sealed ? th_key_a : NULL;
    rx.cfg = cfg;
    rx.ops = &th_sink_ops;
    rx.ctx = &sink;
    th_rx_start(&rx);

    rc = ms_sender_open(&cfg, snd, r->channels, &s);
    if (rc == MS_OK)
        rc = send_rounds(s, r, image, pfns);
    if (rc == MS_OK)
        rc = ms_sender_finish(s);
    r->tx_rc = rc;
    snprintf(r->tx_msg, sizeof r->tx_msg, "%s", rc < 0 ? ms_last_error() : "");
    ms_sender_free(s);
    th_rx_join(&rx);
    r->rx_rc = rx.rc;
    snprintf(r->rx_msg, sizeof r->rx_msg, "%s", rx.msg);
    r->secs = (double)(ms_now_ns() - t0) / 1e9;
    for (unsigned i = 0; i < r->channels; i++) {
        __atomic_store_n(&r->px[i].stop, 1, __ATOMIC_RELEASE);
        pthread_join(r->px[i].t, NULL);
        pthread_join(r->px[i].t2, NULL);
        close(r->px[i].a);
        close(r->px[i].b);
        free(r->px[i].frame_copy);
    }
    /* Whatever failed, the sink never saw the session end as complete. */
    if (r->rx_rc < 0)
        CU_ASSERT_EQUAL(sink.ends, 0);
    ms_stats_free(&rx.stats);
    th_sink_free(&sink);
    free(image);
    free(pfns);
}

static void report(const char *what, const run *r)
{
    fprintf(stderr, "\n    %s: %.2f s\n      sender:   %s (%s)\n      receiver: %s (%s)", what, r->secs,
            ms_strerror(r->tx_rc), r->tx_msg, ms_strerror(r->rx_rc), r->rx_msg);
}

/* Both ends failed, in time, and the receiver with one of `codes`. */
static void expect_failure(const char *what, const run *r, const int *codes, size_t ncodes)
{
    bool known = false;
    report(what, r);
    CU_ASSERT(r->tx_rc < 0);
    CU_ASSERT(r->rx_rc < 0);
    for (size_t i = 0; i < ncodes; i++)
        known |= r->rx_rc == codes[i];
    CU_ASSERT(known);
    CU_ASSERT(r->secs < 3.0 * FAULT_TIMEOUT_MS / 1000.0 + 2.0);
}

/* ---- corruption in transit ------------------------------------------------ */

static void test_flip_byte(void)
{
    /* Offsets: inside the first frame's header, its body, and a later frame. */
    long offsets[] = {10, 60, 300, 70000, 200000};
    for (int sealed = 0; sealed < 2; sealed++)
        for (size_t i = 0; i < sizeof offsets / sizeof *offsets; i++) {
            run r;
            run_init(&r, 2, sealed);
            r.px[1].flip_at = r.px[1].skip + offsets[i];
            run_session(&r);
            int codes[] = {MS_ERR_CORRUPT, MS_ERR_HASH, MS_ERR_TAMPERED};
            char what[64];
            snprintf(what, sizeof what, "flip at %ld %s", offsets[i], sealed ? "sealed" : "plain");
            expect_failure(what, &r, codes, 3);
            if (sealed && offsets[i] >= 60 && r.rx_rc == MS_ERR_TAMPERED)
                th_expect_msg(r.rx_msg, "frame");
            /* The sender learns the receiver's reason. */
            if (r.tx_rc == MS_ERR_ABORTED)
                th_expect_msg(r.tx_msg, "receiver aborted");
        }
}

static void test_drop_chunk(void)
{
    run r;
    run_init(&r, 3, false);
    r.px[0].drop_at = r.px[0].skip + 5000;
    r.px[0].drop_len = 1000;
    run_session(&r);
    int codes[] = {MS_ERR_CORRUPT, MS_ERR_HASH};
    expect_failure("drop 1000 bytes", &r, codes, 2);
}

/* A whole frame dropped (frame 3 of channel 1) or sent twice (frame 2 of
 * channel 0), plain and sealed: the receiver must refuse with `code`, its
 * message containing `needle` (NULL: not checked). */
static void whole_frame_fault(bool drop, const char *what, int code, const char *needle)
{
    for (int sealed = 0; sealed < 2; sealed++) {
        run r;
        char label[64];
        run_init(&r, 2, sealed);
        if (drop)
            r.px[1].drop_frame = 3;
        else
            r.px[0].dup_frame = 2;
        run_session(&r);
        snprintf(label, sizeof label, "%s%s", what, sealed ? ", sealed" : "");
        expect_failure(label, &r, &code, 1);
        if (needle)
            th_expect_msg(r.rx_msg, needle);
    }
}

static void test_drop_frame(void) { whole_frame_fault(true, "drop a whole frame", MS_ERR_REORDER, "missing"); }
static void test_replay_frame(void) { whole_frame_fault(false, "frame sent twice", MS_ERR_REPLAY, NULL); }

/* ---- connection faults ------------------------------------------------------ */

static void test_connection_cut(void)
{
    long cuts[] = {30, 100000, 400000};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        run r;
        run_init(&r, 2, true);
        r.px[0].cut_at = r.px[0].skip + cuts[i];
        run_session(&r);
        int codes[] = {MS_ERR_TRUNCATED, MS_ERR_CLOSED, MS_ERR_ABORTED};
        expect_failure("connection cut", &r, codes, 3);
    }
}

static void test_stall_times_out(void)
{
    run r;
    run_init(&r, 2, false);
    r.px[1].stall_at = r.px[1].skip + 150000;
    run_session(&r);
    int codes[] = {MS_ERR_TIMEOUT, MS_ERR_ABORTED, MS_ERR_CLOSED};
    expect_failure("peer stops answering", &r, codes, 3);
    CU_ASSERT(r.tx_rc == MS_ERR_TIMEOUT || r.rx_rc == MS_ERR_TIMEOUT);
    CU_ASSERT(r.secs >= FAULT_TIMEOUT_MS / 1000.0 * 0.9);
}

static void test_sender_abort(void)
{
    run r;
    run_init(&r, 3, true);
    r.abort_midway = true;
    run_session(&r);
    int codes[] = {MS_ERR_ABORTED};
    expect_failure("sender aborts", &r, codes, 1);
    th_expect_msg(r.rx_msg, "ctrl-c");
}

static void test_receiver_sink_fails(void)
{
    run r;
    run_init(&r, 2, false);
    r.sink_fail_after = 500;
    run_session(&r);
    int codes[] = {MS_ERR_IO};
    expect_failure("receiver's disk fills", &r, codes, 1);
    CU_ASSERT_EQUAL(r.tx_rc, MS_ERR_ABORTED);
    th_expect_msg(r.tx_msg, "disk full");
}

/* The record cannot be written (disk full): the session fails with that
 * reason on both ends instead of silently losing the record. */
static void test_record_write_fails(void)
{
    ms_conn *snd[2], *rec;
    th_rx rx;
    th_sink sink;
    ms_sender *s;
    uint64_t pfns[64];
    uint8_t *buf = malloc(64 * MS_PAGE_SIZE);
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC), rc = MS_OK;
    if (fd < 0) {
        fprintf(stderr, "\n    no /dev/full: skipped");
        free(buf);
        return;
    }
    memset(&rx, 0, sizeof rx);
    th_sink_init(&sink);
    CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(-1, fd, true, &rec), MS_OK);
    CU_ASSERT_EQUAL_FATAL(th_link("fd", 2, snd, &rx), MS_OK);
    ms_session_config cfg = {.workers = 1, .timeout_ms = FAULT_TIMEOUT_MS};
    ms_chain_parse("lz4", &cfg.chain);
    rx.cfg = cfg;
    rx.ops = &th_sink_ops;
    rx.ctx = &sink;
    th_rx_start(&rx);
    cfg.record = rec;
    rc = ms_sender_open(&cfg, snd, 2, &s);
    for (int k = 0; k < 100 && rc == MS_OK; k++) {
        for (int i = 0; i < 64; i++) {
            pfns[i] = (uint64_t)k * 64 + (uint64_t)i;
            th_fill_page(buf + i * MS_PAGE_SIZE, pfns[i], 4);
        }
        rc = ms_sender_pages(s, 0, 0, pfns, buf, 64);
    }
    if (rc == MS_OK)
        rc = ms_sender_finish(s);
    fprintf(stderr, "\n    sender: %s (%s)", ms_strerror(rc), ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_ERR_IO);
    th_expect_msg(ms_last_error(), "record");
    ms_sender_free(s);
    th_rx_join(&rx);
    fprintf(stderr, "\n    receiver: %s (%s)", ms_strerror(rx.rc), rx.msg);
    CU_ASSERT_EQUAL(rx.rc, MS_ERR_ABORTED);
    th_expect_msg(rx.msg, "record");
    ms_conn_close(rec);
    ms_stats_free(&rx.stats);
    th_sink_free(&sink);
    free(buf);
}

/* ---- authentication and versions ------------------------------------------- */

typedef struct client_arg {
    uint16_t port;
    const uint8_t *key;
    int rc;
    char msg[512];
    bool raw_next_version;
} client_arg;

static void *client_main(void *arg)
{
    client_arg *ca = arg;
    char port[16];
    ms_conn *c;
    ms_sender *s;
    uint64_t pfn = 1;
    uint8_t page[MS_PAGE_SIZE] = {7};
    ms_tcp_options opt = {.timeout_ms = 3000};
    snprintf(port, sizeof port, "%u", ca->port);
    ca->rc = ms_tcp_connect("127.0.0.1", port, &opt, &c);
    if (ca->rc < 0)
        goto out;
    if (ca->raw_next_version) {
        /* A peer from the future: its hello says the next version. */
        ms_hello h = {.version = MS_WIRE_VERSION, .role = MS_ROLE_SENDER, .channels = 1, .page_size = 4096};
        uint8_t b[MS_HELLO_SIZE];
        strcpy(h.chain, "lz4:1");
        ms_hello_pack(&h, b);
        ms_put_le32(b + 8, MS_WIRE_VERSION + 1);
        ms_conn_send(c, b, sizeof b);
        ca->rc = ms_conn_recv(c, b, sizeof b, NULL);
        /* The listener answers with its own version so this peer can
         * report the mismatch; then it hangs up. */
        if (ca->rc == MS_OK && (ca->rc = ms_hello_unpack(b, &h)) == MS_OK)
            ca->rc = h.version == MS_WIRE_VERSION + 1 ? MS_OK : MS_ERR_VERSION;
        if (ms_conn_recv(c, b, 1, NULL) != MS_ERR_CLOSED)
            ca->rc = MS_ERR_INVAL;
        ms_conn_close(c);
        goto out;
    }
    ms_session_config cfg = {.workers = 1, .timeout_ms = 3000, .key = ca->key};
    ms_chain_parse("zero,lz4", &cfg.chain);
    ca->rc = ms_sender_open(&cfg, &c, 1, &s);
    if (ca->rc == MS_OK) {
        ca->rc = ms_sender_pages(s, 0, 0, &pfn, page, 1);
        if (ca->rc == MS_OK)
            ca->rc = ms_sender_round_end(s, 0);
        if (ca->rc == MS_OK)
            ca->rc = ms_sender_finish(s);
        if (ca->rc < 0)
            snprintf(ca->msg, sizeof ca->msg, "%s", ms_last_error());
        ms_sender_free(s);
        return NULL;
    }
out:
    snprintf(ca->msg, sizeof ca->msg, "%s", ca->rc < 0 ? ms_last_error() : "");
    return NULL;
}

/* Intruders (wrong key, other version) are dropped and logged; the
 * legitimate sender that comes after them still gets through. */
static void test_wrong_key_and_version_then_legit(void)
{
    th_rx rx;
    th_sink sink;
    ms_tcp_options opt = {.timeout_ms = 3000};
    client_arg bad = {.key = th_key_b}, old = {.raw_next_version = true}, good = {.key = th_key_a};
    pthread_t t;

    memset(&rx, 0, sizeof rx);
    th_sink_init(&sink);
    CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("127.0.0.1", "0", &opt, &rx.l), MS_OK);
    rx.cfg = (ms_session_config){.workers = 1, .timeout_ms = 3000, .key = th_key_a};
    rx.ops = &th_sink_ops;
    rx.ctx = &sink;
    th_rx_start(&rx);
    bad.port = old.port = good.port = rx.l->port;

    pthread_create(&t, NULL, client_main, &bad);
    pthread_join(t, NULL);
    fprintf(stderr, "\n    wrong key: %s (%s)", ms_strerror(bad.rc), bad.msg);
    CU_ASSERT_EQUAL(bad.rc, MS_ERR_AUTH);
    pthread_create(&t, NULL, client_main, &old);
    pthread_join(t, NULL);
    fprintf(stderr, "\n    next-version peer sees: %s", ms_strerror(old.rc));
    /* (MS_ERR_VERSION here means: answered with another version, then closed.) */
    CU_ASSERT_EQUAL(old.rc, MS_ERR_VERSION);
    pthread_create(&t, NULL, client_main, &good);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(good.rc, MS_OK);
    th_rx_join(&rx);
    CU_ASSERT_EQUAL(rx.rc, MS_OK);
    CU_ASSERT_EQUAL(sink.pages, 1);
    ms_stats_free(&rx.stats);
    th_sink_free(&sink);
}

/* The sender side of a version mismatch: a receiver answering with the
 * next version is refused with MS_ERR_VERSION. */
static void *future_server(void *arg)
{
    ms_conn *c = arg;
    uint8_t b[MS_HELLO_SIZE];
    ms_hello h = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
    if (ms_conn_recv(c, b, sizeof b, NULL) == MS_OK) {
        ms_hello_pack(&h, b);
        ms_put_le32(b + 8, MS_WIRE_VERSION + 1);
        ms_conn_send(c, b, sizeof b);
    }
    return NULL;
}

static void test_sender_sees_version_mismatch(void)
{
    int sv[2];
    ms_conn *a, *b;
    ms_sender *s;
    pthread_t t;
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    ms_fd_conn_new(sv[0], sv[0], true, &a);
    ms_fd_conn_new(sv[1], sv[1], true, &b);
    pthread_create(&t, NULL, future_server, b);
    ms_session_config cfg = {.workers = 1, .timeout_ms = 2000};
    ms_chain_parse("lz4", &cfg.chain);
    int rc = ms_sender_open(&cfg, &a, 1, &s);
    pthread_join(t, NULL);
    fprintf(stderr, "\n    %s", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_ERR_VERSION);
    th_expect_msg(ms_last_error(), "version 3");
    ms_conn_close(b);
}

/* A listener reachable from other hosts needs a key or an explicit
 * --insecure. */
static void test_open_listener_needs_key(void)
{
    ms_listener *l;
    ms_accepted a;
    ms_tcp_options opt = {.timeout_ms = 1000};
    CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("0.0.0.0", "0", &opt, &l), MS_OK);
    CU_ASSERT_FALSE(l->loopback_only);
    ms_session_config cfg = {.timeout_ms = 1000};
    CU_ASSERT_EQUAL(ms_accept_session(l, &cfg, 100, &a), MS_ERR_INVAL);
    th_expect_msg(ms_last_error(), "--insecure");
    cfg.insecure = true;
    CU_ASSERT_EQUAL(ms_accept_session(l, &cfg, 100, &a), MS_ERR_TIMEOUT);
    cfg.insecure = false;
    cfg.key = th_key_a;
    CU_ASSERT_EQUAL(ms_accept_session(l, &cfg, 100, &a), MS_ERR_TIMEOUT);
    ms_listener_close(l);
}

/* ---- killed processes --------------------------------------------------------- */

/* A forked child must not outlive the test if the test itself is killed
 * (a meson timeout, ^C). */
static void die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(9);
}

/* Child: a sender that streams rounds forever to port; it is killed. */
static void child_sender(uint16_t port)
{
    char p[16];
    ms_conn *c[2];
    ms_sender *s;
    ms_tcp_options opt = {.timeout_ms = 3000};
    uint64_t pfns[64];
    uint8_t *buf = malloc(64 * MS_PAGE_SIZE);
    snprintf(p, sizeof p, "%u", port);
    for (int i = 0; i < 2; i++)
        if (ms_tcp_connect("127.0.0.1", p, &opt, &c[i]) < 0)
            _exit(2);
    ms_session_config cfg = {.workers = 1, .timeout_ms = FAULT_TIMEOUT_MS};
    ms_chain_parse("zero,lz4", &cfg.chain);
    if (ms_sender_open(&cfg, c, 2, &s) < 0)
        _exit(3);
    for (uint32_t round = 0;; round++) {
        for (int k = 0; k < 64; k++) {
            for (int i = 0; i < 64; i++) {
                pfns[i] = (uint64_t)k * 64 + (uint64_t)i;
                th_fill_page(buf + i * MS_PAGE_SIZE, pfns[i] + round, 1);
            }
            if (ms_sender_pages(s, round, 0, pfns, buf, 64) < 0)
                _exit(4);
        }
        if (ms_sender_round_end(s, round) < 0)
            _exit(5);
    }
}

static void test_sender_killed(void)
{
    th_rx rx;
    th_sink sink;
    ms_tcp_options opt = {.timeout_ms = FAULT_TIMEOUT_MS};
    memset(&rx, 0, sizeof rx);
    th_sink_init(&sink);
    CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("127.0.0.1", "0", &opt, &rx.l), MS_OK);
    rx.cfg = (ms_session_config){.workers = 1, .timeout_ms = FAULT_TIMEOUT_MS};
    rx.ops = &th_sink_ops;
    rx.ctx = &sink;
    uint16_t port = rx.l->port;
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        die_with_parent(parent);
        child_sender(port);
    }
    th_rx_start(&rx);
    /* Let it get going, then kill it in the middle of a round. */
    while (th_sink_round_ends(&sink) < 2)
        usleep(1000);
    usleep(20000);
    uint64_t t0 = ms_now_ns();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    th_rx_join(&rx);
    double secs = (double)(ms_now_ns() - t0) / 1e9;
    fprintf(stderr, "\n    receiver after sender kill: %s (%s), %.2f s", ms_strerror(rx.rc), rx.msg, secs);
    CU_ASSERT(rx.rc == MS_ERR_TRUNCATED || rx.rc == MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(sink.ends, 0);
    CU_ASSERT(secs < 1.0);
    ms_stats_free(&rx.stats);
    th_sink_free(&sink);
}

static void test_receiver_killed(void)
{
    ms_listener *l;
    ms_tcp_options opt = {.timeout_ms = FAULT_TIMEOUT_MS};
    CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("127.0.0.1", "0", &opt, &l), MS_OK);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        die_with_parent(parent);
        th_sink sink;
        ms_accepted a;
        th_sink_init(&sink);
        ms_session_config cfg = {.workers = 1, .timeout_ms = FAULT_TIMEOUT_MS};
        if (ms_accept_session(l, &cfg, 5000, &a) == MS_OK)
            ms_receiver_run(&cfg, &a.hello, a.conns, a.keys, a.nconns, &th_sink_ops, &sink, NULL);
        _exit(0);
    }
    char p[16];
    ms_conn *c[3];
    ms_sender *s;
    uint64_t pfns[64];
    uint8_t *buf = malloc(64 * MS_PAGE_SIZE);
    int rc = MS_OK;
    snprintf(p, sizeof p, "%u", l->port);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(ms_tcp_connect("127.0.0.1", p, &opt, &c[i]), MS_OK);
    ms_session_config cfg = {.workers = 2, .timeout_ms = FAULT_TIMEOUT_MS};
    ms_chain_parse("zero,delta,lz4", &cfg.chain);
    CU_ASSERT_EQUAL_FATAL(ms_sender_open(&cfg, c, 3, &s), MS_OK);
    uint64_t t0 = 0;
    for (uint32_t round = 0; rc == MS_OK && round < 1000; round++) {
        for (int k = 0; k < 32 && rc == MS_OK; k++) {
            for (int i = 0; i < 64; i++) {
                pfns[i] = (uint64_t)k * 64 + (uint64_t)i;
                th_fill_page(buf + i * MS_PAGE_SIZE, pfns[i] + round, 2);
            }
            rc = ms_sender_pages(s, round, 0, pfns, buf, 64);
            if (round == 3 && k == 10) {
                t0 = ms_now_ns();
                kill(pid, SIGKILL);
            }
        }
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, round);
    }
    if (rc == MS_OK)
        rc = ms_sender_finish(s);
    double secs = (double)(ms_now_ns() - t0) / 1e9;
    fprintf(stderr, "\n    sender after receiver kill: %s (%s), %.2f s", ms_strerror(rc), ms_last_error(), secs);
    CU_ASSERT(rc == MS_ERR_CLOSED || rc == MS_ERR_IO);
    CU_ASSERT(secs < 1.0);
    ms_sender_free(s);
    waitpid(pid, NULL, 0);
    ms_listener_close(l);
    free(buf);
}

MS_TEST_MAIN({
    signal(SIGPIPE, SIG_IGN);
    static const ms_test_case cases[] = {
        {"a byte flipped in transit", test_flip_byte},
        {"a chunk dropped in transit", test_drop_chunk},
        {"a whole frame dropped", test_drop_frame},
        {"a frame sent twice", test_replay_frame},
        {"connection cut mid-stream", test_connection_cut},
        {"peer stops answering", test_stall_times_out},
        {"sender aborts with a reason", test_sender_abort},
        {"receiver's sink fails", test_receiver_sink_fails},
        {"the record cannot be written", test_record_write_fails},
        {"wrong key and old version dropped, legit peer served", test_wrong_key_and_version_then_legit},
        {"sender sees a version mismatch", test_sender_sees_version_mismatch},
        {"open listener needs a key", test_open_listener_needs_key},
        {"sender killed mid-stream", test_sender_killed},
        {"receiver killed mid-stream", test_receiver_killed},
        {NULL, NULL},
    };
    ms_test_add_suite("faults", cases);
})
