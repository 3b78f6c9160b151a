/* Sender and receiver pipelines end to end over real connections: fd
 * socketpairs and TCP on loopback, 1..8 channels, several rounds with
 * mutated pages, opaque records in between, sealed and unsealed. The
 * receiver's image must equal the sender's final image byte for byte, and
 * the sink must have seen everything in the order it was sent. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "pipeline_harness.h"
#include "stream/pipeline_priv.h"

typedef struct params {
    const char *transport;
    unsigned channels, workers, queue_depth, frame_pages;
    const char *chain;
    bool sealed;
    unsigned npages, rounds, batch;
    double mutate;
    bool rewrite;          /* a mutated page is rewritten whole, not touched */
    unsigned opaque_every; /* an opaque record after every k batches (0: none) */
    const char *record;    /* path: also record the stream here */
} params;

typedef struct result {
    uint8_t *image;     /* sender's final image */
    size_t npages;
    th_events expect;   /* what the sink must see */
    ms_buf opaque;      /* all opaque bytes, in order */
    ms_stats rx_stats;
    uint64_t tx_pages, tx_raw, tx_digest;
    ms_stage_stats tx_stage;
} result;

static void result_free(result *r)
{
    free(r->image);
    free(r->expect.ev);
    ms_buf_free(&r->opaque);
    ms_stats_free(&r->rx_stats);
}

