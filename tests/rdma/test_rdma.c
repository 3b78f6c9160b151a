/* Suite 'rdma': the RDMA transport on a real verbs device (Soft-RoCE in the
 * VM lane, tests/vm/rdma-lane.sh). Without a device the whole suite is
 * skipped (exit 77): nothing here can be emulated without the kernel.
 *
 * The address used is $MS_RDMA_TEST_ADDR, else the first IPv4 address of a
 * netdev that carries an RDMA device (rdma_cm cannot route 127.0.0.1 over
 * Soft-RoCE). $MS_RDMA_TEST_MB scales the bulk tests. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "rdma/rdma.h"
#include "tests/ms_test.h"

static const char *addr;
static size_t bulk_mb = 32;

/* ---- helpers ------------------------------------------------------------ */

static uint8_t pat(uint32_t seed, uint64_t i)
{
    return (uint8_t)((i * 7u) ^ (i >> 8) * 131u ^ (i >> 19) ^ seed);
}

typedef struct acceptor {
    ms_listener *l;
    uint64_t timeout_ms;
    ms_conn *c;
    int rc;
    char err[512];
    pthread_t th;
} acceptor;

static void *accept_main(void *p)
{
    acceptor *a = p;
    a->rc = ms_listener_accept(a->l, &a->c, a->timeout_ms);
    snprintf(a->err, sizeof(a->err), "%s", ms_last_error());
    return NULL;
}

static char port_buf[16];
static const char *port_of(const ms_listener *l)
{
    snprintf(port_buf, sizeof(port_buf), "%u", l->port);
    return port_buf;
}

/* A connected pair: *cli from ms_rdma_connect, *srv from accept. */
static int make_pair(const ms_rdma_options *co, const ms_rdma_options *so, ms_conn **cli, ms_conn **srv)
{
    ms_listener *l = NULL;
    int rc = ms_rdma_listen(addr, "0", so, &l);
    if (rc < 0) {
        fprintf(stderr, "listen: %s\n", ms_last_error());
        return rc;
    }
    acceptor a = {.l = l, .timeout_ms = 20000};
    pthread_create(&a.th, NULL, accept_main, &a);
    rc = ms_rdma_connect(addr, port_of(l), co, cli);
    if (rc < 0)
        fprintf(stderr, "connect: %s\n", ms_last_error());
    pthread_join(a.th, NULL);
    if (a.rc < 0)
        fprintf(stderr, "accept: %s\n", a.err);
    ms_listener_close(l);
    if (rc < 0 || a.rc < 0) {
        if (rc == MS_OK)
            ms_conn_close(*cli);
        if (a.rc == MS_OK)
            ms_conn_close(a.c);
        return rc < 0 ? rc : a.rc;
    }
    *srv = a.c;
    return MS_OK;
}

/* ---- bulk transfer in both directions ---------------------------------- */

typedef struct flow {
    ms_conn *c;
    uint64_t bytes;
    uint32_t seed;
    uint64_t rng;
    int rc;
    uint64_t bad_at;      /* receiver: first wrong byte + 1 */
    char err[512];
} flow;

static uint64_t flow_rnd(flow *f)
{
    f->rng ^= f->rng << 13;
    f->rng ^= f->rng >> 7;
    f->rng ^= f->rng << 17;
    return f->rng;
}

/* Random sendv shapes: 1..4 pieces, tiny to 3 MiB, so both the copy ring
 * and zero-copy registrations (reused buffers: cache hits) are exercised. */
static void *send_main(void *p)
{
    flow *f = p;
    const size_t bufsz = 3u << 20;
    uint8_t *bufs[4];
    for (int i = 0; i < 4; i++)
        bufs[i] = malloc(bufsz);
    uint64_t pos = 0;
    f->rc = MS_OK;
    while (pos < f->bytes && f->rc == MS_OK) {
        struct iovec iov[4];
        int n = 1 + (int)(flow_rnd(f) % 4);
        uint64_t at = pos;
        for (int i = 0; i < n; i++) {
            uint64_t r = flow_rnd(f);
            size_t len = (r & 3) == 0 ? 1 + (r >> 8) % 64 : (r & 3) == 1 ? 1 + (r >> 8) % 70000 : 1 + (r >> 8) % bufsz;
            if (len > f->bytes - at)
                len = (size_t)(f->bytes - at);
            for (size_t k = 0; k < len; k++)
                bufs[i][k] = pat(f->seed, at + k);
            iov[i] = (struct iovec){bufs[i], len};
            at += len;
        }
        f->rc = ms_conn_sendv(f->c, iov, n);
        pos = at;
    }
    if (f->rc == MS_OK)
        f->rc = f->c->ops->shutdown_send(f->c);
    snprintf(f->err, sizeof(f->err), "%s", ms_last_error());
    for (int i = 0; i < 4; i++)
        free(bufs[i]);
    return NULL;
}

