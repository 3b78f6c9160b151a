/* The auto compressor's decision rule on given measurements, and the
 * decision state's exploration, hysteresis and per-codec accounting. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "codecs/codecs.h"
#include "tests/ms_test.h"

#define MB 1e6

/* Typical shapes: lz4 fast and light, zstd slower and tighter. */
static ms_auto_view typical(double link, unsigned workers)
{
    ms_auto_view v = {.link_rate = link, .workers = workers};
    v.ratio[MS_AUTO_NONE] = 1.0;
    v.cpu_rate[MS_AUTO_NONE] = INFINITY;
    v.cpu_rate[MS_AUTO_LZ4] = 800 * MB;
    v.ratio[MS_AUTO_LZ4] = 0.50;
    v.cpu_rate[MS_AUTO_ZSTD1] = 300 * MB;
    v.ratio[MS_AUTO_ZSTD1] = 0.38;
    v.cpu_rate[MS_AUTO_ZSTD3] = 150 * MB;
    v.ratio[MS_AUTO_ZSTD3] = 0.33;
    return v;
}

static void test_throughput_formula(void)
{
    ms_auto_view v = typical(100 * MB, 2);
    /* min(100/0.5, 2*800) = 200 MB/s. */
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_throughput(&v, MS_AUTO_LZ4), 200 * MB, 1);
    /* min(100/0.33, 2*150) = 300 MB/s (CPU-bound). */
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_throughput(&v, MS_AUTO_ZSTD3), 300 * MB, 1);
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_throughput(&v, MS_AUTO_NONE), 100 * MB, 1);
    /* Unknown estimates are never chosen. */
    v.ratio[MS_AUTO_ZSTD1] = 0;
    CU_ASSERT_EQUAL(ms_auto_throughput(&v, MS_AUTO_ZSTD1), 0);
    CU_ASSERT_EQUAL(ms_auto_throughput(&v, MS_AUTO_NCAND), 0);
}

static void test_slow_link_picks_zstd(void)
{
    ms_auto_view v = typical(12.5 * MB, 2); /* 100 Mbit/s */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_ZSTD3);
    v.link_rate = 60 * MB; /* zstd:3 turns CPU-bound (300), zstd:1 gives 158 */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_ZSTD3);
    v.link_rate = 125 * MB; /* 1 Gbit/s: zstd:1 (min(329, 600)) beats lz4 (250), zstd:3 (300) */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_ZSTD1);
}

static void test_fast_link_picks_none_or_lz4(void)
{
    ms_auto_view v = typical(0, 2); /* unknown: unlimited */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.03), MS_AUTO_NONE);
    v.link_rate = 5000 * MB; /* faster than lz4 could feed it */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.03), MS_AUTO_NONE);
    v.link_rate = 600 * MB; /* lz4: min(1200, 1600) beats none (600) and zstd */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_LZ4);
}

static void test_cpu_bound_picks_lz4(void)
{
    /* One slow worker on a 300 MB/s link: zstd starves the link. */
    ms_auto_view v = typical(300 * MB, 1);
    v.cpu_rate[MS_AUTO_LZ4] = 500 * MB;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.03), MS_AUTO_LZ4);
    /* Incompressible data: compressors save nothing, none wins. */
    v = typical(50 * MB, 2);
    v.ratio[MS_AUTO_LZ4] = v.ratio[MS_AUTO_ZSTD1] = v.ratio[MS_AUTO_ZSTD3] = 1.0;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.03), MS_AUTO_NONE);
}

static void test_hysteresis(void)
{
    ms_auto_view v = typical(125 * MB, 2);
    /* lz4 gives 250, zstd:1 329: lz4, cheaper, stays with a 20% margin
     * ((1.2)^2 * 250 = 360) and yields with 3%. */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.20), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.03), MS_AUTO_ZSTD1);
    /* zstd:3 gives 300, within 10% of zstd:1: the cheaper zstd:1 is taken. */
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.10), MS_AUTO_ZSTD1);
    /* The link jittering by 1% around a tie of zstd:1 and zstd:3 makes at
     * most the one move to the cheaper, then nothing. */
    v.ratio[MS_AUTO_ZSTD1] = 125.0 / 300.0;
    unsigned cur = MS_AUTO_ZSTD3, changes = 0;
    for (int i = 0; i < 100; i++) {
        v.link_rate = (i & 1 ? 1.01 : 0.99) * 125 * MB;
        unsigned next = ms_auto_decide(&v, cur, 0.03);
        changes += next != cur;
        cur = next;
    }
    CU_ASSERT_EQUAL(cur, MS_AUTO_ZSTD1);
    CU_ASSERT_EQUAL(changes, 1);
    /* Jitter of 4% around the threshold where lz4 stops being within 3% of
     * zstd:1 does not flap either: leaving lz4 needs 6%. */
    v = typical(125 * MB, 2);
    v.ratio[MS_AUTO_ZSTD1] = 0.5 / 1.03; /* zstd:1 = 1.03 x lz4 */
    v.cpu_rate[MS_AUTO_ZSTD3] = 50 * MB;  /* out of the running */
    cur = MS_AUTO_LZ4;
    changes = 0;
    for (int i = 0; i < 100; i++) {
        v.ratio[MS_AUTO_LZ4] = 0.5 * (i & 1 ? 1.02 : 0.98);
        unsigned next = ms_auto_decide(&v, cur, 0.03);
        changes += next != cur;
        cur = next;
    }
    CU_ASSERT_EQUAL(changes, 0);
}