static void shuffle(uint64_t *v, size_t n, uint64_t *rng)
{
    for (size_t i = n; i > 1; i--) {
        *rng = th_mix(*rng);
        size_t j = *rng % i;
        uint64_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Pages of one round: round 0 all of them, later a mutated fraction. */
static size_t pick_round(const params *p, unsigned round, uint8_t *image, uint64_t *pfns, uint64_t *rng)
{
    size_t n = 0;
    for (size_t i = 0; i < p->npages; i++)
        pfns[i] = i;
    shuffle(pfns, p->npages, rng);
    if (round == 0)
        return p->npages;
    n = (size_t)(p->mutate * p->npages);
    if (n == 0)
        n = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t *page = image + pfns[i] * MS_PAGE_SIZE;
        if (!p->rewrite) {
            th_mutate_page(page, rng);
            continue;
        }
        for (size_t b = 0; b < MS_PAGE_SIZE; b += 8) {
            *rng = th_mix(*rng);
            memcpy(page + b, rng, 8);
        }
    }
    return n;
}

static int send_round(ms_sender *s, const params *p, unsigned round, result *res, uint64_t *pfns, size_t n,
                      uint64_t *rng)
{
    uint8_t *buf = malloc((size_t)p->batch * MS_PAGE_SIZE);
    unsigned batches = 0;
    int rc = MS_OK;
    for (size_t i = 0; i < n && rc == MS_OK; i += p->batch) {
        size_t k = n - i < p->batch ? n - i : p->batch;
        for (size_t j = 0; j < k; j++) {
            memcpy(buf + j * MS_PAGE_SIZE, res->image + pfns[i + j] * MS_PAGE_SIZE, MS_PAGE_SIZE);
            th_ev_add(&res->expect, TH_EV_PAGE | ((uint64_t)round << 40) | pfns[i + j]);
        }
        /* Buffer reused right after the call: the sender must have copied. */
        rc = ms_sender_pages(s, round, (uint32_t)(i / p->batch), pfns + i, buf, k);
        memset(buf, 0xee, k * MS_PAGE_SIZE);
        if (rc == MS_OK && p->opaque_every && ++batches % p->opaque_every == 0) {
            char rec[200];
            *rng = th_mix(*rng);
            int len = snprintf(rec, sizeof rec, "record r%u b%u %016llx", round, batches, (unsigned long long)*rng);
            len = (int)(1 + *rng % (unsigned)len);
            th_ev_add(&res->expect, TH_EV_OPAQUE | (uint64_t)len);
            ms_buf_append(&res->opaque, rec, (size_t)len);
            rc = ms_sender_opaque(s, round, rec, (size_t)len);
        }
    }
    free(buf);
    return rc;
}

/* One whole session; asserts success of both ends and returns what was
 * sent and received for the caller's further checks. */
static void run_session(const params *p, th_sink *sink, result *res)
{
    ms_conn *snd[TH_MAXCH] = {0};
    th_rx r;
    ms_sender *s = NULL;
    ms_conn *rec = NULL;
    uint64_t rng = 12345 + p->channels;
    uint64_t *pfns = malloc(p->npages * sizeof *pfns);
    int rc;

    memset(res, 0, sizeof *res);
    memset(&r, 0, sizeof r);
    res->npages = p->npages;
    res->image = malloc((size_t)p->npages * MS_PAGE_SIZE);
    for (size_t i = 0; i < p->npages; i++)
        th_fill_page(res->image + i * MS_PAGE_SIZE, i, 7);

    ms_session_config cfg = {.workers = p->workers, .queue_depth = p->queue_depth, .frame_pages = p->frame_pages,
                             .timeout_ms = 10000};
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(p->chain, &cfg.chain), MS_OK);
    if (p->sealed)
        cfg.key = th_key_a;
    if (p->record) {
        int fd = open(p->record, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(-1, fd, true, &rec), MS_OK);
        cfg.record = rec;
    }
    CU_ASSERT_EQUAL_FATAL(th_link(p->transport, p->channels, snd, &r), MS_OK);
    r.cfg = cfg;
    r.cfg.record = NULL;
    r.ops = &th_sink_ops;
    r.ctx = sink;
    th_rx_start(&r);

    rc = ms_sender_open(&cfg, snd, p->channels, &s);
    if (rc < 0)
        fprintf(stderr, "\n  sender open: %s\n", ms_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    for (unsigned round = 0; round < p->rounds && rc == MS_OK; round++) {
        size_t n = pick_round(p, round, res->image, pfns, &rng);
        rc = send_round(s, p, round, res, pfns, n, &rng);
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, round);
        th_ev_add(&res->expect, TH_EV_ROUND_END | round);
        /* The ack means delivered: the sink has seen this round's end. */
        if (rc == MS_OK)
            CU_ASSERT_EQUAL(th_sink_round_ends(sink), round + 1);
    }
    if (rc == MS_OK)
        rc = ms_sender_finish(s);
    th_ev_add(&res->expect, TH_EV_END);
    if (rc < 0)
        fprintf(stderr, "\n  sender: %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    const ms_stats *st = ms_sender_stats(s);
    res->tx_pages = st->total.pages;
    res->tx_raw = st->total.raw_bytes;
    res->tx_digest = st->content_hash;
    res->tx_stage = st->total.stage;
    if (rc == MS_OK)
        CU_ASSERT(st->verified);
    ms_sender_free(s);
    th_rx_join(&r);
    ms_conn_close(rec);
    if (r.rc < 0)
        fprintf(stderr, "\n  receiver: %s\n", r.msg);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    res->rx_stats = r.stats;
    free(pfns);
}

static void check_result(const params *p, th_sink *sink, result *res)
{
    CU_ASSERT_EQUAL(sink->barrier_violations, 0);
    CU_ASSERT_EQUAL(sink->ends, 1);
    CU_ASSERT_EQUAL(sink->round_ends, p->rounds);
    CU_ASSERT_EQUAL_FATAL(sink->img.mem_len, (uint64_t)res->npages * MS_PAGE_SIZE);
    CU_ASSERT(memcmp(sink->img.mem, res->image, res->npages * MS_PAGE_SIZE) == 0);
    CU_ASSERT_EQUAL(ms_image_digest(sink->img.mem, sink->img.mem_len, MS_PAGE_SIZE),
                    ms_image_digest(res->image, (uint64_t)res->npages * MS_PAGE_SIZE, MS_PAGE_SIZE));
    CU_ASSERT_EQUAL_FATAL(sink->img.opaque.len, res->opaque.len);
    if (res->opaque.len)
        CU_ASSERT(memcmp(sink->img.opaque.data, res->opaque.data, res->opaque.len) == 0);
    CU_ASSERT_EQUAL_FATAL(sink->events.n, res->expect.n);
    CU_ASSERT(memcmp(sink->events.ev, res->expect.ev, res->expect.n * sizeof(uint64_t)) == 0);
    CU_ASSERT_EQUAL(res->rx_stats.total.pages, res->tx_pages);
    CU_ASSERT_EQUAL(res->rx_stats.total.raw_bytes, res->tx_raw);
    CU_ASSERT_EQUAL(res->rx_stats.content_hash, res->tx_digest);
    CU_ASSERT(res->rx_stats.verified);
    CU_ASSERT_EQUAL(res->rx_stats.nrounds, p->rounds);
}

static void round_trip(const params *p)
{
    th_sink sink;
    result res;
    th_sink_init(&sink);
    run_session(p, &sink, &res);
    check_result(p, &sink, &res);
    result_free(&res);
    th_sink_free(&sink);
}

static params base(const char *transport, unsigned channels)
{
    return (params){.transport = transport, .channels = channels, .workers = 2, .chain = "zero,delta,lz4",
                    .npages = 1500, .rounds = 3, .batch = 100, .mutate = 0.1, .opaque_every = 4};
}

static void test_fd_none_one_round(void)
{
    params p = base("fd", 1);
    p.chain = "none";
    p.rounds = 1;
    round_trip(&p);
}

static void test_fd_channels_1_to_8(void)
{
    for (unsigned ch = 1; ch <= 8; ch++) {
        params p = base("fd", ch);
        round_trip(&p);
    }
}

static void test_tcp_channels_1_to_8(void)
{
    for (unsigned ch = 1; ch <= 8; ch++) {
        params p = base("tcp", ch);
        p.sealed = ch % 2 == 0;
        round_trip(&p);
    }
}

static void test_chains(void)
{
    static const char *chains[] = {"none", "lz4", "zstd:1", "zero", "zero,delta", "delta,zstd:3", "zero,delta,lz4:8",
                                   "zero,delta,auto", "auto"};
    for (size_t i = 0; i < sizeof chains / sizeof *chains; i++) {
        params p = base("fd", 3);
        p.chain = chains[i];
        round_trip(&p);
    }
}

/* Pages rewritten whole every round: auto's sender passes delta over and
 * keeps no copies (UNKEPT), the receiver follows from the tags alone, and
 * every round still arrives intact. A fixed chain never gates. */
static void test_auto_gates_delta(void)
{
    for (int fixed = 0; fixed < 2; fixed++) {
        params p = base("fd", 3);
        p.chain = fixed ? "zero,delta,lz4" : "zero,delta,auto";
        p.rounds = 12;
        p.mutate = 1.0;
        p.rewrite = true;
        p.opaque_every = 0;
        th_sink sink;
        result res;
        th_sink_init(&sink);
        run_session(&p, &sink, &res);
        check_result(&p, &sink, &res);
        if (fixed) {
            CU_ASSERT_EQUAL(res.tx_stage.delta_off, 0);
            CU_ASSERT_EQUAL(res.tx_stage.delta, 0);
            CU_ASSERT_EQUAL(res.tx_stage.delta_nogain + res.tx_stage.delta_miss + res.tx_stage.zero, 12u * p.npages);
        } else {
            CU_ASSERT(res.tx_stage.delta_off >= 11u * p.npages / 2);
            CU_ASSERT(res.tx_stage.unkept > 0);
        }
        CU_ASSERT_EQUAL(res.rx_stats.total.stage.unkept, res.tx_stage.unkept);
        result_free(&res);
        th_sink_free(&sink);
    }
}

static void test_sealed_many_rounds(void)
{
    params p = base("tcp", 4);
    p.sealed = true;
    p.rounds = 8;
    p.mutate = 0.3;
    p.batch = 37;          /* batches that straddle frames */
    p.frame_pages = 16;
    round_trip(&p);
}

/* Many small records among page batches, across channels: the sink must
 * get them in exactly the order they were queued. */
static void test_opaque_interleaved(void)
{
    params p = base("fd", 5);
    p.opaque_every = 1;
    p.batch = 7;
    p.frame_pages = 3;
    p.npages = 400;
    round_trip(&p);
}

/* A receiver thread delivering to `ops`/`ctx` and a sender, both with
 * `cfg`, over `channels` links of `transport`. */
static ms_sender *open_session(const char *transport, unsigned channels, const ms_session_config *cfg,
                               const ms_sink_ops *ops, void *ctx, th_rx *r)
{
    ms_conn *snd[TH_MAXCH] = {0};
    ms_sender *s = NULL;
    memset(r, 0, sizeof *r);
    CU_ASSERT_EQUAL_FATAL(th_link(transport, channels, snd, r), MS_OK);
    r->cfg = *cfg;
    r->ops = ops;
    r->ctx = ctx;
    th_rx_start(r);
    CU_ASSERT_EQUAL_FATAL(ms_sender_open(cfg, snd, channels, &s), MS_OK);
    return s;
}

/* Large opaque records are split into frames and come back whole. */
static void test_opaque_large(void)
{
    th_rx r;
    th_sink sink;
    size_t len = 5 * 1024 * 1024 + 77;
    uint8_t *big = malloc(len);
    for (size_t i = 0; i < len; i++)
        big[i] = (uint8_t)th_mix(i / 8);
    th_sink_init(&sink);
    ms_session_config cfg = {.workers = 2, .frame_pages = 64, .timeout_ms = 10000};
    ms_chain_parse("zstd:1", &cfg.chain);
    ms_sender *s = open_session("fd", 2, &cfg, &th_sink_ops, &sink, &r);
    CU_ASSERT_EQUAL(ms_sender_opaque(s, 0, big, len), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_round_end(s, 0), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_finish(s), MS_OK);
    ms_sender_free(s);
    th_rx_join(&r);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT_EQUAL_FATAL(sink.img.opaque.len, len);
    CU_ASSERT(memcmp(sink.img.opaque.data, big, len) == 0);
    CU_ASSERT_EQUAL(r.stats.total.opaque_bytes, len);
    ms_stats_free(&r.stats);
    th_sink_free(&sink);
    free(big);
}

/* Rounds are barriers: a sink that checks it sees no page of round r+1
 * before round_end(r), with many channels racing (check_result asserts no
 * violation; this runs the case most likely to expose one). */
static void test_round_barriers(void)
{
    params p = base("tcp", 8);
    p.rounds = 12;
    p.mutate = 0.05;
    p.batch = 5;
    p.frame_pages = 2;
    p.npages = 600;
    p.opaque_every = 0;
    round_trip(&p);
}

/* Misuse of rounds is refused without breaking the session. */
static void test_round_misuse(void)
{
    th_rx r;
    th_sink sink;
    uint64_t pfn = 3;
    uint8_t page[MS_PAGE_SIZE] = {1};
    th_sink_init(&sink);
    ms_session_config cfg = {.workers = 1, .timeout_ms = 10000};
    ms_chain_parse("zero,lz4", &cfg.chain);
    ms_sender *s = open_session("fd", 1, &cfg, &th_sink_ops, &sink, &r);
    CU_ASSERT_EQUAL(ms_sender_pages(s, 1, 0, &pfn, page, 1), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_pages(s, 2, 0, &pfn, page, 1), MS_ERR_INVAL);
    th_expect_msg(ms_last_error(), "round 1 is open");
    CU_ASSERT_EQUAL(ms_sender_round_end(s, 0), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_sender_round_end(s, 1), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_pages(s, 1, 0, &pfn, page, 1), MS_ERR_INVAL);
    th_expect_msg(ms_last_error(), "after round 1 ended");
    CU_ASSERT_EQUAL(ms_sender_pages(s, 5, 0, &pfn, page, 1), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_round_end(s, 5), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_finish(s), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_pages(s, 6, 0, &pfn, page, 1), MS_ERR_INVAL);
    ms_sender_free(s);
    th_rx_join(&r);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT_EQUAL(sink.round_ends, 2);
    CU_ASSERT_EQUAL(sink.pages, 2);
    ms_stats_free(&r.stats);
    th_sink_free(&sink);
}

/* Receive the recorded stream at `path` into `sink`. */
static int replay_record(const char *path, const ms_session_config *cfg, th_sink *sink, ms_stats *st,
                         ms_hello *hello)
{
    ms_conn *c;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(fd, -1, true, &c), MS_OK);
    int rc = ms_receive_stream(c, cfg, &th_sink_ops, sink, st, hello);
    ms_conn_close(c);
    return rc;
}

