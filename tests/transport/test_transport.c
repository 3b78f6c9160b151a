/* Transport tests: the fd connection over pipes, socketpairs and files, the
 * TCP transport on loopback (IPv4, IPv6, 1..8 parallel connections), the
 * errors a caller sees when a peer is missing, silent or killed, and the
 * rate limiter's non-timing behaviour. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <xxhash.h>

#include "tcp/tcp.h"
#include "tests/ms_test.h"
#include "transport/transport.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint8_t *pattern(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n);
    CU_ASSERT_FATAL(p != NULL);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = splitmix(&seed);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
    return p;
}

static double elapsed_ms(uint64_t t0) { return (double)(ms_now_ns() - t0) / 1e6; }

/* Send buf as a long run of iovecs of pseudo-random sizes (including empty
 * ones), more than one writev window at a time. */
static int send_scattered(ms_conn *c, const uint8_t *buf, size_t len, uint64_t seed)
{
    enum { BATCH = 300 };
    struct iovec iov[BATCH];
    size_t off = 0;
    while (off < len) {
        int n = 0;
        while (n < BATCH && off < len) {
            size_t sz = (size_t)(splitmix(&seed) % 9000);
            if (n % 17 == 5)
                sz = 0;
            if (sz > len - off)
                sz = len - off;
            iov[n++] = (struct iovec){(void *)(buf + off), sz};
            off += sz;
        }
        int rc = ms_conn_sendv(c, iov, n);
        if (rc < 0)
            return rc;
    }
    return MS_OK;
}

static int recv_chunked(ms_conn *c, uint8_t *buf, size_t len, uint64_t seed)
{
    size_t off = 0;
    while (off < len) {
        size_t sz = 1 + (size_t)(splitmix(&seed) % 100000);
        if (sz > len - off)
            sz = len - off;
        size_t got = 0;
        int rc = ms_conn_recv(c, buf + off, sz, &got);
        if (rc < 0)
            return rc;
        if (got != sz)
            return -100;
        off += sz;
    }
    return MS_OK;
}

typedef struct sender_arg {
    ms_conn *c;
    const uint8_t *buf;
    size_t len;
    uint64_t seed;
    bool close_after;
    int rc;
    char err[256];
} sender_arg;

static void *sender_main(void *p)
{
    sender_arg *a = p;
    a->rc = send_scattered(a->c, a->buf, a->len, a->seed);
    if (a->rc < 0)
        snprintf(a->err, sizeof(a->err), "%s", ms_last_error());
    if (a->close_after)
        ms_conn_close(a->c);
    return NULL;
}

static bool is_nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

/* ---- fd connection ------------------------------------------------------ */

/* A pipe holds 64 KiB: every send and receive here is partial many times. */
static void test_fd_pipe_stream(void)
{
    const size_t len = 4u << 20;
    uint8_t *src = pattern(len, 1), *dst = malloc(len);
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    ms_conn *rc_ = NULL, *wc = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], -1, true, &rc_) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, p[1], true, &wc) == MS_OK);
    CU_ASSERT_STRING_EQUAL(rc_->ops->name, "fd");

    sender_arg a = {.c = wc, .buf = src, .len = len, .seed = 7, .close_after = true};
    pthread_t th;
    pthread_create(&th, NULL, sender_main, &a);
    int rc = recv_chunked(rc_, dst, len, 9);
    CU_ASSERT_EQUAL(rc, MS_OK);
    /* The writer closed after the last byte: a clean end between records. */
    uint8_t extra[16];
    size_t got = 99;
    CU_ASSERT_EQUAL(ms_conn_recv(rc_, extra, sizeof(extra), &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 0);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(a.rc, MS_OK);
    CU_ASSERT(memcmp(src, dst, len) == 0);
    CU_ASSERT_EQUAL(rc_->bytes_recv, len);
    ms_conn_close(rc_);
    free(src);
    free(dst);
}

typedef struct duplex_arg {
    ms_conn *c;
    uint8_t *buf;
    size_t len;
    int rc;
} duplex_arg;

static void *duplex_recv(void *p)
{
    duplex_arg *a = p;
    a->rc = recv_chunked(a->c, a->buf, a->len, 3);
    return NULL;
}