static void *recv_main(void *p)
{
    flow *f = p;
    uint8_t *buf = malloc(1u << 20);
    uint64_t pos = 0;
    f->rc = MS_OK;
    while (pos < f->bytes) {
        size_t want = 1 + flow_rnd(f) % (1u << 20);
        if (want > f->bytes - pos)
            want = (size_t)(f->bytes - pos);
        size_t got = 0;
        f->rc = ms_conn_recv(f->c, buf, want, &got);
        for (size_t k = 0; k < got && !f->bad_at; k++)
            if (buf[k] != pat(f->seed, pos + k))
                f->bad_at = pos + k + 1;
        pos += got;
        if (f->rc < 0)
            break;
    }
    /* After all bytes the sender's FIN must show as a clean end. */
    if (f->rc == MS_OK) {
        size_t got = 99;
        int rc = ms_conn_recv(f->c, buf, 1, &got);
        f->rc = rc == MS_ERR_CLOSED && got == 0 ? MS_OK : (rc < 0 ? rc : MS_ERR_CORRUPT);
    }
    snprintf(f->err, sizeof(f->err), "%s", ms_last_error());
    free(buf);
    return NULL;
}

static void bulk(const ms_rdma_options *co, const ms_rdma_options *so, uint64_t bytes, bool both)
{
    static const ms_rdma_options dflt;
    if (!co)
        co = &dflt;
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(co, so, &cli, &srv) == MS_OK);
    /* Filling patterns is slow under emulation and sanitizers; the
     * deadlines are not what these tests are about. */
    cli->timeout_ms = srv->timeout_ms = 120000;
    flow s1 = {.c = cli, .bytes = bytes, .seed = 11, .rng = 1 + ms_test_rand()}, r1 = {.c = srv, .bytes = bytes, .seed = 11, .rng = 1 + ms_test_rand()};
    flow s2 = {.c = srv, .bytes = bytes, .seed = 99, .rng = 1 + ms_test_rand()}, r2 = {.c = cli, .bytes = bytes, .seed = 99, .rng = 1 + ms_test_rand()};
    pthread_t t[4];
    pthread_create(&t[0], NULL, send_main, &s1);
    pthread_create(&t[1], NULL, recv_main, &r1);
    if (both) {
        pthread_create(&t[2], NULL, send_main, &s2);
        pthread_create(&t[3], NULL, recv_main, &r2);
    }
    for (int i = 0; i < (both ? 4 : 2); i++)
        pthread_join(t[i], NULL);
    flow *fl[4] = {&s1, &r1, &s2, &r2};
    for (int i = 0; i < (both ? 4 : 2); i++) {
        if (fl[i]->rc != MS_OK || fl[i]->bad_at)
            fprintf(stderr, "flow %d: rc %d bad_at %llu: %s\n", i, fl[i]->rc,
                    (unsigned long long)fl[i]->bad_at, fl[i]->err);
        CU_ASSERT(fl[i]->rc == MS_OK);
        CU_ASSERT(fl[i]->bad_at == 0);
    }
    CU_ASSERT(cli->bytes_sent == bytes && srv->bytes_recv == bytes);
    if (both)
        CU_ASSERT(srv->bytes_sent == bytes && cli->bytes_recv == bytes);
    ms_rdma_stats st;
    CU_ASSERT_FATAL(ms_rdma_conn_stats(cli, &st) == MS_OK);
    fprintf(stderr, "  [%s: %llu writes, %llu B copied, %llu B zero-copy, reg hit/miss/stale %llu/%llu/%llu, "
                    "credits sent/recv %llu/%llu, credit waits %llu]\n",
            st.device, (unsigned long long)st.writes, (unsigned long long)st.bytes_copied,
            (unsigned long long)st.bytes_zcopy, (unsigned long long)st.reg_hits,
            (unsigned long long)st.reg_misses, (unsigned long long)st.reg_stale,
            (unsigned long long)st.credit_msgs_sent, (unsigned long long)st.credit_msgs_recv,
            (unsigned long long)st.credit_waits);
    CU_ASSERT(st.bytes_copied + st.bytes_zcopy == bytes);
    CU_ASSERT(st.writes >= bytes / st.peer_slot_size);
    /* The ring wrapped many times, so credits must have come back. */
    CU_ASSERT(st.credit_msgs_recv > 0);
    if (st.zcopy && co->zcopy_min != SIZE_MAX) {
        CU_ASSERT(st.bytes_zcopy > 0);
        CU_ASSERT(st.reg_hits > 0);
    }
    if (co->zcopy_min == SIZE_MAX)
        CU_ASSERT(st.bytes_zcopy == 0);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