/* Recording: the record file is a one-channel stream that a receiver reads
 * back into the same image, sealed or not. */
static void record_and_replay(bool sealed)
{
    char path[] = "/tmp/ms_test_recordXXXXXX";
    int tfd = mkstemp(path);
    close(tfd);
    params p = base("tcp", 3);
    p.sealed = sealed;
    p.record = path;
    th_sink sink, sink2;
    result res;
    th_sink_init(&sink);
    th_sink_init(&sink2);
    run_session(&p, &sink, &res);
    check_result(&p, &sink, &res);

    ms_stats st = {0};
    ms_hello hello;
    ms_session_config cfg = {.workers = 2, .key = sealed ? th_key_a : NULL};
    int rc = replay_record(path, &cfg, &sink2, &st, &hello);
    if (rc < 0)
        fprintf(stderr, "\n  replay of record: %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_EQUAL(hello.channels, 1);
    CU_ASSERT(hello.flags & MS_HELLO_F_ONEWAY);
    CU_ASSERT_EQUAL_FATAL(sink2.img.mem_len, sink.img.mem_len);
    CU_ASSERT(memcmp(sink2.img.mem, res.image, res.npages * MS_PAGE_SIZE) == 0);
    CU_ASSERT_EQUAL(sink2.events.n, res.expect.n);
    CU_ASSERT(memcmp(sink2.events.ev, res.expect.ev, res.expect.n * sizeof(uint64_t)) == 0);
    CU_ASSERT_EQUAL(st.content_hash, res.tx_digest);
    ms_stats_free(&st);

    if (sealed) {
        /* The record needs the key it was written with. */
        th_sink sink3;
        th_sink_init(&sink3);
        cfg.key = th_key_b;
        CU_ASSERT_EQUAL(replay_record(path, &cfg, &sink3, &st, NULL), MS_ERR_AUTH);
        ms_stats_free(&st);
        th_sink_free(&sink3);
    }
    unlink(path);
    result_free(&res);
    th_sink_free(&sink);
    th_sink_free(&sink2);
}

static void test_record_plain(void) { record_and_replay(false); }
static void test_record_sealed(void) { record_and_replay(true); }

/* A record cut short is refused as truncated, never accepted. */
static void test_record_truncated(void)
{
    char path[] = "/tmp/ms_test_recordXXXXXX";
    int tfd = mkstemp(path);
    close(tfd);
    params p = base("fd", 2);
    p.record = path;
    th_sink sink;
    result res;
    th_sink_init(&sink);
    run_session(&p, &sink, &res);
    struct stat sb;
    CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
    off_t cuts[] = {sb.st_size - 1, sb.st_size - 40, sb.st_size / 2, MS_HELLO_SIZE + 3};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        th_sink s2;
        ms_stats st = {0};
        th_sink_init(&s2);
        CU_ASSERT_EQUAL(truncate(path, cuts[i]), 0);
        ms_session_config cfg = {.workers = 1};
        CU_ASSERT_EQUAL(replay_record(path, &cfg, &s2, &st, NULL), MS_ERR_TRUNCATED);
        CU_ASSERT_EQUAL(s2.ends, 0);
        ms_stats_free(&st);
        th_sink_free(&s2);
    }
    unlink(path);
    result_free(&res);
    th_sink_free(&sink);
}

