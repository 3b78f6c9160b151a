/* Shared by test_pipeline.c and test_faults.c: a deterministic test image,
 * a sink that checks ordering and barriers, links (fd socketpairs or TCP on
 * loopback), and a receiver running in a thread. */
#ifndef MS_PIPELINE_HARNESS_H
#define MS_PIPELINE_HARNESS_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream/stream.h"
#include "tcp/tcp.h"
#include "tests/ms_test.h"

#define TH_MAXCH 8

/* ---- deterministic content ---------------------------------------------- */

static inline uint64_t th_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Pages of every kind the codecs care about: zero, text, pointer-rich,
 * random. */
static inline void th_fill_page(uint8_t *p, uint64_t pfn, uint64_t seed)
{
    uint64_t k = th_mix(pfn ^ (seed << 32)) % 8;
    static const char words[] = "the quick brown fox jumps over the lazy dog migration stream page ";
    memset(p, 0, MS_PAGE_SIZE);
    if (k < 3)
        return;
    if (k < 5) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i++)
            p[i] = (uint8_t)words[(i + pfn * 7) % (sizeof words - 1)];
        return;
    }
    if (k == 5) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i += 8)
            ms_put_le64(p + i, 0x00007f0000000000ull + ((pfn * 64 + i) & 0xffffff));
        return;
    }
    for (size_t i = 0; i < MS_PAGE_SIZE; i += 8)
        ms_put_le64(p + i, th_mix(pfn * 4096 + i + seed));
}

/* Change a few bytes of a page, as a running program would. */
static inline void th_mutate_page(uint8_t *p, uint64_t *rng)
{
    *rng = th_mix(*rng);
    size_t off = *rng % (MS_PAGE_SIZE - 128), n = 16 + (*rng >> 20) % 112;
    for (size_t i = 0; i < n; i++)
        p[off + i] ^= (uint8_t)(th_mix(*rng + i) | 1);
}

/* ---- a sink that logs what it sees, in order ------------------------------ */

#define TH_EV_PAGE (1ull << 60)
#define TH_EV_OPAQUE (2ull << 60)
#define TH_EV_ROUND_END (3ull << 60)
#define TH_EV_END (4ull << 60)

typedef struct th_events {
    uint64_t *ev;
    size_t n, cap;
} th_events;

static inline void th_ev_add(th_events *e, uint64_t v)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 1024;
        e->ev = realloc(e->ev, e->cap * sizeof *e->ev);
        if (!e->ev)
            abort();
    }
    e->ev[e->n++] = v;
}

typedef struct th_sink {
    ms_image_sink img;
    th_events events;
    pthread_mutex_t lock;
    bool ended_any;
    uint32_t last_end;
    unsigned barrier_violations;
    unsigned round_ends, ends;
    uint64_t pages;
    int fail_after_pages; /* > 0: the sink fails once this many pages arrived */
} th_sink;

static inline int th_sink_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                                const uint8_t *pages, size_t count, size_t ps)
{
    th_sink *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->ended_any && round <= s->last_end)
        s->barrier_violations++;
    for (size_t i = 0; i < count; i++)
        th_ev_add(&s->events, TH_EV_PAGE | ((uint64_t)round << 40) | pfns[i]);
    s->pages += count;
    bool fail = s->fail_after_pages > 0 && s->pages >= (uint64_t)s->fail_after_pages;
    pthread_mutex_unlock(&s->lock);
    if (fail)
        return ms_error(MS_ERR_IO, "test sink: disk full (simulated)");
    return ms_image_sink_ops.pages(&s->img, round, fragment, pfns, pages, count, ps);
}

static inline int th_sink_opaque(void *ctx, const uint8_t *data, size_t len)
{
    th_sink *s = ctx;
    pthread_mutex_lock(&s->lock);
    th_ev_add(&s->events, TH_EV_OPAQUE | len);
    pthread_mutex_unlock(&s->lock);
    return ms_image_sink_ops.opaque(&s->img, data, len);
}

static inline int th_sink_round_end(void *ctx, uint32_t round)
{
    th_sink *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->ended_any && round <= s->last_end)
        s->barrier_violations++;
    s->ended_any = true;
    s->last_end = round;
    s->round_ends++;
    th_ev_add(&s->events, TH_EV_ROUND_END | round);
    pthread_mutex_unlock(&s->lock);
    return MS_OK;
}

static inline int th_sink_end(void *ctx)
{
    th_sink *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->ends++;
    th_ev_add(&s->events, TH_EV_END);
    pthread_mutex_unlock(&s->lock);
    return MS_OK;
}

