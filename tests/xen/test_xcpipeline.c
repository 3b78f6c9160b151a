/* A libxc stream carried through the real migstream pipeline: reader ->
 * ms_sender -> socketpairs or TCP -> ms_receiver -> libxc writer sink, for
 * several codec chains, channel counts and with sealing; the rebuilt stream
 * must be byte-identical. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp/tcp.h"
#include "tests/ms_test.h"
#include "xen/xen.h"

#define MAXCH 8

static const uint8_t key[MS_KEY_SIZE] = {7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                         16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

typedef struct rx {
    ms_listener *l;
    ms_conn *conns[MAXCH];
    unsigned n;
    ms_session_config cfg;
    ms_buf out;
    int rc;
    char msg[512];
    pthread_t thread;
} rx;

static void *rx_main(void *arg)
{
    rx *r = arg;
    ms_xc_writer *w = NULL;
    ms_stats stats = {0};
    int rc = ms_xc_writer_new(ms_xc_out_buf, &r->out, &w);
    if (!rc && r->l) {
        ms_accepted a;
        rc = ms_accept_session(r->l, &r->cfg, 20000, &a);
        if (rc == MS_OK)
            rc = ms_receiver_run(&r->cfg, &a.hello, a.conns, a.keys, a.nconns, &ms_xc_writer_sink_ops, w, &stats);
        if (rc == MS_OK)
            ms_accepted_free(&a);
    } else if (!rc) {
        ms_hello first = {0};
        ms_session_keys keys[MAXCH];
        for (unsigned i = 0; i < r->n && !rc; i++) {
            ms_hello peer, mine = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
            rc = ms_handshake_server_read(r->conns[i], &peer);
            if (!rc)
                rc = ms_handshake_server_finish(r->conns[i], &peer, &mine, r->cfg.key, &keys[i]);
            if (i == 0)
                first = peer;
        }
        if (!rc)
            rc = ms_receiver_run(&r->cfg, &first, r->conns, keys, r->n, &ms_xc_writer_sink_ops, w, &stats);
    }
    if (rc < 0)
        snprintf(r->msg, sizeof(r->msg), "%s", ms_last_error());
    r->rc = rc;
    ms_stats_free(&stats);
    ms_xc_writer_free(w);
    return NULL;
}

/* Rounds as the preload sees them, approximated from the stream: a
 * PAGE_DATA whose first pfn is below the last one sent starts a pass. */
typedef struct tx {
    ms_xc_to_sender ts;
    uint64_t last_pfn;
    bool any;
    int rc;
} tx;

static int tx_record(void *ctx, const ms_xc_record *rec)
{
    tx *t = ctx;
    if (rec->type != MS_XC_REC_PAGE_DATA)
        return MS_OK;
    uint64_t first = ms_xc_entry_pfn(rec->entries[0]);
    if (t->any && first < t->last_pfn) {
        int rc = ms_sender_round_end(t->ts.sender, t->ts.round);
        if (rc)
            return rc;
        t->ts.round++;
    }
    t->any = true;
    t->last_pfn = ms_xc_entry_pfn(rec->entries[rec->count - 1]);
    return MS_OK;
}

static int tx_opaque(void *ctx, const uint8_t *d, size_t n)
{
    return ms_xc_reader_to_sender_cb.opaque(&((tx *)ctx)->ts, d, n);
}

static int tx_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    return ms_xc_reader_to_sender_cb.pages(&((tx *)ctx)->ts, rec, e, d, n);
}