/* ---- bounded memory ------------------------------------------------------ */

/* Current resident size (not the peak, which earlier tests set). */
static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 1 GiB streamed through a tiny queue: memory must stay flat (the digest
 * sink keeps 8 bytes per page, not the pages). Pages are generated on the
 * fly and the same pfns are reused, so nothing else grows either. */
static void test_bounded_memory(void)
{
    th_rx r;
    ms_digest_sink dsink = {0};
    const unsigned batch = 64, fragments = 4096;
    uint64_t pfns[64];
    uint8_t *buf = malloc(batch * MS_PAGE_SIZE);
    int rc = MS_OK;

    ms_session_config cfg = {.workers = 2, .queue_depth = 2, .frame_pages = 8, .timeout_ms = 10000};
    ms_chain_parse("none", &cfg.chain);
    ms_sender *s = open_session("tcp", 2, &cfg, &ms_digest_sink_ops, &dsink, &r);
    long before = 0, peak = 0;
    for (unsigned f = 0; f < fragments && rc == MS_OK; f++) {
        for (unsigned i = 0; i < batch; i++) {
            pfns[i] = (f % 16) * batch + i;
            memset(buf + i * MS_PAGE_SIZE, (int)(f + i), MS_PAGE_SIZE);
        }
        rc = ms_sender_pages(s, 0, f, pfns, buf, batch);
        if (f == 64)
            before = rss_kib();
        if (f > 64 && f % 64 == 0) {
            long now = rss_kib();
            peak = now > peak ? now : peak;
        }
    }
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_EQUAL(ms_sender_round_end(s, 0), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_finish(s), MS_OK);
    CU_ASSERT_EQUAL(ms_sender_stats(s)->total.pages, (uint64_t)fragments * batch);
    ms_sender_free(s);
    th_rx_join(&r);
    CU_ASSERT_EQUAL(r.rc, MS_OK);
    CU_ASSERT_EQUAL(r.stats.total.raw_bytes, (uint64_t)fragments * batch * MS_PAGE_SIZE);
    /* 1 GiB went through; the process may not have grown by more than a
     * few MiB after the first fragments (queue 2 x 8 pages per side). */
    fprintf(stderr, " [RSS %ld KiB after warm-up, at most %ld KiB later] ", before, peak);
    CU_ASSERT(peak - before < 16 * 1024);
    ms_stats_free(&r.stats);
    ms_digest_sink_free(&dsink);
    free(buf);
}