static void t_bulk_small_ring_both_ways(void)
{
    /* 8 slots of 64 KiB: the ring wraps every 512 KiB. */
    ms_rdma_options o = {.ring_slots = 8, .slot_size = 64 * 1024};
    bulk(&o, &o, (uint64_t)bulk_mb << 20, true);
}

static void t_bulk_default_ring(void) { bulk(NULL, NULL, (uint64_t)bulk_mb << 20, false); }

static void t_bulk_copy_only_mixed_geometry(void)
{
    /* Each side advertises its own ring; the sender follows the peer's. */
    ms_rdma_options co = {.ring_slots = 3, .slot_size = 4096, .zcopy_min = SIZE_MAX};
    ms_rdma_options so = {.ring_slots = 16, .slot_size = 1u << 20, .zcopy_min = SIZE_MAX};
    bulk(&co, &so, (uint64_t)(bulk_mb / 4 + 1) << 20, true);
}

/* ---- basics ------------------------------------------------------------- */

static void t_listen_port0(void)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_rdma_listen(addr, "0", NULL, &l) == MS_OK);
    CU_ASSERT(l->port != 0);
    CU_ASSERT(strstr(l->addr, addr) != NULL);
    CU_ASSERT(l->loopback_only == (strncmp(addr, "127.", 4) == 0));
    /* Nobody connects: accept keeps its deadline. */
    ms_conn *c = NULL;
    uint64_t t0 = ms_now_ns();
    CU_ASSERT(ms_listener_accept(l, &c, 300) == MS_ERR_TIMEOUT);
    double s = (double)(ms_now_ns() - t0) / 1e9;
    CU_ASSERT(s >= 0.25 && s < 5);
    ms_listener_close(l);
}

static void t_small_messages(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    CU_ASSERT_STRING_EQUAL(cli->ops->name, "rdma");
    CU_ASSERT(strstr(cli->peer, addr) != NULL);
    CU_ASSERT(strstr(srv->peer, addr) != NULL);
    char buf[64];
    for (int i = 0; i < 200; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "ping %d", i);
        CU_ASSERT_FATAL(ms_conn_send(cli, msg, (size_t)n) == MS_OK);
        CU_ASSERT_FATAL(ms_conn_recv(srv, buf, (size_t)n, NULL) == MS_OK);
        CU_ASSERT(memcmp(buf, msg, (size_t)n) == 0);
        CU_ASSERT_FATAL(ms_conn_send(srv, buf, (size_t)n) == MS_OK);
        CU_ASSERT_FATAL(ms_conn_recv(cli, buf, (size_t)n, NULL) == MS_OK);
        CU_ASSERT(memcmp(buf, msg, (size_t)n) == 0);
    }
    /* Several sends may be read in one recv, and one send in pieces. */
    CU_ASSERT(ms_conn_send(cli, "abc", 3) == MS_OK);
    CU_ASSERT(ms_conn_send(cli, "defgh", 5) == MS_OK);
    CU_ASSERT(ms_conn_recv(srv, buf, 2, NULL) == MS_OK);
    CU_ASSERT(ms_conn_recv(srv, buf + 2, 6, NULL) == MS_OK);
    CU_ASSERT(memcmp(buf, "abcdefgh", 8) == 0);
    CU_ASSERT(ms_conn_send(cli, "", 0) == MS_OK);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