/* One socket carries both directions at once, from two threads. */
static void test_fd_socketpair_duplex(void)
{
    const size_t len = 2u << 20;
    uint8_t *s0 = pattern(len, 10), *s1 = pattern(len, 11);
    uint8_t *d0 = malloc(len), *d1 = malloc(len);
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ms_conn *c0 = NULL, *c1 = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[0], sv[0], true, &c0) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[1], sv[1], true, &c1) == MS_OK);

    sender_arg a0 = {.c = c0, .buf = s0, .len = len, .seed = 1};
    sender_arg a1 = {.c = c1, .buf = s1, .len = len, .seed = 2};
    duplex_arg r0 = {.c = c0, .buf = d1, .len = len}, r1 = {.c = c1, .buf = d0, .len = len};
    pthread_t t[4];
    pthread_create(&t[0], NULL, sender_main, &a0);
    pthread_create(&t[1], NULL, sender_main, &a1);
    pthread_create(&t[2], NULL, duplex_recv, &r0);
    pthread_create(&t[3], NULL, duplex_recv, &r1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(a0.rc, MS_OK);
    CU_ASSERT_EQUAL(a1.rc, MS_OK);
    CU_ASSERT_EQUAL(r0.rc, MS_OK);
    CU_ASSERT_EQUAL(r1.rc, MS_OK);
    CU_ASSERT(memcmp(s0, d0, len) == 0);
    CU_ASSERT(memcmp(s1, d1, len) == 0);

    /* Half-close: the peer sees a clean end of stream, and can still send. */
    CU_ASSERT_EQUAL(c0->ops->shutdown_send(c0), MS_OK);
    uint8_t x[4];
    size_t got = 5;
    CU_ASSERT_EQUAL(ms_conn_recv(c1, x, sizeof(x), &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 0);
    CU_ASSERT_EQUAL(ms_conn_send(c1, "back", 4), MS_OK);
    CU_ASSERT_EQUAL(ms_conn_recv(c0, x, 4, &got), MS_OK);
    CU_ASSERT(memcmp(x, "back", 4) == 0);

    ms_conn_close(c0);
    ms_conn_close(c1);
    free(s0), free(s1), free(d0), free(d1);
}

/* A regular file is written and read back through blocking I/O. */
static void test_fd_regular_file(void)
{
    const size_t len = 1u << 20;
    uint8_t *src = pattern(len, 20), *dst = malloc(len + 100);
    char path[] = "/tmp/ms-transport-XXXXXX";
    int wfd = mkstemp(path);
    CU_ASSERT_FATAL(wfd >= 0);
    unlink(path);
    int fl = fcntl(wfd, F_GETFL);
    ms_conn *w = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, wfd, false, &w) == MS_OK);
    CU_ASSERT_EQUAL(fcntl(wfd, F_GETFL), fl); /* files stay blocking */
    CU_ASSERT_EQUAL(send_scattered(w, src, len, 5), MS_OK);
    CU_ASSERT_EQUAL(w->ops->shutdown_send(w), MS_OK);
    CU_ASSERT_EQUAL(w->bytes_sent, len);
    ms_conn_close(w);

    CU_ASSERT_FATAL(lseek(wfd, 0, SEEK_SET) == 0);
    ms_conn *r = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(wfd, -1, true, &r) == MS_OK);
    CU_ASSERT_EQUAL(recv_chunked(r, dst, len - 1000, 8), MS_OK);
    /* Ask for more than is left: the tail arrives and *got says how much. */
    size_t got = 0;
    CU_ASSERT_EQUAL(ms_conn_recv(r, dst + len - 1000, 1100, &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 1000);
    CU_ASSERT(strstr(ms_last_error(), "1000 of 1100") != NULL);
    CU_ASSERT(memcmp(src, dst, len) == 0);
    ms_conn_close(r);
    free(src);
    free(dst);
}

typedef struct drip_arg {
    int fd;
    size_t total, step;
} drip_arg;

static void *drip_main(void *p)
{
    drip_arg *a = p;
    for (size_t off = 0; off < a->total; off += a->step) {
        char b[64];
        memset(b, (int)(off / a->step), a->step);
        if (write(a->fd, b, a->step) != (ssize_t)a->step)
            break;
        usleep(1000);
    }
    close(a->fd);
    return NULL;
}