/* Feed the state the measurements of `v` as if workers had compressed
 * 1 MB frames with each candidate. */
static void feed(ms_auto *a, const ms_auto_view *v, unsigned cand)
{
    uint64_t in = 1000000;
    ms_auto_record(a, cand, in, (uint64_t)(in * v->ratio[cand]), (double)in / v->cpu_rate[cand]);
}

static void test_state_converges(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 8};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view truth = typical(12.5 * MB, 2);
    ms_auto_link_sample(a, truth.link_rate, true);
    /* Each compressor is tried first, before anything is known. */
    bool seen[MS_AUTO_NCAND] = {0};
    for (uint64_t seq = 0; seq < 3; seq++) {
        unsigned c = ms_auto_pick(a, seq);
        CU_ASSERT(c != MS_AUTO_NONE);
        seen[c] = true;
        feed(a, &truth, c);
    }
    CU_ASSERT(seen[MS_AUTO_LZ4] && seen[MS_AUTO_ZSTD1] && seen[MS_AUTO_ZSTD3]);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_LZ4], 0.5, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(v.cpu_rate[MS_AUTO_ZSTD1], 300 * MB, 1e3);
    ms_auto_free(a);
}

static void test_exploration_and_stats(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 8};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view truth = typical(12.5 * MB, 2);
    ms_auto_link_sample(a, truth.link_rate, true);
    unsigned per[MS_AUTO_NCAND] = {0};
    for (uint64_t seq = 0; seq < 3 + 160; seq++) {
        unsigned c = ms_auto_pick(a, seq);
        per[c]++;
        feed(a, &truth, c);
    }
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    /* Never none on a slow link; the others explored every 8th frame in turn. */
    CU_ASSERT_EQUAL(per[MS_AUTO_NONE], 0);
    CU_ASSERT(per[MS_AUTO_LZ4] >= 10 && per[MS_AUTO_ZSTD1] >= 10);
    CU_ASSERT(per[MS_AUTO_ZSTD3] >= 130);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        CU_ASSERT_EQUAL(st.frames[c], per[c]);
        CU_ASSERT_EQUAL(st.in_bytes[c], per[c] * 1000000ull);
        CU_ASSERT_EQUAL(st.out_bytes[c], (uint64_t)(1000000 * truth.ratio[c]) * per[c]);
    }
    CU_ASSERT_EQUAL(st.explored[MS_AUTO_LZ4] + st.explored[MS_AUTO_ZSTD1] + st.explored[MS_AUTO_ZSTD3],
                    3 + 160 / 8);
    /* none -> lz4 -> zstd:1 -> zstd:3 as each is first measured, then steady
     * through the exploration. */
    CU_ASSERT_EQUAL(st.switches, 3);

    /* The data turns incompressible: exploration notices and auto moves to none. */
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        truth.ratio[c] = 1.0;
    for (uint64_t seq = 163; seq < 163 + 200; seq++)
        feed(a, &truth, ms_auto_pick(a, seq));
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE);
    ms_auto_free(a);
}

static void test_link_samples(void)
{
    ms_auto_config cfg = {.workers = 1, .link_cap = 100 * MB, .alpha = 0.5};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view v;
    /* The cap bounds every sample. */
    ms_auto_link_sample(a, 500 * MB, true);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.link_rate, 100 * MB, 1);
    /* zstd:3, at 20 MB/s of input for a 0.3 ratio, is CPU-bound on this
     * link: a lower wire rate is its own doing and does not lower the link. */
    ms_auto_view truth = typical(100 * MB, 1);
    truth.cpu_rate[MS_AUTO_LZ4] = truth.cpu_rate[MS_AUTO_ZSTD1] = 1 * MB;
    truth.cpu_rate[MS_AUTO_ZSTD3] = 20 * MB;
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        feed(a, &truth, c);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE); /* 100 MB/s as is beats 20 of zstd:3 */
    ms_auto_link_sample(a, 10 * MB, true); /* none is never CPU-bound: the link is slow */
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.link_rate, 55 * MB, 1);
    ms_auto_link_sample(a, 2 * MB, true);
    ms_auto_link_sample(a, 2 * MB, true);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    ms_auto_get_view(a, &v);
    double before = v.link_rate;
    ms_auto_link_sample(a, 1 * MB, true); /* CPU-bound now? link ~14 MB/s vs 20 MB/s * 0.33 */
    ms_auto_get_view(a, &v);
    bool cpu_bound = 20 * MB < before / truth.ratio[MS_AUTO_ZSTD3];
    CU_ASSERT_EQUAL(v.link_rate == before, cpu_bound);
    /* A wire that was not saturated tells only a lower bound. */
    ms_auto_link_sample(a, 0.5 * MB, false);
    ms_auto_view lb;
    ms_auto_get_view(a, &lb);
    CU_ASSERT_EQUAL(lb.link_rate, v.link_rate);
    ms_auto_link_sample(a, 90 * MB, false);
    ms_auto_get_view(a, &lb);
    CU_ASSERT(lb.link_rate > v.link_rate);
    v = lb;
    /* Junk samples are ignored. */
    ms_auto_link_sample(a, NAN, true);
    ms_auto_link_sample(a, -1, true);
    ms_auto_link_sample(a, 0, true);
    ms_auto_view after;
    ms_auto_get_view(a, &after);
    CU_ASSERT_EQUAL(after.link_rate, v.link_rate);
    ms_auto_free(a);
}