static void t_shutdown_is_end_of_stream(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    uint8_t data[1000], buf[4096];
    for (int i = 0; i < 1000; i++)
        data[i] = pat(5, (uint64_t)i);
    CU_ASSERT(ms_conn_send(cli, data, sizeof(data)) == MS_OK);
    CU_ASSERT(cli->ops->shutdown_send(cli) == MS_OK);
    CU_ASSERT(ms_conn_send(cli, data, 1) == MS_ERR_INVAL);
    size_t got = 0;
    CU_ASSERT(ms_conn_recv(srv, buf, sizeof(buf), &got) == MS_ERR_CLOSED);
    CU_ASSERT(got == 1000);
    CU_ASSERT(memcmp(buf, data, 1000) == 0);
    CU_ASSERT(strstr(ms_last_error(), "ended the stream after 1000 of 4096 bytes") != NULL);
    /* Half-close: the other direction still works. */
    CU_ASSERT(ms_conn_send(srv, "back", 4) == MS_OK);
    CU_ASSERT(ms_conn_recv(cli, buf, 4, NULL) == MS_OK);
    CU_ASSERT(memcmp(buf, "back", 4) == 0);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

static void t_recv_timeout(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    srv->timeout_ms = 300;
    char b[8];
    uint64_t t0 = ms_now_ns();
    CU_ASSERT(ms_conn_recv(srv, b, 8, NULL) == MS_ERR_TIMEOUT);
    double s = (double)(ms_now_ns() - t0) / 1e9;
    CU_ASSERT(s >= 0.25 && s < 5);
    CU_ASSERT(strstr(ms_last_error(), "no data for 300 ms") != NULL);
    /* The connection is still good after a timeout. */
    CU_ASSERT(ms_conn_send(cli, "late", 4) == MS_OK);
    srv->timeout_ms = 10000;
    CU_ASSERT(ms_conn_recv(srv, b, 4, NULL) == MS_OK);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

static void t_send_blocks_on_credits_then_times_out(void)
{
    ms_rdma_options so = {.ring_slots = 2, .slot_size = 4096};
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, &so, &cli, &srv) == MS_OK);
    cli->timeout_ms = 300;
    static uint8_t big[64 * 1024];
    uint64_t t0 = ms_now_ns();
    CU_ASSERT(ms_conn_send(cli, big, sizeof(big)) == MS_ERR_TIMEOUT);
    double s = (double)(ms_now_ns() - t0) / 1e9;
    CU_ASSERT(s >= 0.25 && s < 5);
    CU_ASSERT(strstr(ms_last_error(), "free slot") != NULL);
    ms_rdma_stats st;
    ms_rdma_conn_stats(cli, &st);
    CU_ASSERT(st.writes == 2); /* exactly the two slots the peer has */
    CU_ASSERT(st.credit_waits >= 1);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

static void t_close_delivers_then_closed(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    size_t n = 3u << 20;
    uint8_t *data = malloc(n), *buf = malloc(n + 10);
    for (size_t i = 0; i < n; i++)
        data[i] = pat(7, i);
    /* Sent through the copy ring: close must still let it land. */
    CU_ASSERT(ms_conn_send(cli, data, 1000) == MS_OK);
    ms_conn_close(cli);
    size_t got = 0;
    CU_ASSERT(ms_conn_recv(srv, buf, 1000, &got) == MS_OK);
    CU_ASSERT(memcmp(buf, data, 1000) == 0);
    CU_ASSERT(ms_conn_recv(srv, buf, 10, &got) == MS_ERR_CLOSED);
    CU_ASSERT(got == 0);
    CU_ASSERT(strstr(ms_last_error(), "disconnected") != NULL);
    /* Sending to a peer that left fails fast, not after the timeout. */
    uint64_t t0 = ms_now_ns();
    int rc = MS_OK;
    for (int i = 0; i < 100 && rc == MS_OK; i++)
        rc = ms_conn_send(srv, data, n);
    CU_ASSERT(rc == MS_ERR_CLOSED || rc == MS_ERR_IO);
    CU_ASSERT((double)(ms_now_ns() - t0) / 1e9 < 5);
    fprintf(stderr, "  [send after peer close: %s]\n", ms_last_error());
    ms_conn_close(srv);
    free(data);
    free(buf);
}

static void t_peer_close_mid_recv(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    CU_ASSERT(ms_conn_send(cli, "12345", 5) == MS_OK);
    ms_conn_close(cli);
    char b[16];
    size_t got = 0;
    uint64_t t0 = ms_now_ns();
    CU_ASSERT(ms_conn_recv(srv, b, 16, &got) == MS_ERR_CLOSED);
    CU_ASSERT(got == 5);
    CU_ASSERT((double)(ms_now_ns() - t0) / 1e9 < 5);
    ms_conn_close(srv);
}

static void t_no_listener(void)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_rdma_listen(addr, "0", NULL, &l) == MS_OK);
    char port[16];
    snprintf(port, sizeof(port), "%u", l->port);
    ms_listener_close(l); /* the port is now free: nobody listens */
    ms_rdma_options o = {.timeout_ms = 3000, .connect_retries = 2};
    ms_conn *c = NULL;
    uint64_t t0 = ms_now_ns();
    int rc = ms_rdma_connect(addr, port, &o, &c);
    double s = (double)(ms_now_ns() - t0) / 1e9;
    fprintf(stderr, "  [no listener: %s after %.2f s]\n", ms_last_error(), s);
    CU_ASSERT(rc == MS_ERR_IO || rc == MS_ERR_TIMEOUT);
    CU_ASSERT(s >= 0.35 && s < 15);
    CU_ASSERT(c == NULL);
}

