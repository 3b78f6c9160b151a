/* The simulator: deterministic, fast at 64 GiB, and the policies compare on
 * workload models the way the bars ask (fragmented against Xen's
 * precopy on a workload dirtying memory faster than half the link rate, and
 * on an idle one). */
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "tests/ms_test.h"

static int sim(const char *model, const char *policy, double bandwidth, ms_migration_report *rep)
{
    ms_model_opts mo;
    CU_ASSERT_EQUAL_FATAL(ms_model_parse(model, &mo), MS_OK);
    ms_page_source *src = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_model_source_create(&mo, &src), MS_OK);
    ms_link_model link = {.bandwidth = bandwidth, .latency_s = 0.0001};
    memset(rep, 0, sizeof(*rep));
    int rc = ms_simulate(src, policy, NULL, &link, 0, rep);
    if (rc)
        fprintf(stderr, "%s %s: %s\n", model, policy, ms_last_error());
    ms_source_destroy(src);
    return rc;
}

static void test_deterministic(void)
{
    static const char *const pol[] = {"precopy", "fragmented", "downtime"};
    for (int k = 0; k < 3; k++) {
        ms_migration_report a, b;
        CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=256M,rate=20000,seed=7", pol[k], 125e6, &a), MS_OK);
        CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=256M,rate=20000,seed=7", pol[k], 125e6, &b), MS_OK);
        CU_ASSERT_EQUAL(a.nrounds, b.nrounds);
        for (size_t i = 0; i < a.nrounds && i < b.nrounds; i++) {
            CU_ASSERT_EQUAL(a.rounds[i].dirty_pages, b.rounds[i].dirty_pages);
            CU_ASSERT_EQUAL(a.rounds[i].sent_pages, b.rounds[i].sent_pages);
            CU_ASSERT_EQUAL(a.rounds[i].wire_bytes, b.rounds[i].wire_bytes);
            CU_ASSERT_EQUAL(a.rounds[i].pending_pages, b.rounds[i].pending_pages);
            CU_ASSERT_DOUBLE_EQUAL(a.rounds[i].time_s, b.rounds[i].time_s, 1e-12);
        }
        CU_ASSERT_DOUBLE_EQUAL(a.total_s, b.total_s, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(a.downtime_s, b.downtime_s, 1e-12);
        /* a different seed is a different run */
        ms_migration_report c;
        CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=256M,rate=20000,seed=8", pol[k], 125e6, &c), MS_OK);
        CU_ASSERT(c.pages_sent != a.pages_sent || c.total_s != a.total_s);
        ms_report_free(&a);
        ms_report_free(&b);
        ms_report_free(&c);
    }
}

/* Every page goes at least once; the first round carries all of them. */
static void test_accounting(void)
{
    ms_migration_report r;
    CU_ASSERT_EQUAL_FATAL(sim("uniform,size=64M,rate=5000", "fragmented", 125e6, &r), MS_OK);
    CU_ASSERT_EQUAL(r.rounds[0].sent_pages, 16384);
    CU_ASSERT(r.pages_sent >= 16384);
    CU_ASSERT(r.rounds[r.nrounds - 1].final);
    CU_ASSERT_EQUAL(r.final_pages, r.rounds[r.nrounds - 1].sent_pages);
    uint64_t sum = 0;
    for (size_t i = 0; i < r.nrounds; i++)
        sum += r.rounds[i].sent_pages;
    CU_ASSERT_EQUAL(sum, r.pages_sent);
    CU_ASSERT(r.downtime_s > 0 && r.downtime_s < r.total_s);
    /* 64 MiB at 125 MB/s: the first pass alone is 0.537 s */
    CU_ASSERT(r.rounds[0].time_s > 0.53 && r.rounds[0].time_s < 0.55);
    ms_report_free(&r);
}

/* The bars on a model: a hot-spot workload writing 200000 pages/s
 * (~6.5x the 1 Gbit/s link's 30500 pages/s) and an idle guest. */
static void test_bars_on_models(void)
{
    ms_migration_report pre, frag;
    CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=4G,rate=200000", "precopy", 125e6, &pre), MS_OK);
    CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=4G,rate=200000", "fragmented", 125e6, &frag), MS_OK);
    fprintf(stderr, "\nhotspot 4G: precopy %.2f s / %.0f ms / %.0f MiB, fragmented %.2f s / %.0f ms / %.0f MiB\n",
            pre.total_s, pre.downtime_s * 1000, pre.wire_bytes / 1048576.0, frag.total_s,
            frag.downtime_s * 1000, frag.wire_bytes / 1048576.0);
    CU_ASSERT(frag.total_s <= 0.70 * pre.total_s);
    CU_ASSERT(frag.downtime_s <= pre.downtime_s);
    CU_ASSERT((double)frag.wire_bytes <= 0.75 * (double)pre.wire_bytes);
    ms_report_free(&pre);
    ms_report_free(&frag);

    CU_ASSERT_EQUAL_FATAL(sim("uniform,size=4G,rate=0", "precopy", 125e6, &pre), MS_OK);
    CU_ASSERT_EQUAL_FATAL(sim("uniform,size=4G,rate=0", "fragmented", 125e6, &frag), MS_OK);
    CU_ASSERT(frag.total_s <= 1.05 * pre.total_s);
    CU_ASSERT(frag.downtime_s <= 1.05 * pre.downtime_s + 1e-3);
    ms_report_free(&pre);
    ms_report_free(&frag);
}

/* A 64 GiB guest (16M pages) in seconds: bitmaps are worked a word at a
 * time. The bound is loose for sanitizer builds. */
static void test_64g_fast(void)
{
    uint64_t t = ms_now_ns();
    static const char *const pol[] = {"precopy", "fragmented", "downtime"};
    for (int k = 0; k < 3; k++) {
        ms_migration_report r;
        CU_ASSERT_EQUAL_FATAL(sim("hotspot,size=64G,rate=100000", pol[k], 1.25e9, &r), MS_OK);
        CU_ASSERT_EQUAL(r.npages, 16ull << 20);
        CU_ASSERT(r.pages_sent >= 16ull << 20);
        ms_report_free(&r);
    }
    double s = (double)(ms_now_ns() - t) / 1e9;
    fprintf(stderr, "\n64 GiB, three policies: %.2f s wall\n", s);
    CU_ASSERT(s < 60);
}

static void test_refusals(void)
{
    ms_model_opts mo;
    CU_ASSERT_EQUAL_FATAL(ms_model_parse("uniform,size=1M,rate=10", &mo), MS_OK);
    ms_page_source *src = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_model_source_create(&mo, &src), MS_OK);
    ms_migration_report r;
    memset(&r, 0, sizeof(r));
    ms_link_model bad = {.bandwidth = 0};
    CU_ASSERT_EQUAL(ms_simulate(src, "precopy", NULL, &bad, 0, &r), MS_ERR_INVAL);
    ms_link_model ok = {.bandwidth = 1e6};
    CU_ASSERT_EQUAL(ms_simulate(src, "nonsense", NULL, &ok, 0, &r), MS_ERR_INVAL);
    ms_report_free(&r);
    ms_source_destroy(src);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"simulation is deterministic per seed", test_deterministic},
        {"simulated rounds add up", test_accounting},
        {"fragmented vs precopy on models: the issue's bars", test_bars_on_models},
        {"64 GiB guest simulated in seconds", test_64g_fast},
        {"bad link model or policy refused", test_refusals},
        {NULL, NULL},
    };
    ms_test_add_suite("fragsched", cases);
})