/* ---- sinks and digests --------------------------------------------------- */

static void test_digest_sink_matches_image(void)
{
    ms_digest_sink d = {0};
    ms_image_sink img = {0};
    d.inner = &ms_image_sink_ops;
    d.inner_ctx = &img;
    uint8_t pages[3 * MS_PAGE_SIZE];
    uint64_t pfns[3] = {7, 2, 5};
    for (int i = 0; i < 3; i++)
        th_fill_page(pages + i * MS_PAGE_SIZE, 100 + (uint64_t)i, 3);
    CU_ASSERT_EQUAL(ms_digest_sink_ops.pages(&d, 0, 0, pfns, pages, 3, MS_PAGE_SIZE), MS_OK);
    CU_ASSERT_EQUAL(img.mem_len, 8u * MS_PAGE_SIZE);
    CU_ASSERT_EQUAL(ms_digest_sink_value(&d), ms_image_digest(img.mem, img.mem_len, MS_PAGE_SIZE));
    /* A short image counts as zero-padded. */
    uint8_t two[2 * MS_PAGE_SIZE] = {0};
    th_fill_page(two, 9, 9);
    two[MS_PAGE_SIZE] = 5;
    CU_ASSERT_EQUAL(ms_image_digest(two, MS_PAGE_SIZE + 1, MS_PAGE_SIZE),
                    ms_image_digest(two, 2 * MS_PAGE_SIZE, MS_PAGE_SIZE));
    CU_ASSERT_NOT_EQUAL(ms_image_digest(two, MS_PAGE_SIZE, MS_PAGE_SIZE),
                        ms_image_digest(two, 2 * MS_PAGE_SIZE, MS_PAGE_SIZE));
    /* Bounds: a pfn beyond the image limit is refused. */
    img.max_bytes = 16 * MS_PAGE_SIZE;
    uint64_t far = 16;
    CU_ASSERT_EQUAL(ms_image_sink_ops.pages(&img, 0, 0, &far, pages, 1, MS_PAGE_SIZE), MS_ERR_LIMIT);
    ms_digest_sink_free(&d);
    ms_image_sink_free(&img);
}