static void run_case(const char *transport, const char *chain, unsigned channels, bool sealed, uint32_t dom,
                     double *ratio)
{
    ms_xc_gen_config g = {.dom_type = dom, .pages = 6000, .rounds = 4, .dirty = 0.1, .seed = 3,
                          .all_types = true};
    ms_buf s = {0};
    CU_ASSERT_EQUAL_FATAL(ms_xc_gen(&g, ms_xc_out_buf, &s), MS_OK);

    ms_session_config cfg = {.workers = 2, .timeout_ms = 10000, .key = sealed ? key : NULL};
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(chain, &cfg.chain), MS_OK);
    rx r = {.n = channels, .cfg = cfg};
    ms_conn *snd[MAXCH];
    if (!strcmp(transport, "tcp")) {
        ms_tcp_options opt = {.timeout_ms = 5000, .connect_retries = 3};
        CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("127.0.0.1", "0", &opt, &r.l), MS_OK);
        char port[16];
        snprintf(port, sizeof(port), "%u", r.l->port);
        for (unsigned i = 0; i < channels; i++)
            CU_ASSERT_EQUAL_FATAL(ms_tcp_connect("127.0.0.1", port, &opt, &snd[i]), MS_OK);
    } else {
        for (unsigned i = 0; i < channels; i++) {
            int sv[2];
            CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
            ms_fd_conn_new(sv[0], sv[0], true, &snd[i]);
            ms_fd_conn_new(sv[1], sv[1], true, &r.conns[i]);
        }
    }
    pthread_create(&r.thread, NULL, rx_main, &r);

    ms_sender *sender = NULL;
    int rc = ms_sender_open(&cfg, snd, channels, &sender);
    tx t = {.ts = {.sender = sender}};
    static const ms_xc_reader_cb cb = {.record = tx_record, .opaque = tx_opaque, .pages = tx_pages};
    ms_xc_reader *rd = NULL;
    if (!rc)
        rc = ms_xc_reader_new(&cb, &t, 0, &rd);
    for (size_t off = 0; !rc && off < s.len;) {
        size_t n = s.len - off < 200000 ? s.len - off : 200000, used = 0;
        rc = ms_xc_reader_push(rd, s.data + off, n, &used);
        off += used;
    }
    if (!rc)
        rc = ms_xc_reader_finish(rd);
    if (!rc)
        rc = ms_sender_round_end(sender, t.ts.round);
    if (!rc)
        rc = ms_sender_finish(sender);
    if (rc) {
        fprintf(stderr, "\n  %s %s x%u: sender: %s\n", transport, chain, channels, ms_last_error());
        if (sender)
            ms_sender_abort(sender, "test failed");
    }
    CU_ASSERT_EQUAL(rc, MS_OK);
    if (sender && ratio)
        *ratio = (double)s.len / (double)ms_sender_stats(sender)->total.wire_bytes;
    ms_sender_free(sender);
    ms_xc_reader_free(rd);
    pthread_join(r.thread, NULL);
    if (r.rc)
        fprintf(stderr, "\n  %s %s x%u: receiver: %s\n", transport, chain, channels, r.msg);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT(t.ts.round >= 4); /* the rounds really were rounds */
    CU_ASSERT(r.out.len == s.len && memcmp(r.out.data, s.data, s.len) == 0);
    ms_listener_close(r.l);
    for (unsigned i = 0; i < channels; i++)
        ms_conn_close(r.conns[i]);
    ms_buf_free(&r.out);
    ms_buf_free(&s);
}

static void test_fd_chains(void)
{
    static const char *const chains[] = {"none", "lz4", "zero,delta,lz4", "zero,zstd:1", "zero,dedup,delta,zstd:3"};
    for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
        ms_chain c;
        if (ms_chain_parse(chains[i], &c) != MS_OK)
            continue; /* a stage not built in this tree */
        run_case("fd", chains[i], 1, false, MS_XC_DOM_X86_HVM, NULL);
        run_case("fd", chains[i], 1, false, MS_XC_DOM_X86_PV, NULL);
    }
}

static void test_channels_sealed(void)
{
    for (unsigned ch = 1; ch <= 4; ch++)
        run_case("fd", "zero,delta,lz4", ch, ch % 2 == 0, ch % 2 ? MS_XC_DOM_X86_PV : MS_XC_DOM_X86_HVM, NULL);
}

static void test_tcp(void)
{
    double ratio = 0;
    run_case("tcp", "zero,delta,lz4", 2, true, MS_XC_DOM_X86_PV, &ratio);
    run_case("tcp", "none", 3, false, MS_XC_DOM_X86_HVM, NULL);
    printf("\n  zero,delta,lz4 on a synthetic PV stream: %.2fx smaller on the wire\n", ratio);
    CU_ASSERT(ratio > 1.5);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"libxc stream through every chain (fd)", test_fd_chains},
        {"1-4 channels, sealed and not", test_channels_sealed},
        {"tcp with 2 and 3 channels", test_tcp},
        {NULL, NULL},
    };
    ms_test_add_suite("xen", cases);
})
