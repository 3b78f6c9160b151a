/* Pipeline benchmark: the sender and receiver pipelines over loopback TCP,
 * against a plain TCP sender/receiver moving the same bytes in the same run.
 *
 *  1. chain `none`, one connection, one worker per side, vs plain TCP
 *     (bench_common.h: blocking write/read of 1 MiB, no framing);
 *  2. `lz4` on a mixed sample with 2 channels / 2 workers vs 1 / 1;
 *  3. with --memory SIZE: SIZE of generated pages (never stored) through
 *     zero,delta,lz4, and the process's peak resident size against the
 *     documented bound.
 * Sender and receiver run in this one process, so on a 2-core machine they
 * share both cores: every figure includes the receiver's work too. Runs are
 * interleaved and the median of --repeat is reported. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench/bench_common.h"
#include "stream/stream.h"
#include "tcp/tcp.h"

#define POOL_PAGES 16384u /* 64 MiB of sample pages, cycled */
#define BATCH 256u

typedef struct prun {
    const char *chain;
    unsigned channels, workers, queue_depth, frame_pages;
    uint64_t bytes;
    const uint8_t *pool;   /* NULL: generate every page (memory test) */
    unsigned pool_pages;   /* pages of pool cycled through (a multiple of BATCH) */
    bool drain;            /* one-way session into a receiver that only drains the sockets */
    double secs, tx_cpu, rx_cpu;
    uint64_t wire, raw;
    int rc;
    char msg[512];
} prun;

typedef struct rx_arg {
    ms_listener *l;
    bool drain;
    ms_session_config cfg;
    ms_stats stats;
    int rc;
    char msg[512];
} rx_arg;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A guest-like mix: 40% zero, 25% text, 20% pointer-rich, 15% random. */
static void gen_page(uint8_t *p, uint64_t pfn, uint32_t version)
{
    static const char text[] = "static int migrate(struct page *p) { return copy(p, PAGE_SIZE); } /* memory */ ";
    uint64_t k = mix(pfn) % 100, r = mix(pfn ^ 0xabcdef);
    memset(p, 0, MS_PAGE_SIZE);
    if (k >= 40 && k < 65) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i++)
            p[i] = (uint8_t)text[(i + r % 61) % (sizeof text - 1)];
    } else if (k >= 65 && k < 85) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i += 8)
            ms_put_le64(p + i, (mix(r + i) & 3) ? 0x00007f0000000000ull + (mix(r + i) & 0xfffff8) : 0);
    } else if (k >= 85) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i += 8)
            ms_put_le64(p + i, mix(r + i));
    }
    if (version)
        for (size_t i = 0; i < 64; i++)
            p[(mix(pfn + version) % (MS_PAGE_SIZE - 64)) + i] ^= (uint8_t)(version + i);
}

/* Reads and drops a channel's bytes until the sender hangs up. */
static void *drain_main(void *arg)
{
    ms_conn *c = arg;
    size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    while (buf && ms_conn_recv(c, buf, cap, NULL) == MS_OK)
        ;
    free(buf);
    return NULL;
}

static void *rx_main(void *arg)
{
    rx_arg *r = arg;
    ms_accepted a;
    r->rc = ms_accept_session(r->l, &r->cfg, 30000, &a);
    if (r->rc == MS_OK && r->drain) {
        pthread_t t[16];
        for (unsigned i = 0; i < a.nconns; i++)
            pthread_create(&t[i], NULL, drain_main, a.conns[i]);
        for (unsigned i = 0; i < a.nconns; i++)
            pthread_join(t[i], NULL);
        ms_accepted_free(&a);
        return NULL;
    }
    if (r->rc == MS_OK)
        r->rc = ms_receiver_run(&r->cfg, &a.hello, a.conns, a.keys, a.nconns, &ms_discard_sink_ops, NULL, &r->stats);
    if (r->rc < 0)
        snprintf(r->msg, sizeof r->msg, "%s", ms_last_error());
    ms_accepted_free(&a); /* zeroed by a failed accept */
    return NULL;
}

/* One round of npages pages, pfns 0 upward: from the sample pool (cycled)
 * or generated at `version`. */
static int send_round(ms_sender *s, const prun *p, uint32_t round, uint64_t npages, uint8_t *buf)
{
    uint64_t pfns[BATCH];
    int rc = MS_OK;
    for (uint64_t i = 0; i < npages && rc == MS_OK; i += BATCH) {
        size_t n = npages - i < BATCH ? (size_t)(npages - i) : BATCH;
        const uint8_t *pages = buf;
        for (size_t j = 0; j < n; j++)
            pfns[j] = i + j;
        if (p->pool)
            pages = p->pool + (size_t)(i % p->pool_pages) * MS_PAGE_SIZE; /* BATCH divides pool_pages */
        else
            for (size_t j = 0; j < n; j++)
                gen_page(buf + j * MS_PAGE_SIZE, pfns[j], round);
        rc = ms_sender_pages(s, round, (uint32_t)(i / BATCH), pfns, pages, n);
    }
    return rc;
}