/* A raw librdmacm client that sends `blob` as its private data and returns
 * the event it gets (REJECTED expected) with the reject reason code. */
static int raw_connect(const char *port, const void *blob, uint8_t len, int *reason_out)
{
    struct rdma_addrinfo hints = {.ai_port_space = RDMA_PS_TCP}, *res = NULL;
    struct rdma_event_channel *ch = rdma_create_event_channel();
    struct rdma_cm_id *id = NULL;
    struct rdma_cm_event *ev = NULL;
    int result = -1;
    *reason_out = -1;
    if (!ch || rdma_getaddrinfo(addr, port, &hints, &res) || rdma_create_id(ch, &id, NULL, RDMA_PS_TCP))
        goto out;
    if (rdma_resolve_addr(id, NULL, res->ai_dst_addr, 2000) || rdma_get_cm_event(ch, &ev) ||
        ev->event != RDMA_CM_EVENT_ADDR_RESOLVED)
        goto out;
    rdma_ack_cm_event(ev);
    ev = NULL;
    if (rdma_resolve_route(id, 2000) || rdma_get_cm_event(ch, &ev) || ev->event != RDMA_CM_EVENT_ROUTE_RESOLVED)
        goto out;
    rdma_ack_cm_event(ev);
    ev = NULL;
    struct ibv_qp_init_attr qa = {.qp_type = IBV_QPT_RC, .cap = {.max_send_wr = 1, .max_recv_wr = 1,
                                                                  .max_send_sge = 1, .max_recv_sge = 1}};
    if (rdma_create_qp(id, NULL, &qa))
        goto out;
    struct rdma_conn_param p = {.private_data = blob, .private_data_len = len, .retry_count = 7};
    if (rdma_connect(id, &p) || rdma_get_cm_event(ch, &ev))
        goto out;
    result = ev->event;
    if (ev->event == RDMA_CM_EVENT_REJECTED && ev->param.conn.private_data_len >= 8 &&
        ((const uint8_t *)ev->param.conn.private_data)[0] == 'M')
        *reason_out = ((const uint8_t *)ev->param.conn.private_data)[6];
out:
    if (ev)
        rdma_ack_cm_event(ev);
    if (id) {
        if (id->qp)
            rdma_destroy_qp(id);
        rdma_destroy_id(id);
    }
    if (res)
        rdma_freeaddrinfo(res);
    if (ch)
        rdma_destroy_event_channel(ch);
    return result;
}