static void test_file_sink(void)
{
    char path[] = "/tmp/ms_test_fsinkXXXXXX";
    int fd = mkstemp(path);
    ms_file_sink fs = {.fd = fd, .opaque_fd = -1};
    uint8_t pages[4 * MS_PAGE_SIZE], back[MS_PAGE_SIZE];
    uint64_t pfns[4] = {3, 4, 5, 1};
    for (int i = 0; i < 4; i++)
        th_fill_page(pages + i * MS_PAGE_SIZE, 50 + (uint64_t)i, 1);
    CU_ASSERT_EQUAL(ms_file_sink_ops.pages(&fs, 0, 0, pfns, pages, 4, MS_PAGE_SIZE), MS_OK);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(pread(fd, back, MS_PAGE_SIZE, (off_t)(pfns[i] * MS_PAGE_SIZE)), MS_PAGE_SIZE);
        CU_ASSERT(memcmp(back, pages + i * MS_PAGE_SIZE, MS_PAGE_SIZE) == 0);
    }
    close(fd);
    unlink(path);
}

/* ms_content_hash, which the pipelines use for every frame, runs the
 * dispatching (AVX2) XXH3: its values must be exactly those of the plain
 * XXH3 over the wire bytes (little-endian pfns, then the data), or two
 * ends built differently would disagree. */