/* Throughput runs: one round. Memory test: the same pfns twice, changed the
 * second time, so the delta cache fills, hits and evicts. */
static int send_pages(ms_sender *s, const prun *p)
{
    uint64_t pages = p->bytes / MS_PAGE_SIZE;
    uint8_t *buf = p->pool ? NULL : malloc((size_t)BATCH * MS_PAGE_SIZE);
    int rc;
    if (!p->pool && !buf)
        return ms_error(MS_ERR_NOMEM, "out of memory");
    if (p->pool) {
        rc = send_round(s, p, 0, pages, buf);
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, 0);
    } else {
        rc = send_round(s, p, 0, pages / 2, buf);
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, 0);
        if (rc == MS_OK)
            rc = send_round(s, p, 1, pages - pages / 2, buf);
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, 1);
    }
    free(buf);
    return rc;
}

static void run(prun *p)
{
    ms_tcp_options opt = {.timeout_ms = 30000};
    ms_conn *conns[16];
    ms_sender *s = NULL;
    rx_arg r;
    pthread_t t;
    char port[16];

    memset(&r, 0, sizeof r);
    p->rc = ms_tcp_listen("127.0.0.1", "0", &opt, &r.l);
    if (p->rc < 0) {
        snprintf(p->msg, sizeof p->msg, "%s", ms_last_error());
        return;
    }
    snprintf(port, sizeof port, "%u", r.l->port);
    r.cfg = (ms_session_config){.workers = p->workers, .queue_depth = p->queue_depth, .timeout_ms = 30000};
    r.drain = p->drain;
    if (getenv("BENCH_FRAME_PAGES") && !p->frame_pages)
        p->frame_pages = (unsigned)atoi(getenv("BENCH_FRAME_PAGES"));
    if (getenv("BENCH_QUEUE_DEPTH") && !p->queue_depth)
        p->queue_depth = r.cfg.queue_depth = (unsigned)atoi(getenv("BENCH_QUEUE_DEPTH"));
    pthread_create(&t, NULL, rx_main, &r);
    ms_session_config cfg = {.workers = p->workers, .queue_depth = p->queue_depth, .frame_pages = p->frame_pages,
                             .timeout_ms = 30000, .oneway = p->drain};
    ms_chain_parse(p->chain, &cfg.chain);
    uint64_t t0 = ms_now_ns();
    for (unsigned i = 0; i < p->channels && p->rc == MS_OK; i++)
        p->rc = ms_tcp_connect("127.0.0.1", port, &opt, &conns[i]);
    if (p->rc == MS_OK)
        p->rc = ms_sender_open(&cfg, conns, p->channels, &s);
    if (p->rc == MS_OK)
        p->rc = send_pages(s, p);
    if (p->rc == MS_OK)
        p->rc = ms_sender_finish(s);
    if (p->rc < 0)
        snprintf(p->msg, sizeof p->msg, "%s", ms_last_error());
    if (s) {
        p->tx_cpu = ms_sender_stats(s)->cpu_s;
        p->wire = ms_sender_stats(s)->total.wire_bytes;
        p->raw = ms_sender_stats(s)->total.raw_bytes;
    }
    ms_sender_free(s);
    pthread_join(t, NULL);
    p->secs = (double)(ms_now_ns() - t0) / 1e9;
    p->rx_cpu = r.stats.cpu_s;
    if (p->rc == MS_OK && r.rc < 0) {
        p->rc = r.rc;
        snprintf(p->msg, sizeof p->msg, "receiver: %.500s", r.msg);
    }
    ms_stats_free(&r.stats);
    ms_listener_close(r.l);
}

static double gbps(const prun *p) { return p->rc < 0 || p->secs <= 0 ? 0 : (double)p->raw / p->secs / 1e9; }