static void t_foreign_and_wrong_version_peers_rejected(void)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_rdma_listen(addr, "0", NULL, &l) == MS_OK);
    acceptor a = {.l = l, .timeout_ms = 20000};
    pthread_create(&a.th, NULL, accept_main, &a);
    int reason;
    /* Not our private data at all (e.g. another rdma_cm program). */
    CU_ASSERT(raw_connect(port_of(l), "hello", 5, &reason) == RDMA_CM_EVENT_REJECTED);
    CU_ASSERT(reason == 1);
    /* Our magic, another transport version. */
    uint8_t blob[28] = {'M', 'S', 'R', 'D', 99, 0};
    CU_ASSERT(raw_connect(port_of(l), blob, sizeof(blob), &reason) == RDMA_CM_EVENT_REJECTED);
    CU_ASSERT(reason == 1);
    /* The listener is still serving: a good peer gets through. */
    ms_conn *c = NULL;
    CU_ASSERT(ms_rdma_connect(addr, port_of(l), NULL, &c) == MS_OK);
    pthread_join(a.th, NULL);
    CU_ASSERT(a.rc == MS_OK);
    if (c && a.rc == MS_OK) {
        char b[2];
        CU_ASSERT(ms_conn_send(c, "ok", 2) == MS_OK);
        CU_ASSERT(ms_conn_recv(a.c, b, 2, NULL) == MS_OK);
        ms_conn_close(a.c);
    }
    ms_conn_close(c);
    ms_listener_close(l);
}

/* A freed buffer whose address is reused must not be sent from the stale
 * registration (the pagemap check in the cache). */
static void t_zcopy_cache_detects_reused_address(void)
{
    ms_conn *cli, *srv;
    CU_ASSERT_FATAL(make_pair(NULL, NULL, &cli, &srv) == MS_OK);
    ms_rdma_stats st;
    ms_rdma_conn_stats(cli, &st);
    if (!st.zcopy) {
        fprintf(stderr, "  [zero-copy off: /proc/self/pagemap shows no page numbers (not root)]\n");
        ms_conn_close(cli);
        ms_conn_close(srv);
        return;
    }
    size_t n = 1u << 20;
    uint8_t *buf = malloc(n);
    uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(p != MAP_FAILED);
    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            /* New pages at the same address. */
            CU_ASSERT_FATAL(munmap(p, n) == 0);
            uint8_t *q = mmap(p, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            CU_ASSERT_FATAL(q == p);
        }
        memset(p, 'a' + round, n);
        CU_ASSERT_FATAL(ms_conn_send(cli, p, n) == MS_OK);
        CU_ASSERT_FATAL(ms_conn_recv(srv, buf, n, NULL) == MS_OK);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += buf[i] != 'a' + round;
        CU_ASSERT(bad == 0);
    }
    ms_rdma_conn_stats(cli, &st);
    CU_ASSERT(st.bytes_zcopy == 3 * n);
    CU_ASSERT(st.reg_misses == 2); /* first use and after the remap */
    CU_ASSERT(st.reg_hits == 1);
    CU_ASSERT(st.reg_stale == 1);
    munmap(p, n);
    free(buf);
    ms_conn_close(cli);
    ms_conn_close(srv);
}

/* Like a TCP backlog: connects complete before anyone calls accept, since a
 * sender opens every channel before it says hello on any. */
static void t_connect_completes_before_accept(void)
{
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_rdma_listen(addr, "0", NULL, &l) == MS_OK);
    ms_conn *c[3] = {0}, *s[3] = {0};
    for (int i = 0; i < 3; i++)
        CU_ASSERT(ms_rdma_connect(addr, port_of(l), NULL, &c[i]) == MS_OK);
    for (int i = 0; i < 3; i++)
        if (c[i])
            CU_ASSERT(ms_conn_send(c[i], &i, sizeof(i)) == MS_OK);
    for (int i = 0; i < 3; i++) {
        int v = -1;
        CU_ASSERT_FATAL(ms_listener_accept(l, &s[i], 5000) == MS_OK);
        CU_ASSERT(ms_conn_recv(s[i], &v, sizeof(v), NULL) == MS_OK);
        CU_ASSERT(v == i); /* accepted in connect order */
    }
    /* A connection left in the backlog is freed with the listener. */
    ms_conn *extra = NULL;
    CU_ASSERT(ms_rdma_connect(addr, port_of(l), NULL, &extra) == MS_OK);
    ms_listener_close(l);
    for (int i = 0; i < 3; i++) {
        ms_conn_close(c[i]);
        ms_conn_close(s[i]);
    }
    ms_conn_close(extra);
}