static const ms_sink_ops th_sink_ops = {th_sink_pages, th_sink_opaque, th_sink_round_end, th_sink_end};

static inline void th_sink_init(th_sink *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
}

static inline void th_sink_free(th_sink *s)
{
    ms_image_sink_free(&s->img);
    free(s->events.ev);
    pthread_mutex_destroy(&s->lock);
}

static inline unsigned th_sink_round_ends(th_sink *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned n = s->round_ends;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* ---- receiver in a thread ------------------------------------------------ */

typedef struct th_rx {
    ms_listener *l;                 /* tcp: accept here */
    ms_conn *conns[TH_MAXCH];       /* fd: receiver ends */
    unsigned n;
    ms_session_config cfg;
    const ms_sink_ops *ops;
    void *ctx;
    ms_stats stats;
    int rc;
    char msg[512];
    pthread_t thread;
} th_rx;

static inline int th_rx_fd_handshakes(th_rx *r, ms_hello *first, ms_session_keys *keys)
{
    for (unsigned i = 0; i < r->n; i++) {
        ms_hello peer, mine = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
        int rc = ms_handshake_server_read(r->conns[i], &peer);
        if (rc == MS_OK)
            rc = ms_handshake_server_finish(r->conns[i], &peer, &mine, r->cfg.key, &keys[i]);
        if (rc < 0)
            return rc;
        if (i == 0)
            *first = peer;
    }
    return MS_OK;
}

static inline void *th_rx_main(void *arg)
{
    th_rx *r = arg;
    int rc;
    if (r->l) {
        ms_accepted a;
        rc = ms_accept_session(r->l, &r->cfg, 20000, &a);
        if (rc == MS_OK)
            rc = ms_receiver_run(&r->cfg, &a.hello, a.conns, a.keys, a.nconns, r->ops, r->ctx, &r->stats);
        if (rc < 0)
            snprintf(r->msg, sizeof r->msg, "%s", ms_last_error());
        ms_accepted_free(&a);
    } else {
        ms_hello first;
        ms_session_keys keys[TH_MAXCH];
        rc = th_rx_fd_handshakes(r, &first, keys);
        if (rc == MS_OK)
            rc = ms_receiver_run(&r->cfg, &first, r->conns, keys, r->n, r->ops, r->ctx, &r->stats);
        if (rc < 0)
            snprintf(r->msg, sizeof r->msg, "%s", ms_last_error());
        for (unsigned i = 0; i < r->n; i++) {
            ms_conn_close(r->conns[i]);
            r->conns[i] = NULL;
        }
    }
    r->rc = rc;
    return NULL;
}

/* Connections for a session of n channels: sender ends in snd[], the
 * receiver side set up in r (not started). */
static inline int th_link(const char *transport, unsigned n, ms_conn **snd, th_rx *r)
{
    r->n = n;
    if (!strcmp(transport, "tcp")) {
        char port[16];
        ms_tcp_options opt = {.timeout_ms = 5000, .connect_retries = 3};
        int rc = ms_tcp_listen("127.0.0.1", "0", &opt, &r->l);
        if (rc < 0)
            return rc;
        snprintf(port, sizeof port, "%u", r->l->port);
        for (unsigned i = 0; i < n; i++)
            if ((rc = ms_tcp_connect("127.0.0.1", port, &opt, &snd[i])) < 0)
                return rc;
        return MS_OK;
    }
    for (unsigned i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return ms_error(MS_ERR_IO, "socketpair failed");
        ms_fd_conn_new(sv[0], sv[0], true, &snd[i]);
        ms_fd_conn_new(sv[1], sv[1], true, &r->conns[i]);
    }
    return MS_OK;
}

static inline void th_rx_start(th_rx *r) { pthread_create(&r->thread, NULL, th_rx_main, r); }

static inline void th_rx_join(th_rx *r)
{
    pthread_join(r->thread, NULL);
    ms_listener_close(r->l);
    r->l = NULL;
    for (unsigned i = 0; i < r->n; i++)
        ms_conn_close(r->conns[i]);
}

static inline void th_expect_msg(const char *msg, const char *needle)
{
    if (!strstr(msg, needle)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", msg, needle);
        CU_FAIL("error message names the cause");
    }
}

static const uint8_t th_key_a[MS_KEY_SIZE] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                              17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t th_key_b[MS_KEY_SIZE] = {9, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                              17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 33};

#endif