static int check(const prun *p)
{
    if (p->rc < 0) {
        fprintf(stderr, "bench_pipeline: %s %u/%u: %s\n", p->chain, p->channels, p->workers, p->msg);
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_pipeline [--bytes SIZE] [--repeat N] [--memory SIZE] [--json]\n"
               "  --bytes SIZE    bytes per run (default 1G)\n"
               "  --repeat N      runs of each configuration, median reported (default 3)\n"
               "  --memory SIZE   also stream SIZE (e.g. 4G) through zero,delta,lz4 and report\n"
               "                  peak resident size against the documented bound\n"
               "  --skip-throughput  only the memory test\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bytes", required_argument, NULL, 'b'}, {"repeat", required_argument, NULL, 'r'},
        {"memory", required_argument, NULL, 'm'}, {"json", no_argument, NULL, 'j'},
        {"skip-throughput", no_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    uint64_t bytes = 1ull << 30, mem_bytes = 0;
    int repeat = 3, c;
    bool json = false, skip = false;
    while ((c = getopt_long(argc, argv, "b:r:m:jsh", opts, NULL)) != -1) {
        switch (c) {
        case 'b': if (ms_parse_size(optarg, &bytes) < 0) return usage(stderr), 2; break;
        case 'r': repeat = atoi(optarg); break;
        case 'm': if (ms_parse_size(optarg, &mem_bytes) < 0) return usage(stderr), 2; break;
        case 'j': json = true; break;
        case 's': skip = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (repeat < 1 || repeat > 50)
        repeat = 3;
    bytes -= bytes % ((uint64_t)BATCH * MS_PAGE_SIZE);

    double plain[50], none[50], lz1[50], lz2[50], none_cpu[50], lz1_cpu[50], lz2_cpu[50], ratio = 0;
    double sd1[50], sd2[50], z1[50], z2[50];
    uint8_t *pool = skip ? NULL : malloc((size_t)POOL_PAGES * MS_PAGE_SIZE);
    if (!skip && !pool)
        return 1;
    for (unsigned i = 0; pool && i < POOL_PAGES; i++)
        gen_page(pool + (size_t)i * MS_PAGE_SIZE, i, 0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    for (int i = 0; i < repeat && !skip; i++) {
        /* `none` cycles 1 MiB, as the plain baseline resends one 1 MiB
         * buffer: the same bytes, equally warm in the caches. */
        prun pn = {.chain = "none", .channels = 1, .workers = 1, .bytes = bytes, .pool = pool, .pool_pages = BATCH};
        prun p1 = {.chain = "lz4", .channels = 1, .workers = 1, .bytes = bytes / 2, .pool = pool,
                   .pool_pages = POOL_PAGES};
        prun p2 = {.chain = "lz4", .channels = 2, .workers = 2, .bytes = bytes / 2, .pool = pool,
                   .pool_pages = POOL_PAGES};
        plain[i] = ms_bench_plain_tcp_gbps(bytes);
        if (plain[i] < 0) {
            fprintf(stderr, "bench_pipeline: plain TCP: %s\n", ms_last_error());
            return 1;
        }
        prun s1 = p1, s2 = p2, zs1 = p1, zs2 = p2;
        s1.drain = s2.drain = zs1.drain = zs2.drain = true;
        /* Contrast: a codec whose cost dominates everything else. */
        zs1.chain = zs2.chain = "zstd:3";
        zs1.bytes = zs2.bytes = bytes / 8 - (bytes / 8) % ((uint64_t)BATCH * MS_PAGE_SIZE);
        run(&pn);
        run(&p1);
        run(&p2);
        run(&s1);
        run(&s2);
        run(&zs1);
        run(&zs2);
        if (check(&pn) || check(&p1) || check(&p2) || check(&s1) || check(&s2) || check(&zs1) || check(&zs2))
            return 1;
        z1[i] = gbps(&zs1);
        z2[i] = gbps(&zs2);
        sd1[i] = gbps(&s1);
        sd2[i] = gbps(&s2);
        none[i] = gbps(&pn);
        lz1[i] = gbps(&p1);
        lz2[i] = gbps(&p2);
        /* CPU seconds of both sides per GiB moved. */
        none_cpu[i] = (pn.tx_cpu + pn.rx_cpu) / ((double)pn.raw / (1 << 30));
        lz1_cpu[i] = (p1.tx_cpu + p1.rx_cpu) / ((double)p1.raw / (1 << 30));
        lz2_cpu[i] = (p2.tx_cpu + p2.rx_cpu) / ((double)p2.raw / (1 << 30));
        ratio = p1.wire ? (double)p1.raw / (double)p1.wire : 0;
        if (!json)
            fprintf(stderr, "run %d: plain %.3f GB/s, none %.3f, lz4 1/1 %.3f, lz4 2/2 %.3f, sender-only lz4 1/1 %.3f, "
                            "2/2 %.3f, zstd:3 1/1 %.3f, 2/2 %.3f\n", i + 1, plain[i], none[i], lz1[i], lz2[i], sd1[i],
                    sd2[i], z1[i], z2[i]);
    }
    if (!skip) {
        double mp = ms_bench_median(plain, repeat), mn = ms_bench_median(none, repeat);
        double m1 = ms_bench_median(lz1, repeat), m2 = ms_bench_median(lz2, repeat);
        double cn = ms_bench_median(none_cpu, repeat), c1 = ms_bench_median(lz1_cpu, repeat),
               c2 = ms_bench_median(lz2_cpu, repeat);
        double ms1 = ms_bench_median(sd1, repeat), ms2 = ms_bench_median(sd2, repeat);
        double mz1 = ms_bench_median(z1, repeat), mz2 = ms_bench_median(z2, repeat);
        if (json) {
            printf("{\"cores\":%ld,\"bytes\":%" PRIu64 ",\"repeat\":%d,\"plain_tcp_GBps\":%.4f,\"none_1ch_GBps\":%.4f,"
                   "\"none_vs_plain\":%.4f,\"lz4_1x1_GBps\":%.4f,\"lz4_2x2_GBps\":%.4f,\"lz4_speedup\":%.4f,"
                   "\"lz4_ratio\":%.3f,\"cpu_s_per_GiB\":{\"none\":%.3f,\"lz4_1x1\":%.3f,\"lz4_2x2\":%.3f},"
                   "\"sender_only_lz4_1x1_GBps\":%.4f,\"sender_only_lz4_2x2_GBps\":%.4f,\"sender_only_speedup\":%.4f,"
                   "\"sender_only_zstd3_1x1_GBps\":%.4f,\"sender_only_zstd3_2x2_GBps\":%.4f,\"zstd3_speedup\":%.4f}\n",
                   ncpu, bytes, repeat, mp, mn, mn / mp, m1, m2, m2 / m1, ratio, cn, c1, c2, ms1, ms2, ms2 / ms1, mz1,
                   mz2, mz2 / mz1);
        } else {
            printf("pipeline benchmark, %ld cores, %" PRIu64 " MiB per run (lz4: half), median of %d\n", ncpu,
                   bytes >> 20, repeat);
            printf("  plain TCP, 1 connection           %7.3f GB/s\n", mp);
            printf("  none, 1 channel, 1 worker/side    %7.3f GB/s  = %.1f%% of plain  (%.2f CPU s/GiB, both sides)\n",
                   mn, 100 * mn / mp, cn);
            printf("  lz4, 1 channel, 1 worker/side     %7.3f GB/s  (ratio %.2f, %.2f CPU s/GiB)\n", m1, ratio, c1);
            printf("  lz4, 2 channels, 2 workers/side   %7.3f GB/s  = %.2fx  (%.2f CPU s/GiB)\n", m2, m2 / m1, c2);
            printf("  sender only (receiver drains the sockets, one-way):\n");
            printf("  lz4, 1 channel, 1 worker          %7.3f GB/s\n", ms1);
            printf("  lz4, 2 channels, 2 workers        %7.3f GB/s  = %.2fx\n", ms2, ms2 / ms1);
            printf("  zstd:3, 1 channel, 1 worker       %7.3f GB/s\n", mz1);
            printf("  zstd:3, 2 channels, 2 workers     %7.3f GB/s  = %.2fx\n", mz2, mz2 / mz1);
        }
    }
    if (mem_bytes) {
        prun pm = {.chain = "zero,delta,lz4", .channels = 2, .workers = 2, .bytes = mem_bytes - mem_bytes % (BATCH * MS_PAGE_SIZE)};
        run(&pm);
        if (check(&pm))
            return 1;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        /* Documented bound (docs/benchmarks.md): per side queue_depth frames
         * of up to 2 x 1 MiB buffers (stage + wire; receiver: wire + decode
         * room) + the 64 MiB delta cache; both sides live in this process. */
        unsigned depth = 2 * pm.workers + pm.channels;
        double bound_mib = 2.0 * (depth * 2.0 * (256.0 * MS_PAGE_SIZE * 1.05) / 1048576.0 + 64.0);
        double rss_mib = (double)ru.ru_maxrss / 1024.0;
        if (json)
            printf("{\"memory_test_bytes\":%" PRIu64 ",\"seconds\":%.3f,\"max_rss_MiB\":%.1f,\"bound_MiB\":%.1f,"
                   "\"ratio\":%.3f}\n", pm.raw, pm.secs, rss_mib, bound_mib,
                   pm.wire ? (double)pm.raw / (double)pm.wire : 0);
        else
            printf("  memory: %.2f GiB through zero,delta,lz4 (2 ch, 2 workers) in %.1f s: peak RSS %.1f MiB "
                   "(bound %.1f MiB for both sides%s)\n",
                   (double)pm.raw / (1 << 30), pm.secs, rss_mib, bound_mib, pool ? " + the 64 MiB sample pool" : "");
    }
    free(pool);
    return 0;
}
