/* The live engine end to end on loopback TCP with the real pipeline, over a
 * page source of our own: memory in this process that a writer thread keeps
 * dirtying while we migrate it, with exact dirty tracking (a bit set after
 * every write). Every policy must deliver a destination equal to the source
 * at the pause; a source whose tracking misses writes must be caught by the
 * verification. No userfaultfd needed, so this runs everywhere. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fragsched/fragsched.h"
#include "tests/ms_test.h"

typedef struct memsrc {
    ms_page_source base;
    uint8_t *mem;
    _Atomic uint64_t *dirty;
    size_t nwords;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool pause_req, paused, stop;
    uint64_t lost_page;  /* writes to this page are not tracked (bug injection) */
    bool lose;
    uint64_t writes;
} memsrc;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* 90% of writes into the first eighth of memory, the rest anywhere; a
 * short sleep every 256 writes keeps one core free for the pipeline. */
static void *writer(void *arg)
{
    memsrc *m = arg;
    uint64_t seed = 0x1234567;
    uint64_t np = m->base.npages, hot = np / 8 ? np / 8 : 1;
    for (uint64_t i = 0;; i++) {
        if ((i & 255) == 0) {
            pthread_mutex_lock(&m->mu);
            while (m->pause_req && !m->stop) {
                m->paused = true;
                pthread_cond_broadcast(&m->cv);
                pthread_cond_wait(&m->cv, &m->mu);
            }
            m->paused = false;
            bool stop = m->stop;
            pthread_mutex_unlock(&m->mu);
            if (stop)
                break;
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        uint64_t r = xorshift(&seed);
        uint64_t page = (r % 10 < 9) ? (r >> 8) % hot : (r >> 8) % np;
        if (m->lose && (i & 63) == 0)
            page = m->lost_page;
        uint64_t off = page * 4096 + ((r >> 40) % 512) * 8;
        __atomic_store_n((uint64_t *)(m->mem + off), i, __ATOMIC_RELAXED);
        if (!(m->lose && page == m->lost_page))
            atomic_fetch_or(&m->dirty[page / 64], 1ull << (page % 64));
        m->writes++;
    }
    return NULL;
}

static int ms_start(ms_page_source *s)
{
    memsrc *m = (memsrc *)s;
    for (size_t w = 0; w < m->nwords; w++)
        atomic_store(&m->dirty[w], 0);
    return MS_OK;
}

static int ms_dirty(ms_page_source *s, uint64_t *bm)
{
    memsrc *m = (memsrc *)s;
    for (size_t w = 0; w < m->nwords; w++)
        bm[w] |= atomic_exchange(&m->dirty[w], 0);
    return MS_OK;
}

static int ms_read(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out)
{
    memsrc *m = (memsrc *)s;
    for (size_t i = 0; i < n; i++) {
        if (idx[i] >= s->npages)
            return ms_error(MS_ERR_INVAL, "page %llu out of range", (unsigned long long)idx[i]);
        /* word by word: the writer stores whole words */
        const uint64_t *src = (const uint64_t *)(m->mem + idx[i] * 4096);
        uint64_t *dst = (uint64_t *)(out + i * 4096);
        for (int k = 0; k < 512; k++)
            dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    }
    return MS_OK;
}

/* Set one of the writer's flags and wake everyone waiting on the state;
 * with `until_paused`, return only once the writer has paused (or ended). */
static void tell_writer(memsrc *m, bool *flag, bool value, bool until_paused)
{
    pthread_mutex_lock(&m->mu);
    *flag = value;
    pthread_cond_broadcast(&m->cv);
    while (until_paused && !m->paused && !m->stop)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
}

static int ms_pause(ms_page_source *s)
{
    memsrc *m = (memsrc *)s;
    tell_writer(m, &m->pause_req, true, true);
    return MS_OK;
}

static int ms_resume(ms_page_source *s)
{
    memsrc *m = (memsrc *)s;
    tell_writer(m, &m->pause_req, false, false);
    return MS_OK;
}

static void ms_destroy(ms_page_source *s)
{
    memsrc *m = (memsrc *)s;
    tell_writer(m, &m->stop, true, false);
    pthread_join(m->th, NULL);
    free(m->mem);
    free(m->dirty);
    free(m);
}

static const ms_page_source_ops memsrc_ops = {
    .name = "test-memory", .start = ms_start, .dirty = ms_dirty, .read = ms_read,
    .pause = ms_pause, .resume = ms_resume, .advance = NULL, .destroy = ms_destroy,
};

static memsrc *memsrc_new(uint64_t npages, bool lose)
{
    memsrc *m = calloc(1, sizeof(*m));
    m->base.ops = &memsrc_ops;
    m->base.npages = npages;
    m->base.page_size = 4096;
    snprintf(m->base.desc, sizeof(m->base.desc), "test memory, %llu pages", (unsigned long long)npages);
    m->mem = aligned_alloc(4096, npages * 4096);
    /* mixed content: zero pages, text-like, counters */
    for (uint64_t p = 0; p < npages; p++) {
        uint8_t *pg = m->mem + p * 4096;
        if (p % 3 == 0)
            memset(pg, 0, 4096);
        else
            for (int i = 0; i < 4096; i++)
                pg[i] = (uint8_t)("migstream page "[i % 15] + (p % 7));
    }
    m->nwords = ms_bitmap_words(npages);
    m->dirty = calloc(m->nwords, sizeof(*m->dirty));
    m->lose = lose;
    m->lost_page = 5;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    pthread_create(&m->th, NULL, writer, m);
    return m;
}

/* The engine's defaults, with `policy` (NULL: the default one) and
 * `workers` threads per side (0: the default count). */
static ms_engine_config engine_config(const char *policy, unsigned workers)
{
    ms_engine_config cfg;
    ms_engine_config_default(&cfg);
    if (policy)
        cfg.policy = policy;
    if (workers)
        cfg.session.workers = workers;
    return cfg;
}

/* Migrate our memory source into an empty report. */
static int migrate_mem(memsrc *m, const ms_engine_config *cfg, ms_migration_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    return ms_migrate(&m->base, cfg, rep);
}

static void migrate_one(const char *policy, unsigned channels, const char *chain)
{
    memsrc *m = memsrc_new(8192, false); /* 32 MiB */
    ms_engine_config cfg = engine_config(policy, 2);
    cfg.channels = channels;
    cfg.policy_cfg.downtime_ms = 50;
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(chain, &cfg.session.chain), MS_OK);
    ms_migration_report rep;
    int rc = migrate_mem(m, &cfg, &rep);
    if (rc)
        fprintf(stderr, "%s: %s\n", policy, ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT(rep.verify_done);
    CU_ASSERT(rep.verified);
    CU_ASSERT_EQUAL(rep.verify_mismatches, 0);
    CU_ASSERT(rep.nrounds >= 2);
    CU_ASSERT(rep.rounds[rep.nrounds - 1].final);
    CU_ASSERT_EQUAL(rep.rounds[0].sent_pages, 8192);
    CU_ASSERT(rep.pages_sent >= 8192);
    CU_ASSERT(rep.wire_bytes > 0);
    CU_ASSERT(rep.downtime_s > 0 && rep.downtime_s <= rep.total_s);
    CU_ASSERT(m->writes > 0);
    fprintf(stderr, "\n%s x%u %s: %u live rounds, total %.3f s, downtime %.1f ms, %llu pages, %llu writes\n",
            policy, channels, chain, rep.live_rounds, rep.total_s, rep.downtime_s * 1000,
            (unsigned long long)rep.pages_sent, (unsigned long long)m->writes);
    ms_report_free(&rep);
    ms_source_destroy(&m->base);
}

static void test_precopy_live(void) { migrate_one("precopy", 1, "zero,delta,lz4"); }
static void test_fragmented_live(void) { migrate_one("fragmented", 2, "zero,delta,lz4"); }
static void test_downtime_live(void) { migrate_one("downtime", 1, "zero,zstd:1"); }

/* Tracking that misses writes must not pass as a good migration. */
static void test_verify_catches_lost_writes(void)
{
    memsrc *m = memsrc_new(4096, true);
    ms_engine_config cfg = engine_config("precopy", 1);
    ms_migration_report rep;
    int rc = migrate_mem(m, &cfg, &rep);
    CU_ASSERT_EQUAL(rc, MS_ERR_VERIFY);
    CU_ASSERT(rep.verify_done);
    CU_ASSERT_FALSE(rep.verified);
    CU_ASSERT_EQUAL(rep.verify_first_bad, 5);
    CU_ASSERT(rep.verify_mismatches >= 1);
    CU_ASSERT(strstr(ms_last_error(), "page 5") != NULL);
    ms_report_free(&rep);
    ms_source_destroy(&m->base);
}

/* A destination that does not answer: a clear error, the source resumed. */
static void test_unreachable_destination(void)
{
    memsrc *m = memsrc_new(256, false);
    ms_engine_config cfg = engine_config(NULL, 0);
    cfg.to = "127.0.0.1:1";
    cfg.session.timeout_ms = 2000;
    ms_migration_report rep;
    int rc = migrate_mem(m, &cfg, &rep);
    CU_ASSERT(rc < 0);
    CU_ASSERT(strlen(ms_last_error()) > 0);
    CU_ASSERT_FALSE(m->pause_req);
    ms_report_free(&rep);
    ms_source_destroy(&m->base);
}

static void test_report_outputs(void)
{
    memsrc *m = memsrc_new(1024, false);
    ms_engine_config cfg = engine_config(NULL, 0);
    ms_migration_report rep;
    CU_ASSERT_EQUAL_FATAL(migrate_mem(m, &cfg, &rep), MS_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ms_report_json(&rep, f);
    fclose(f);
    CU_ASSERT(strstr(buf, "\"policy\":\"fragmented\"") != NULL);
    CU_ASSERT(strstr(buf, "\"ok\":true") != NULL);
    CU_ASSERT(strstr(buf, "\"final\":true") != NULL);
    free(buf);
    f = open_memstream(&buf, &len);
    ms_report_print(&rep, f);
    fclose(f);
    CU_ASSERT(strstr(buf, "verification: OK") != NULL);
    CU_ASSERT(strstr(buf, "downtime") != NULL);
    free(buf);
    ms_report_free(&rep);
    ms_source_destroy(&m->base);
}

/* --record-trace writes what the engine saw; the simulator replays it. */
static void test_trace_then_simulate(void)
{
    char path[] = "/tmp/ms-trace-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    memsrc *m = memsrc_new(4096, false);
    ms_engine_config cfg = engine_config(NULL, 1);
    cfg.record_trace = path;
    ms_migration_report live;
    CU_ASSERT_EQUAL_FATAL(migrate_mem(m, &cfg, &live), MS_OK);
    ms_source_destroy(&m->base);

    ms_page_source *tr = NULL;
    int rc = ms_trace_source_open(path, NULL, &tr);
    if (rc)
        fprintf(stderr, "trace: %s\n", ms_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    ms_trace_info info;
    CU_ASSERT_EQUAL(ms_trace_source_info(tr, &info), MS_OK);
    CU_ASSERT_EQUAL(info.npages, 4096);
    /* one record per bitmap read: a read per live round after the first,
     * the final one, and any within rounds */
    CU_ASSERT(info.records >= live.live_rounds);
    CU_ASSERT(info.dirty_total > 0);
    CU_ASSERT(info.duration_ns > 0 && info.duration_ns <= (uint64_t)(live.total_s * 1e9) + 1);

    ms_link_model link = {.bandwidth = 125e6, .latency_s = 1e-4};
    ms_migration_report sim;
    memset(&sim, 0, sizeof(sim));
    CU_ASSERT_EQUAL(ms_simulate(tr, "fragmented", NULL, &link, 0, &sim), MS_OK);
    CU_ASSERT(sim.simulated);
    CU_ASSERT_EQUAL(sim.rounds[0].sent_pages, 4096);
    CU_ASSERT(sim.total_s > 0);
    ms_report_free(&sim);
    ms_report_free(&live);
    ms_source_destroy(tr);
    unlink(path);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"precopy live migration verifies", test_precopy_live},
        {"fragmented live migration, 2 channels, verifies", test_fragmented_live},
        {"downtime live migration, zstd, verifies", test_downtime_live},
        {"verification catches untracked writes", test_verify_catches_lost_writes},
        {"unreachable destination: error, source resumed", test_unreachable_destination},
        {"report as text and JSON", test_report_outputs},
        {"recorded trace replays in the simulator", test_trace_then_simulate},
        {NULL, NULL},
    };
    ms_test_add_suite("fragsched", cases);
})
