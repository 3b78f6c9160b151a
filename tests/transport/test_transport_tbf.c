/* Transport over a real bottleneck: two network namespaces joined by a veth
 * pair with tc tbf (scripts/netns-tbf.sh). Needs root; exits 77 (skip)
 * otherwise, printing the reason.
 *
 * Proves: the link is really limited (so the rest means something); the
 * rate limiter holds a session below the link rate within 10%, for one
 * connection and shared by four; a link that silently drops everything
 * (no FIN, no RST) is detected by both ends within their timeout. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcp/tcp.h"
#include "tests/ms_test.h"
#include "transport/transport.h"

#define LINK_RATE "100mbit"
#define LINK_BYTES_S 12500000.0
#define MB 1000000ull
#define CHUNK 65536u

static char prefix[16];
static bool link_up;

static int script(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/scripts/netns-tbf.sh -p %s %s", MS_SOURCE_ROOT, prefix, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void link_down(void)
{
    if (link_up)
        script("down");
    link_up = false;
}

/* ---- running code inside a namespace ------------------------------------ */

typedef struct ns_call {
    char side;
    int (*fn)(void *);
    void *arg;
    int rc;
} ns_call;

/* setns changes only the calling thread, so each socket is created by a
 * short-lived thread that entered the right namespace; the sockets then
 * work from any thread. */