/* recv returns only when the whole request is there, however it trickles. */
static void test_fd_partial_reads(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    ms_conn *r = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], -1, true, &r) == MS_OK);
    drip_arg d = {.fd = p[1], .total = 500, .step = 10};
    pthread_t th;
    pthread_create(&th, NULL, drip_main, &d);
    uint8_t buf[500];
    size_t got = 0;
    CU_ASSERT_EQUAL(ms_conn_recv(r, buf, 300, &got), MS_OK);
    CU_ASSERT_EQUAL(got, 300);
    for (int i = 0; i < 30; i++)
        CU_ASSERT_EQUAL(buf[i * 10 + 9], (uint8_t)i);
    /* The writer stops at 500: asking for 250 more ends 200 bytes in. */
    CU_ASSERT_EQUAL(ms_conn_recv(r, buf, 250, &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 200);
    CU_ASSERT_EQUAL(buf[199], 49);
    pthread_join(th, NULL);
    ms_conn_close(r);
}

static void test_fd_eof_boundary_vs_mid(void)
{
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ms_conn *a = NULL, *b = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[0], sv[0], true, &a) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[1], sv[1], true, &b) == MS_OK);
    uint8_t rec[100], buf[150];
    memset(rec, 0xab, sizeof(rec));
    CU_ASSERT_EQUAL(ms_conn_send(a, rec, 100), MS_OK);
    CU_ASSERT_EQUAL(ms_conn_send(a, rec, 100), MS_OK);
    ms_conn_close(a);
    size_t got = 0;
    CU_ASSERT_EQUAL(ms_conn_recv(b, buf, 100, &got), MS_OK);
    CU_ASSERT_EQUAL(got, 100);
    /* mid-read: 100 bytes remain, 150 asked */
    CU_ASSERT_EQUAL(ms_conn_recv(b, buf, 150, &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 100);
    CU_ASSERT_EQUAL(ms_last_code(), MS_ERR_CLOSED);
    /* at a boundary: nothing at all */
    CU_ASSERT_EQUAL(ms_conn_recv(b, buf, 10, &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 0);
    CU_ASSERT_EQUAL(ms_conn_recv(b, buf, 10, NULL), MS_ERR_CLOSED);
    /* zero-length requests succeed without touching the fd */
    CU_ASSERT_EQUAL(ms_conn_recv(b, buf, 0, &got), MS_OK);
    ms_conn_close(b);
}

static void test_fd_recv_timeout(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    ms_conn *r = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], -1, true, &r) == MS_OK);
    r->timeout_ms = 200;
    CU_ASSERT_EQUAL(write(p[1], "abc", 3), 3);
    uint8_t buf[10];
    size_t got = 0;
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_conn_recv(r, buf, 10, &got), MS_ERR_TIMEOUT);
    double ms = elapsed_ms(t0);
    CU_ASSERT_EQUAL(got, 3);
    CU_ASSERT(ms >= 190 && ms < 1000);
    CU_ASSERT(strstr(ms_last_error(), "no progress receiving for 200 ms") != NULL);
    CU_ASSERT(strstr(ms_last_error(), "3 of 10") != NULL);
    ms_conn_close(r);
    close(p[1]);
}

static void test_fd_send_timeout(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    ms_conn *w = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, p[1], true, &w) == MS_OK);
    w->timeout_ms = 200;
    const size_t len = 1u << 20;
    uint8_t *buf = pattern(len, 4);
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_conn_send(w, buf, len), MS_ERR_TIMEOUT);
    double ms = elapsed_ms(t0);
    CU_ASSERT(ms >= 190 && ms < 1000);
    CU_ASSERT(w->bytes_sent > 0 && w->bytes_sent < len); /* the pipe took some */
    CU_ASSERT(strstr(ms_last_error(), "no progress sending") != NULL);
    ms_conn_close(w);
    close(p[0]);
    free(buf);
}

/* Without MSG_NOSIGNAL / SIGPIPE handling this would kill the test. */
static void test_fd_send_reader_gone(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    close(p[0]);
    ms_conn *w = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, p[1], true, &w) == MS_OK);
    CU_ASSERT_EQUAL(ms_conn_send(w, "x", 1), MS_ERR_CLOSED);
    ms_conn_close(w);
    sigset_t pend;
    sigpending(&pend);
    CU_ASSERT(!sigismember(&pend, SIGPIPE));

    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    CU_ASSERT_FATAL(ms_fd_conn_new(sv[0], sv[0], true, &w) == MS_OK);
    CU_ASSERT_EQUAL(ms_conn_send(w, "x", 1), MS_ERR_CLOSED);
    ms_conn_close(w);
}