static void test_unknown_link(void)
{
    ms_auto_config cfg = {.workers = 2};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view truth = typical(0, 2);
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        feed(a, &truth, c);
    /* A producer-bound wire at 40 MB/s says nothing of the link: none stays. */
    ms_auto_link_sample(a, 40 * MB, false);
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    CU_ASSERT_EQUAL(v.link_rate, 0);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE);
    /* Saturated at 40 MB/s: the link is slow, compress hard. */
    ms_auto_link_sample(a, 40 * MB, true);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    ms_auto_free(a);
}

static void test_deterministic(void)
{
    unsigned picks[2][300];
    for (int run = 0; run < 2; run++) {
        ms_auto_config cfg = {.workers = 2};
        ms_auto *a = ms_auto_new(&cfg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        ms_auto_view truth = typical(40 * MB, 2);
        for (uint64_t seq = 0; seq < 300; seq++) {
            if (seq % 10 == 0)
                ms_auto_link_sample(a, (30 + seq % 7 * 5) * MB, true);
            picks[run][seq] = ms_auto_pick(a, seq);
            feed(a, &truth, picks[run][seq]);
        }
        ms_auto_free(a);
    }
    CU_ASSERT_EQUAL(memcmp(picks[0], picks[1], sizeof picks[0]), 0);
}

static void test_chains(void)
{
    ms_chain c;
    char buf[64];
    static const char *want[MS_AUTO_NCAND] = {"zero,none", "zero,lz4:1", "zero,zstd:1", "zero,zstd:3"};
    for (unsigned i = 0; i < MS_AUTO_NCAND; i++) {
        ms_auto_chain(i, MS_STAGE_ZERO, &c);
        CU_ASSERT_FALSE(c.is_auto);
        ms_chain_format(&c, buf, sizeof buf);
        CU_ASSERT_STRING_EQUAL(buf, want[i]);
        ms_chain back;
        CU_ASSERT_EQUAL(ms_chain_from_id(ms_chain_to_id(&c), &back), MS_OK);
        CU_ASSERT_EQUAL(back.comp, c.comp);
        CU_ASSERT_EQUAL(back.level, c.level);
    }
    CU_ASSERT_STRING_EQUAL(ms_auto_name(MS_AUTO_ZSTD1), "zstd:1");
}

/* Workers hammering one state: counts add up, nothing tears. */
static ms_auto *shared;
static void *hammer(void *arg)
{
    ms_auto_view truth = typical(50 * MB, 4);
    uint64_t base = (uint64_t)(uintptr_t)arg * 10000;
    for (uint64_t i = 0; i < 10000; i++) {
        ms_auto_link_sample(shared, 50 * MB, true);
        feed(shared, &truth, ms_auto_pick(shared, base + i));
    }
    return NULL;
}

static void test_threads(void)
{
    ms_auto_config cfg = {.workers = 4};
    shared = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(shared);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ms_auto_stats st;
    ms_auto_get_stats(shared, &st);
    uint64_t frames = 0;
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++)
        frames += st.frames[c];
    CU_ASSERT_EQUAL(frames, 40000);
    ms_auto_free(shared);
}

MS_TEST_MAIN(ms_test_add_suite("auto", (ms_test_case[]){
                                           {"throughput formula", test_throughput_formula},
                                           {"slow link picks zstd", test_slow_link_picks_zstd},
                                           {"fast link picks none or lz4", test_fast_link_picks_none_or_lz4},
                                           {"cpu-bound picks lz4", test_cpu_bound_picks_lz4},
                                           {"hysteresis", test_hysteresis},
                                           {"state converges", test_state_converges},
                                           {"exploration and stats", test_exploration_and_stats},
                                           {"link samples", test_link_samples},
                                           {"unknown link", test_unknown_link},
                                           {"deterministic", test_deterministic},
                                           {"concrete chains", test_chains},
                                           {"threads", test_threads},
                                           {NULL, NULL},
                                       }))