static void test_content_hash_matches_wire(void)
{
    static const size_t counts[] = {0, 1, 3, 255, 256, 257, 1024};
    uint8_t *pages = malloc(1024 * MS_PAGE_SIZE), *flat = malloc(1024 * (8 + MS_PAGE_SIZE));
    uint64_t pfns[1024];
    for (size_t i = 0; i < 1024; i++) {
        pfns[i] = th_mix(i) >> 12;
        th_fill_page(pages + i * MS_PAGE_SIZE, i, 11);
    }
    for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
        size_t n = counts[k];
        for (size_t i = 0; i < n; i++)
            ms_put_le64(flat + 8 * i, pfns[i]);
        memcpy(flat + 8 * n, pages, n * MS_PAGE_SIZE);
        CU_ASSERT_EQUAL(ms_content_hash(pfns, n, pages, n * MS_PAGE_SIZE), XXH3_64bits(flat, n * (8 + MS_PAGE_SIZE)));
        CU_ASSERT_EQUAL(ms_content_hash(NULL, 0, pages, n * 7 + 1), XXH3_64bits(pages, n * 7 + 1));
    }
    CU_ASSERT_EQUAL(ms_content_hash(NULL, 0, NULL, 0), XXH3_64bits(NULL, 0));
    free(flat);
    free(pages);
}

static void test_stats_output(void)
{
    ms_stats st = {0};
    ms_round_stats *r = ms_stats_round(&st, 0);
    r->pages = 10;
    r->raw_bytes = 40960;
    r->wire_bytes = 1000;
    r = ms_stats_round(&st, 1);
    r->pages = 2;
    r->raw_bytes = 8192;
    r->wire_bytes = 500;
    CU_ASSERT_EQUAL(ms_stats_round(&st, 0)->pages, 10);
    for (size_t i = 0; i < st.nrounds; i++)
        ms_round_stats_add(&st.total, &st.rounds[i]);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ms_stats_json(&st, f);
    fclose(f);
    th_expect_msg(text, "\"pages\":12");
    th_expect_msg(text, "\"rounds\":[{\"round\":0");
    free(text);
    f = open_memstream(&text, &len);
    ms_stats_print(&st, "test", f);
    fclose(f);
    th_expect_msg(text, "2 rounds");
    free(text);
    ms_stats_free(&st);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"fd, none, one round", test_fd_none_one_round},
        {"fd, 1..8 channels, rounds, mutation", test_fd_channels_1_to_8},
        {"tcp, 1..8 channels, sealed on even", test_tcp_channels_1_to_8},
        {"every chain", test_chains},
        {"auto gates delta on pages rewritten whole", test_auto_gates_delta},
        {"sealed, 8 rounds, odd batches", test_sealed_many_rounds},
        {"opaque records interleaved in order", test_opaque_interleaved},
        {"large opaque record split and joined", test_opaque_large},
        {"round barriers with 8 channels", test_round_barriers},
        {"round misuse refused", test_round_misuse},
        {"record and replay", test_record_plain},
        {"record and replay, sealed", test_record_sealed},
        {"truncated record refused", test_record_truncated},
        {"bounded memory, 1 GiB through a tiny queue", test_bounded_memory},
        {"digest sink equals image digest", test_digest_sink_matches_image},
        {"file sink", test_file_sink},
        {"stats text and JSON", test_stats_output},
        {"content hash (dispatching XXH3) equals plain XXH3", test_content_hash_matches_wire},
        {NULL, NULL},
    };
    ms_test_add_suite("pipeline", cases);
})