/* Borrowed fds are handed back as they came: open, blocking. */
static void test_fd_flags_restored(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    ms_conn *c = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], p[1], false, &c) == MS_OK);
    CU_ASSERT(is_nonblocking(p[0]) && is_nonblocking(p[1]));
    CU_ASSERT_EQUAL(ms_conn_send(c, "hello", 5), MS_OK);
    char b[5];
    CU_ASSERT_EQUAL(ms_conn_recv(c, b, 5, NULL), MS_OK);
    /* Not owned: a pipe cannot be half-closed without closing the caller's fd. */
    CU_ASSERT_EQUAL(c->ops->shutdown_send(c), MS_ERR_UNSUPPORTED);
    ms_conn_close(c);
    CU_ASSERT(fcntl(p[0], F_GETFD) >= 0 && fcntl(p[1], F_GETFD) >= 0);
    CU_ASSERT(!is_nonblocking(p[0]) && !is_nonblocking(p[1]));
    close(p[0]);
    close(p[1]);
}

static void test_fd_bad_use(void)
{
    ms_conn *c = NULL;
    CU_ASSERT_EQUAL(ms_fd_conn_new(-1, -1, true, &c), MS_ERR_INVAL);
    CU_ASSERT(c == NULL);
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    CU_ASSERT_FATAL(ms_fd_conn_new(p[0], -1, true, &c) == MS_OK);
    CU_ASSERT_EQUAL(ms_conn_send(c, "x", 1), MS_ERR_INVAL);
    ms_conn_close(c);
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, p[1], true, &c) == MS_OK);
    char b;
    CU_ASSERT_EQUAL(ms_conn_recv(c, &b, 1, NULL), MS_ERR_INVAL);
    /* An owned pipe write end is closed by shutdown_send: the reader sees EOF. */
    ms_conn *r = NULL;
    int q[2];
    CU_ASSERT_FATAL(pipe(q) == 0);
    ms_conn *w = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(-1, q[1], true, &w) == MS_OK);
    CU_ASSERT_FATAL(ms_fd_conn_new(q[0], -1, true, &r) == MS_OK);
    CU_ASSERT_EQUAL(w->ops->shutdown_send(w), MS_OK);
    size_t got = 1;
    CU_ASSERT_EQUAL(ms_conn_recv(r, &b, 1, &got), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(got, 0);
    ms_conn_close(w);
    ms_conn_close(r);
    ms_conn_close(c);
}

/* ---- rate limiter (timing-free part) ------------------------------------ */

static void test_ratelimit_unlimited(void)
{
    ms_ratelimit *rl = ms_ratelimit_new(0);
    CU_ASSERT_FATAL(rl != NULL);
    uint64_t t0 = ms_now_ns();
    for (int i = 0; i < 1000; i++)
        ms_ratelimit_take(rl, 1ull << 30);
    CU_ASSERT(elapsed_ms(t0) < 100);
    ms_ratelimit_free(rl);
    ms_ratelimit_take(NULL, 100); /* no limiter configured: no wait */
    ms_ratelimit_free(NULL);
}

/* ---- TCP ---------------------------------------------------------------- */

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* A port nothing listens on (bound once, then released). */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

typedef struct tcp_peer {
    const char *host;
    char port[16];
    int index;
    size_t len;
    uint64_t hash;
    int rc;
    char err[256];
} tcp_peer;

/* Connects, sends its index then `len` pattern bytes, records their hash. */
static void *tcp_sender_main(void *p)
{
    tcp_peer *a = p;
    ms_conn *c = NULL;
    uint8_t *buf = pattern(a->len, 100 + (uint64_t)a->index);
    a->hash = XXH3_64bits(buf, a->len);
    a->rc = ms_tcp_connect(a->host, a->port, NULL, &c);
    if (a->rc == MS_OK) {
        uint8_t idx = (uint8_t)a->index;
        struct iovec iov[2] = {{&idx, 1}, {buf, a->len}};
        a->rc = ms_conn_sendv(c, iov, 2);
    }
    if (a->rc < 0)
        snprintf(a->err, sizeof(a->err), "%s", ms_last_error());
    ms_conn_close(c);
    free(buf);
    return NULL;
}

typedef struct tcp_sink {
    ms_conn *c;
    size_t len;
    int index;
    uint64_t hash;
    int rc;
} tcp_sink;