typedef struct chan {
    ms_conn *s, *r;
    uint32_t seed;
    int rc;
    uint64_t bad;
    char err[512];
} chan;

typedef struct chan_data {
    chan *c;
    uint8_t *b;
} chan_data;

static void *chan_send(void *p)
{
    chan_data *d = p;
    size_t n = 4u << 20;
    struct iovec v[2] = {{d->b, 56}, {d->b + 56, n - 56}};
    d->c->rc = ms_conn_sendv(d->c->s, v, 2);
    snprintf(d->c->err, sizeof(d->c->err), "%s", ms_last_error());
    return NULL;
}

static void t_parallel_channels(void)
{
    enum { N = 4 };
    ms_listener *l = NULL;
    CU_ASSERT_FATAL(ms_rdma_listen(addr, "0", NULL, &l) == MS_OK);
    chan ch[N];
    for (int i = 0; i < N; i++) {
        acceptor a = {.l = l, .timeout_ms = 20000};
        pthread_create(&a.th, NULL, accept_main, &a);
        CU_ASSERT_FATAL(ms_rdma_connect(addr, port_of(l), NULL, &ch[i].s) == MS_OK);
        pthread_join(a.th, NULL);
        CU_ASSERT_FATAL(a.rc == MS_OK);
        ch[i].r = a.c;
        ch[i].seed = (uint32_t)i * 17 + 1;
        ch[i].s->timeout_ms = ch[i].r->timeout_ms = 120000;
    }
    size_t n = 4u << 20;
    chan_data cd[N];
    for (int i = 0; i < N; i++) {
        cd[i] = (chan_data){&ch[i], malloc(n)};
        for (size_t k = 0; k < n; k++)
            cd[i].b[k] = pat(ch[i].seed, k);
    }
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, chan_send, &cd[i]);
    uint8_t *b = malloc(n);
    for (int i = 0; i < N; i++) {
        ch[i].bad = 0;
        int rc = ms_conn_recv(ch[i].r, b, n, NULL);
        if (rc != MS_OK)
            fprintf(stderr, "  [channel %d recv: %s]\n", i, ms_last_error());
        CU_ASSERT(rc == MS_OK);
        for (size_t k = 0; k < n; k++)
            ch[i].bad += b[k] != pat(ch[i].seed, k);
        CU_ASSERT(ch[i].bad == 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (ch[i].rc != MS_OK)
            fprintf(stderr, "  [channel %d send: %s]\n", i, ch[i].err);
        CU_ASSERT(ch[i].rc == MS_OK);
        free(cd[i].b);
        ms_conn_close(ch[i].s);
        ms_conn_close(ch[i].r);
    }
    free(b);
    ms_listener_close(l);
}

static void t_options(void)
{
    ms_rdma_options o = {0};
    CU_ASSERT(ms_rdma_options_parse("slots=8,slot-size=64K,ack-timeout=14,retry=5,zcopy-min=off,"
                                    "reg-cache=4,timeout=2s,connect-retries=3", &o) == MS_OK);
    CU_ASSERT(o.ring_slots == 8 && o.slot_size == 65536 && o.ack_timeout == 14 && o.retry_cnt == 5);
    CU_ASSERT(o.zcopy_min == SIZE_MAX && o.reg_cache_entries == 4 && o.timeout_ms == 2000);
    CU_ASSERT(o.connect_retries == 3);
    CU_ASSERT(ms_rdma_options_parse("zcopy-min=128K", &o) == MS_OK && o.zcopy_min == 131072);
    CU_ASSERT(ms_rdma_options_parse("slots=1", &o) == MS_ERR_INVAL);
    CU_ASSERT(ms_rdma_options_parse("slot-size=2M", &o) == MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "slot-size=2M") != NULL);
    CU_ASSERT(ms_rdma_options_parse("retry=8", &o) == MS_ERR_INVAL);
    CU_ASSERT(ms_rdma_options_parse("colour=blue", &o) == MS_ERR_INVAL);
    CU_ASSERT(ms_rdma_options_parse("slots", &o) == MS_ERR_INVAL);
    ms_rdma_options bad = {.slot_size = 2u << 20};
    ms_conn *c = NULL;
    CU_ASSERT(ms_rdma_connect(addr, "1", &bad, &c) == MS_ERR_INVAL);
    bad = (ms_rdma_options){.ring_slots = 5000};
    ms_listener *l = NULL;
    CU_ASSERT(ms_rdma_listen(addr, "0", &bad, &l) == MS_ERR_INVAL);
    CU_ASSERT(ms_rdma_connect_str("no-port-here", NULL, &c) == MS_ERR_INVAL);
    CU_ASSERT(ms_rdma_listen_str("[::1", NULL, &l) == MS_ERR_INVAL);
}