static void *ns_thread(void *p)
{
    ns_call *c = p;
    char path[64];
    snprintf(path, sizeof(path), "/run/netns/%s%c", prefix, c->side);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
        c->rc = ms_error(MS_ERR_IO, "enter %s: %s", path, strerror(errno));
    } else {
        c->rc = c->fn(c->arg);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int in_ns(char side, int (*fn)(void *), void *arg)
{
    ns_call c = {.side = side, .fn = fn, .arg = arg};
    pthread_t th;
    pthread_create(&th, NULL, ns_thread, &c);
    pthread_join(th, NULL);
    return c.rc;
}

static int do_listen(void *p) { return ms_tcp_listen("10.231.0.1", "0", NULL, p); }

typedef struct connect_arg {
    char port[16];
    ms_conn *c;
} connect_arg;

static int do_connect(void *p)
{
    connect_arg *a = p;
    return ms_tcp_connect("10.231.0.1", a->port, NULL, &a->c);
}

/* n connections from B to A, accepted in order. */
static int open_links(int n, ms_conn **snd, ms_conn **rcv)
{
    ms_listener *l = NULL;
    int rc = in_ns('A', do_listen, &l);
    if (rc < 0)
        return rc;
    connect_arg a;
    snprintf(a.port, sizeof(a.port), "%u", l->port);
    for (int i = 0; i < n && rc == MS_OK; i++) {
        rc = in_ns('B', do_connect, &a);
        if (rc == MS_OK) {
            snd[i] = a.c;
            rc = ms_listener_accept(l, &rcv[i], 5000);
        }
    }
    ms_listener_close(l);
    return rc;
}

/* ---- transfers ---------------------------------------------------------- */

typedef struct flow {
    ms_conn *c;
    ms_ratelimit *rl;
    uint64_t bytes;
    uint64_t end_ns;
    int rc;
} flow;

static void *send_flow(void *p)
{
    flow *f = p;
    static uint8_t buf[CHUNK];
    f->rc = MS_OK;
    for (uint64_t done = 0; done < f->bytes && f->rc == MS_OK; done += CHUNK) {
        size_t n = f->bytes - done < CHUNK ? (size_t)(f->bytes - done) : CHUNK;
        ms_ratelimit_take(f->rl, n);
        f->rc = ms_conn_send(f->c, buf, n);
    }
    return NULL;
}

static void *recv_flow(void *p)
{
    flow *f = p;
    uint8_t *buf = malloc(CHUNK);
    f->rc = MS_OK;
    for (uint64_t done = 0; done < f->bytes && f->rc == MS_OK; done += CHUNK) {
        size_t n = f->bytes - done < CHUNK ? (size_t)(f->bytes - done) : CHUNK;
        f->rc = ms_conn_recv(f->c, buf, n, NULL);
    }
    f->end_ns = ms_now_ns();
    free(buf);
    return NULL;
}

/* Move `total` bytes over n connections sharing one cap; the rate is what
 * the receivers saw: bytes / (last byte received - first byte offered). */
static double transfer_rate(int n, uint64_t total, uint64_t cap)
{
    ms_conn *snd[4] = {0}, *rcv[4] = {0};
    int rc = open_links(n, snd, rcv);
    CU_ASSERT_EQUAL(rc, MS_OK);
    if (rc < 0) {
        fprintf(stderr, "open links: %s\n", ms_last_error());
        return 0;
    }
    ms_ratelimit *rl = ms_ratelimit_new(cap);
    flow sf[4], rf[4];
    pthread_t st[4], rt[4];
    uint64_t t0 = ms_now_ns();
    for (int i = 0; i < n; i++) {
        rf[i] = (flow){.c = rcv[i], .bytes = total / (uint64_t)n};
        sf[i] = (flow){.c = snd[i], .rl = rl, .bytes = total / (uint64_t)n};
        pthread_create(&rt[i], NULL, recv_flow, &rf[i]);
        pthread_create(&st[i], NULL, send_flow, &sf[i]);
    }
    uint64_t end = t0;
    for (int i = 0; i < n; i++) {
        pthread_join(st[i], NULL);
        pthread_join(rt[i], NULL);
        CU_ASSERT_EQUAL(sf[i].rc, MS_OK);
        CU_ASSERT_EQUAL(rf[i].rc, MS_OK);
        if (rf[i].end_ns > end)
            end = rf[i].end_ns;
        ms_conn_close(snd[i]);
        ms_conn_close(rcv[i]);
    }
    ms_ratelimit_free(rl);
    return (double)(total / (uint64_t)n * (uint64_t)n) / ((double)(end - t0) / 1e9);
}

static void test_link_is_limited(void)
{
    double r = transfer_rate(1, 6 * MB, 0);
    printf("\n    uncapped over " LINK_RATE " tbf: %.2f MB/s (link %.2f MB/s)\n", r / 1e6,
           LINK_BYTES_S / 1e6);
    CU_ASSERT(r <= LINK_BYTES_S * 1.10);
    CU_ASSERT(r >= LINK_BYTES_S * 0.50);
}

static void test_cap_below_link(void)
{
    uint64_t cap = 5 * MB;
    double r = transfer_rate(1, 5 * MB, cap);
    printf("\n    cap 5 MB/s on one connection: %.3f MB/s (%.1f%% of cap)\n", r / 1e6,
           100.0 * r / (double)cap);
    CU_ASSERT(r >= 0.90 * (double)cap && r <= 1.10 * (double)cap);
}

static void test_cap_shared_by_four(void)
{
    uint64_t cap = 8 * MB;
    double r = transfer_rate(4, 8 * MB, cap);
    printf("\n    cap 8 MB/s shared by 4 connections: %.3f MB/s (%.1f%% of cap)\n", r / 1e6,
           100.0 * r / (double)cap);
    CU_ASSERT(r >= 0.90 * (double)cap && r <= 1.10 * (double)cap);
}

typedef struct stall_arg {
    ms_conn *c;
    bool sending;
    int rc;
    double ms;
    char err[256];
} stall_arg;

static void *stall_main(void *p)
{
    stall_arg *a = p;
    uint8_t *buf = calloc(1, 1u << 20);
    uint64_t t0 = 0;
    a->rc = MS_OK;
    /* The sender keeps writing; it stalls once the path stops acking. */
    while (a->rc == MS_OK) {
        t0 = ms_now_ns();
        a->rc = a->sending ? ms_conn_send(a->c, buf, 1u << 20) : ms_conn_recv(a->c, buf, 1u << 20, NULL);
    }
    a->ms = (double)(ms_now_ns() - t0) / 1e6;
    snprintf(a->err, sizeof(a->err), "%s", ms_last_error());
    free(buf);
    return NULL;
}

/* The peer vanishes without a FIN or RST: both ends give up with
 * MS_ERR_TIMEOUT about one timeout after the last progress, never hang. */
static void test_vanished_peer(void)
{
    ms_conn *snd = NULL, *rcv = NULL;
    CU_ASSERT_FATAL(open_links(1, &snd, &rcv) == MS_OK);
    snd->timeout_ms = rcv->timeout_ms = 1000;
    CU_ASSERT_EQUAL(ms_conn_send(snd, "hello", 5), MS_OK);
    char b[5];
    CU_ASSERT_EQUAL(ms_conn_recv(rcv, b, 5, NULL), MS_OK);
    CU_ASSERT_FATAL(script("cut") == 0);
    stall_arg s = {.c = snd, .sending = true}, r = {.c = rcv, .sending = false};
    pthread_t ts, tr;
    uint64_t t0 = ms_now_ns();
    pthread_create(&ts, NULL, stall_main, &s);
    pthread_create(&tr, NULL, stall_main, &r);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    double total = (double)(ms_now_ns() - t0) / 1e6;
    printf("\n    cut link: sender %s after %.0f ms (%s)\n    receiver %s after %.0f ms (%s)\n",
           ms_strerror(s.rc), s.ms, s.err, ms_strerror(r.rc), r.ms, r.err);
    CU_ASSERT_EQUAL(s.rc, MS_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(r.rc, MS_ERR_TIMEOUT);
    CU_ASSERT(s.ms < 3000 && r.ms < 3000);
    CU_ASSERT(total < 5000);
    ms_conn_close(snd);
    ms_conn_close(rcv);
    CU_ASSERT(script("rate " LINK_RATE) == 0);
}

static const ms_test_case cases[] = {
    {"tbf link is limited (sanity)", test_link_is_limited},
    {"rate cap below link, 1 connection (timing)", test_cap_below_link},
    {"rate cap below link, shared by 4 (timing)", test_cap_shared_by_four},
    {"vanished peer detected by both ends", test_vanished_peer},
    {NULL, NULL},
};

int main(void)
{
    snprintf(prefix, sizeof(prefix), "mst%d", (int)(getpid() % 1000000));
    int rc = script("up " LINK_RATE);
    if (rc == MS_TEST_SKIP)
        return MS_TEST_SKIP; /* the script printed why */
    if (rc != 0) {
        fprintf(stderr, "netns-tbf.sh up failed (exit %d)\n", rc);
        link_up = true;
        link_down();
        return 1;
    }
    link_up = true;
    atexit(link_down);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    ms_test_add_suite("transport-tbf", cases);
    return ms_test_run_all();
}