static void *tcp_sink_main(void *p)
{
    tcp_sink *s = p;
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    uint8_t idx, *buf = malloc(65536);
    s->rc = ms_conn_recv(s->c, &idx, 1, NULL);
    s->index = idx;
    for (size_t off = 0; s->rc == MS_OK && off < s->len;) {
        size_t n = s->len - off < 65536 ? s->len - off : 65536;
        s->rc = ms_conn_recv(s->c, buf, n, NULL);
        XXH3_64bits_update(st, buf, n);
        off += n;
    }
    /* The sender closes after its data: a clean end must follow. */
    size_t got = 1;
    if (s->rc == MS_OK && ms_conn_recv(s->c, buf, 1, &got) != MS_ERR_CLOSED)
        s->rc = -100;
    s->hash = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    free(buf);
    return NULL;
}

/* n connections carry data at the same time; each stream arrives intact. */
static void run_parallel(const char *host, int n, size_t len)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen(host, "0", NULL, &l) == MS_OK);
    tcp_peer peers[8];
    tcp_sink sinks[8];
    pthread_t st[8], rt[8];
    for (int i = 0; i < n; i++) {
        peers[i] = (tcp_peer){.host = host, .index = i, .len = len};
        snprintf(peers[i].port, sizeof(peers[i].port), "%u", l->port);
        pthread_create(&st[i], NULL, tcp_sender_main, &peers[i]);
    }
    int accepted = 0;
    for (int i = 0; i < n; i++) {
        ms_conn *c = NULL;
        int rc = ms_listener_accept(l, &c, 5000);
        CU_ASSERT_EQUAL(rc, MS_OK);
        if (rc < 0)
            break;
        CU_ASSERT_STRING_EQUAL(c->ops->name, "tcp");
        sinks[i] = (tcp_sink){.c = c, .len = len};
        pthread_create(&rt[i], NULL, tcp_sink_main, &sinks[i]);
        accepted++;
    }
    for (int i = 0; i < n; i++)
        pthread_join(st[i], NULL);
    for (int i = 0; i < accepted; i++) {
        pthread_join(rt[i], NULL);
        CU_ASSERT_EQUAL(sinks[i].rc, MS_OK);
        int idx = sinks[i].index;
        CU_ASSERT_FATAL(idx >= 0 && idx < n);
        CU_ASSERT_EQUAL(sinks[i].hash, peers[idx].hash);
        CU_ASSERT_EQUAL(sinks[i].c->bytes_recv, len + 1);
        ms_conn_close(sinks[i].c);
    }
    for (int i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(peers[i].rc, MS_OK);
        if (peers[i].rc)
            fprintf(stderr, "sender %d: %s\n", i, peers[i].err);
    }
    ms_listener_close(l);
}

static void test_tcp_loopback_ipv4(void)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen("127.0.0.1", "0", NULL, &l) == MS_OK);
    CU_ASSERT(l->port != 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", l->port);
    CU_ASSERT_STRING_EQUAL(l->addr, want);
    ms_listener_close(l);
    run_parallel("127.0.0.1", 1, 8u << 20);
}

static void test_tcp_loopback_ipv6(void)
{
    if (!have_ipv6_loopback()) {
        printf("\n    SKIP: ::1 is not available on this host (IPv6 disabled)\n");
        return;
    }
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen("[::1]", "0", NULL, &l) == MS_OK);
    CU_ASSERT(l->loopback_only);
    char want[64];
    snprintf(want, sizeof(want), "[::1]:%u", l->port);
    CU_ASSERT_STRING_EQUAL(l->addr, want);
    ms_listener_close(l);
    run_parallel("::1", 1, 8u << 20);
    run_parallel("[::1]", 3, 1u << 20);
}

static void test_tcp_parallel_1_to_8(void)
{
    for (int n = 1; n <= 8; n++)
        run_parallel("127.0.0.1", n, 2u << 20);
}