static void t_stats_of_other_conn(void)
{
    ms_conn *fdc = NULL;
    CU_ASSERT_FATAL(ms_fd_conn_new(0, 1, false, &fdc) == MS_OK);
    ms_rdma_stats st;
    CU_ASSERT(ms_rdma_conn_stats(fdc, &st) == MS_ERR_INVAL);
    ms_conn_close(fdc);
}

static bool ipv4_of(const char *netdev, char *out, size_t n)
{
    struct ifaddrs *ifs, *i;
    bool found = false;
    if (getifaddrs(&ifs))
        return false;
    for (i = ifs; i && !found; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !strcmp(i->ifa_name, netdev))
            found = inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)n) != NULL;
    freeifaddrs(ifs);
    return found;
}

/* The IPv4 address of a netdev bound to an RDMA device's port 1 GIDs. */
static const char *find_rdma_addr(void)
{
    static char ip[64];
    DIR *d = opendir("/sys/class/infiniband");
    struct dirent *e;
    const char *res = NULL;
    while (d && !res && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        for (int k = 0; k < 16 && !res; k++) {
            char path[512], netdev[64] = "";
            snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/gid_attrs/ndevs/%d", e->d_name, k);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            if (fgets(netdev, sizeof(netdev), f))
                netdev[strcspn(netdev, "\n")] = '\0';
            fclose(f);
            if (*netdev && ipv4_of(netdev, ip, sizeof(ip)))
                res = ip;
        }
    }
    if (d)
        closedir(d);
    return res;
}

int main(void)
{
    if (ms_rdma_available() != MS_OK) {
        printf("SKIP: %s\n", ms_last_error());
        return MS_TEST_SKIP;
    }
    addr = getenv("MS_RDMA_TEST_ADDR");
    if (!addr || !*addr)
        addr = find_rdma_addr();
    if (!addr) {
        printf("SKIP: no IPv4 address on a netdev with an RDMA device (set MS_RDMA_TEST_ADDR)\n");
        return MS_TEST_SKIP;
    }
    printf("rdma tests on %s\n", addr);
    const char *mb = getenv("MS_RDMA_TEST_MB");
    if (mb && atoi(mb) > 0)
        bulk_mb = (size_t)atoi(mb);
    if (getenv("MIGSTREAM_LOG"))
        ms_log_set_level(ms_log_level_parse(getenv("MIGSTREAM_LOG")));
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    static const ms_test_case cases[] = {
        {"options and address strings", t_options},
        {"stats of a non-rdma conn", t_stats_of_other_conn},
        {"listen on port 0, accept deadline", t_listen_port0},
        {"connects complete before accept (backlog)", t_connect_completes_before_accept},
        {"small messages both ways", t_small_messages},
        {"shutdown_send is end of stream", t_shutdown_is_end_of_stream},
        {"recv timeout, conn still usable", t_recv_timeout},
        {"send waits for credits then times out", t_send_blocks_on_credits_then_times_out},
        {"close delivers posted data, then CLOSED", t_close_delivers_then_closed},
        {"peer close during recv", t_peer_close_mid_recv},
        {"connect with no listener", t_no_listener},
        {"foreign / wrong-version peers rejected", t_foreign_and_wrong_version_peers_rejected},
        {"zero-copy cache detects a reused address", t_zcopy_cache_detects_reused_address},
        {"bulk, small ring, both ways", t_bulk_small_ring_both_ways},
        {"bulk, default ring", t_bulk_default_ring},
        {"bulk, copy only, mixed ring geometry", t_bulk_copy_only_mixed_geometry},
        {"4 parallel channels", t_parallel_channels},
        {NULL, NULL},
    };
    ms_test_add_suite("rdma", cases);
    return ms_test_run_all();
}