static void test_tcp_connect_refused(void)
{
    unsigned port = free_port();
    char ps[16], want[64];
    snprintf(ps, sizeof(ps), "%u", port);
    ms_conn *c = NULL;
    CU_ASSERT_EQUAL(ms_tcp_connect("127.0.0.1", ps, NULL, &c), MS_ERR_IO);
    CU_ASSERT(c == NULL);
    snprintf(want, sizeof(want), "127.0.0.1:%u: connection refused", port);
    CU_ASSERT_STRING_EQUAL(ms_last_error(), want);

    ms_tcp_options o = {.connect_retries = 2};
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_tcp_connect("127.0.0.1", ps, &o, &c), MS_ERR_IO);
    CU_ASSERT(elapsed_ms(t0) < 2000);
    CU_ASSERT(strstr(ms_last_error(), "connection refused (3 attempts)") != NULL);

    CU_ASSERT_EQUAL(ms_tcp_connect("127.0.0.1", "no-such-service", NULL, &c), MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "127.0.0.1:no-such-service: cannot resolve") != NULL);
    CU_ASSERT_EQUAL(ms_tcp_connect("", "1", NULL, &c), MS_ERR_INVAL);
}

typedef struct late_listener {
    char port[16];
    ms_listener *l;
    int rc;
} late_listener;

static void *late_listen_main(void *p)
{
    late_listener *a = p;
    usleep(150 * 1000);
    a->rc = ms_tcp_listen("127.0.0.1", a->port, NULL, &a->l);
    return NULL;
}

/* The receiver may come up after the sender starts: retries cover it. */
static void test_tcp_connect_retries_until_listening(void)
{
    late_listener a = {.l = NULL};
    snprintf(a.port, sizeof(a.port), "%u", free_port());
    pthread_t th;
    pthread_create(&th, NULL, late_listen_main, &a);
    ms_tcp_options o = {.connect_retries = 20};
    ms_conn *c = NULL;
    int rc = ms_tcp_connect("127.0.0.1", a.port, &o, &c);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(a.rc, MS_OK);
    CU_ASSERT_EQUAL(rc, MS_OK);
    ms_conn *s = NULL;
    if (rc == MS_OK && a.rc == MS_OK) {
        CU_ASSERT_EQUAL(ms_listener_accept(a.l, &s, 2000), MS_OK);
        CU_ASSERT_EQUAL(ms_conn_send(c, "ping", 4), MS_OK);
        char b[4];
        CU_ASSERT_EQUAL(ms_conn_recv(s, b, 4, NULL), MS_OK);
        CU_ASSERT(memcmp(b, "ping", 4) == 0);
    }
    ms_conn_close(s);
    ms_conn_close(c);
    ms_listener_close(a.l);
}

static void test_tcp_listener_loopback_only(void)
{
    static const struct {
        const char *host;
        bool loopback, v6;
    } cases[] = {
        {"127.0.0.1", true, false}, {"127.0.0.2", true, false}, {"0.0.0.0", false, false},
        {NULL, false, false},       {"", false, false},         {"localhost", true, false},
        {"::1", true, true},        {"[::1]", true, true},      {"::", false, true},
    };
    bool v6 = have_ipv6_loopback();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].v6 && !v6)
            continue;
        ms_listener *l = NULL;
        int rc = ms_tcp_listen(cases[i].host, "0", NULL, &l);
        CU_ASSERT_EQUAL(rc, MS_OK);
        if (rc < 0) {
            fprintf(stderr, "listen %s: %s\n", cases[i].host, ms_last_error());
            continue;
        }
        if (l->loopback_only != cases[i].loopback)
            fprintf(stderr, "listen %s: loopback_only=%d (%s)\n", cases[i].host ? cases[i].host : "NULL",
                    l->loopback_only, l->addr);
        CU_ASSERT_EQUAL(l->loopback_only, cases[i].loopback);
        ms_listener_close(l);
    }
    /* All addresses: both families on one port, reachable over each. */
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen(NULL, "0", NULL, &l) == MS_OK);
    char ps[16];
    snprintf(ps, sizeof(ps), "%u", l->port);
    const char *targets[] = {"127.0.0.1", "::1"};
    for (int i = 0; i < (v6 ? 2 : 1); i++) {
        ms_conn *c = NULL, *s = NULL;
        CU_ASSERT_EQUAL(ms_tcp_connect(targets[i], ps, NULL, &c), MS_OK);
        CU_ASSERT_EQUAL(ms_listener_accept(l, &s, 2000), MS_OK);
        ms_conn_close(c);
        ms_conn_close(s);
    }
    ms_listener_close(l);
}

static void test_tcp_listen_errors(void)
{
    ms_listener *l = NULL, *l2 = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen("127.0.0.1", "0", NULL, &l) == MS_OK);
    char ps[16], want[96];
    snprintf(ps, sizeof(ps), "%u", l->port);
    CU_ASSERT_EQUAL(ms_tcp_listen("127.0.0.1", ps, NULL, &l2), MS_ERR_IO);
    CU_ASSERT(l2 == NULL);
    snprintf(want, sizeof(want), "127.0.0.1:%u: cannot listen: address already in use", l->port);
    CU_ASSERT_STRING_EQUAL(ms_last_error(), want);

    ms_conn *c = NULL;
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_listener_accept(l, &c, 200), MS_ERR_TIMEOUT);
    double ms = elapsed_ms(t0);
    CU_ASSERT(ms >= 190 && ms < 1000);
    CU_ASSERT(strstr(ms_last_error(), "no connection within 200 ms") != NULL);
    ms_listener_close(l);
}

/* A connected socket pair over loopback TCP. */
static void tcp_pair(ms_conn **client, ms_conn **server)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_tcp_listen("127.0.0.1", "0", NULL, &l) == MS_OK);
    char ps[16];
    snprintf(ps, sizeof(ps), "%u", l->port);
    CU_ASSERT_FATAL(ms_tcp_connect("127.0.0.1", ps, NULL, client) == MS_OK);
    CU_ASSERT_FATAL(ms_listener_accept(l, server, 2000) == MS_OK);
    ms_listener_close(l);
}

static void test_tcp_peer_names_and_timeout(void)
{
    ms_conn *c = NULL, *s = NULL;
    tcp_pair(&c, &s);
    CU_ASSERT(strncmp(c->peer, "127.0.0.1:", 10) == 0);
    CU_ASSERT(strncmp(s->peer, "127.0.0.1:", 10) == 0);
    CU_ASSERT_EQUAL(c->timeout_ms, MS_DEFAULT_TIMEOUT_MS);
    /* A peer that stays connected but silent: the no-progress timeout. */
    s->timeout_ms = 200;
    char b[8];
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_conn_recv(s, b, 8, NULL), MS_ERR_TIMEOUT);
    CU_ASSERT(elapsed_ms(t0) < 1000);
    CU_ASSERT(strncmp(ms_last_error(), s->peer, strlen(s->peer)) == 0);
    ms_conn_close(c);
    ms_conn_close(s);
}

/* A child process that connects over loopback TCP, does `act` on its
 * end and dies by SIGKILL. Returns its pid; *server is our end. */
static pid_t killed_peer(void (*act)(ms_conn *c), ms_conn **server, ms_listener **l)
{
    CU_ASSERT_FATAL(ms_tcp_listen("127.0.0.1", "0", NULL, l) == MS_OK);
    char ps[16];
    snprintf(ps, sizeof(ps), "%u", (*l)->port);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        ms_conn *c = NULL;
        if (ms_tcp_connect("127.0.0.1", ps, NULL, &c) == MS_OK)
            act(c);
        raise(SIGKILL);
        _exit(1);
    }
    CU_ASSERT_FATAL(ms_listener_accept(*l, server, 5000) == MS_OK);
    (*server)->timeout_ms = 5000;
    return pid;
}

static void send_part(ms_conn *c)
{
    static uint8_t part[100000];
    ms_conn_send(c, part, sizeof(part));
}

/* With unread data queued at its death, the kernel sends RST. */
static void recv_part(ms_conn *c)
{
    static uint8_t part[65536];
    ms_conn_recv(c, part, sizeof(part), NULL);
}

/* A child process that dies mid-transfer: the survivor gets MS_ERR_CLOSED
 * promptly, with *got saying how much arrived, never a hang. */
static void test_tcp_sender_killed(void)
{
    ms_listener *l = NULL;
    ms_conn *s = NULL;
    pid_t pid = killed_peer(send_part, &s, &l);
    size_t len = 1u << 20, got = 0;
    uint8_t *buf = malloc(len);
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(ms_conn_recv(s, buf, len, &got), MS_ERR_CLOSED);
    CU_ASSERT(elapsed_ms(t0) < 4000);
    CU_ASSERT_EQUAL(got, 100000);
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    free(buf);
    ms_conn_close(s);
    ms_listener_close(l);
}

static void test_tcp_receiver_killed(void)
{
    ms_listener *l = NULL;
    ms_conn *s = NULL;
    pid_t pid = killed_peer(recv_part, &s, &l);
    size_t len = 64u << 20;
    uint8_t *buf = calloc(1, len);
    uint64_t t0 = ms_now_ns();
    int rc = ms_conn_send(s, buf, len);
    CU_ASSERT_EQUAL(rc, MS_ERR_CLOSED);
    if (rc != MS_ERR_CLOSED)
        fprintf(stderr, "send: %d %s\n", rc, ms_last_error());
    CU_ASSERT(elapsed_ms(t0) < 4000);
    CU_ASSERT(s->bytes_sent >= 65536 && s->bytes_sent < len);
    int status = 0;
    waitpid(pid, &status, 0);
    free(buf);
    ms_conn_close(s);
    ms_listener_close(l);
}

static void test_split_hostport(void)
{
    char h[64], p[16];
    CU_ASSERT_EQUAL(ms_split_hostport("10.0.0.1:4000", h, sizeof(h), p, sizeof(p)), MS_OK);
    CU_ASSERT_STRING_EQUAL(h, "10.0.0.1");
    CU_ASSERT_STRING_EQUAL(p, "4000");
    CU_ASSERT_EQUAL(ms_split_hostport("[fe80::1%eth0]:22", h, sizeof(h), p, sizeof(p)), MS_OK);
    CU_ASSERT_STRING_EQUAL(h, "fe80::1%eth0");
    CU_ASSERT_STRING_EQUAL(p, "22");
    CU_ASSERT_EQUAL(ms_split_hostport("host.example:http", h, sizeof(h), p, sizeof(p)), MS_OK);
    CU_ASSERT_STRING_EQUAL(h, "host.example");
    CU_ASSERT_EQUAL(ms_split_hostport(":5000", h, sizeof(h), p, sizeof(p)), MS_OK);
    CU_ASSERT_STRING_EQUAL(h, "");
    CU_ASSERT_STRING_EQUAL(p, "5000");

    CU_ASSERT_EQUAL(ms_split_hostport("::1:4000", h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "brackets") != NULL);
    CU_ASSERT_EQUAL(ms_split_hostport("[::1]4000", h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_split_hostport("[::1:4000", h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_split_hostport("host", h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_split_hostport("host:", h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_split_hostport(NULL, h, sizeof(h), p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_split_hostport("averyveryverylonghostname:1", h, 8, p, sizeof(p)), MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "host too long") != NULL);
    CU_ASSERT_EQUAL(ms_split_hostport("h:123456789012345678", h, sizeof(h), p, 8), MS_ERR_INVAL);
}

static const ms_test_case fd_cases[] = {
    {"fd pipe stream with partial writes", test_fd_pipe_stream},
    {"fd socketpair duplex + half-close", test_fd_socketpair_duplex},
    {"fd regular file", test_fd_regular_file},
    {"fd partial reads assemble", test_fd_partial_reads},
    {"fd EOF at boundary vs mid-read", test_fd_eof_boundary_vs_mid},
    {"fd recv timeout", test_fd_recv_timeout},
    {"fd send timeout", test_fd_send_timeout},
    {"fd send to vanished reader", test_fd_send_reader_gone},
    {"fd borrowed fds restored", test_fd_flags_restored},
    {"fd misuse refused", test_fd_bad_use},
    {"ratelimit unlimited", test_ratelimit_unlimited},
    {NULL, NULL},
};

static const ms_test_case tcp_cases[] = {
    {"tcp loopback IPv4", test_tcp_loopback_ipv4},
    {"tcp loopback IPv6", test_tcp_loopback_ipv6},
    {"tcp 1..8 parallel connections", test_tcp_parallel_1_to_8},
    {"tcp connect refused", test_tcp_connect_refused},
    {"tcp connect retries until listening", test_tcp_connect_retries_until_listening},
    {"tcp listener loopback_only", test_tcp_listener_loopback_only},
    {"tcp listen errors and accept timeout", test_tcp_listen_errors},
    {"tcp peer names and silent peer", test_tcp_peer_names_and_timeout},
    {"tcp sender killed mid-transfer", test_tcp_sender_killed},
    {"tcp receiver killed mid-transfer", test_tcp_receiver_killed},
    {"split host:port", test_split_hostport},
    {NULL, NULL},
};

MS_TEST_MAIN(ms_test_add_suite("transport-fd", fd_cases); ms_test_add_suite("transport-tcp", tcp_cases))
