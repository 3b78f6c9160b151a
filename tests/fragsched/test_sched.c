/* Policies and the scheduler: Xen's decisions reproduced call for call, no
 * dirty page ever lost (any policy, random workloads), deferral within its
 * budget, the fragmented policy's choices on clear-cut cases. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "tests/ms_test.h"

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* splitmix64: deterministic across runs and platforms */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rndf(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static void set_first(uint64_t *bm, uint64_t nwords, uint64_t count)
{
    memset(bm, 0, nwords * 8);
    for (uint64_t i = 0; i < count; i++)
        ms_bit_set(bm, i);
}

/* A scheduler for `policy` (c NULL: the defaults) over npages pages, and a
 * bitmap of *nw words with all of them dirty, as before round 0. */
static ms_sched *sched_all_dirty(const char *policy, const ms_policy_config *c, uint64_t npages, uint64_t **bm,
                                 size_t *nw)
{
    ms_sched *s = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_sched_new(policy, c, npages, 4096, &s), MS_OK);
    *nw = ms_bitmap_words(npages);
    *bm = calloc(*nw, 8);
    set_first(*bm, *nw, npages);
    return s;
}

static ms_policy_config config_downtime(double ms)
{
    ms_policy_config c;
    ms_policy_config_default(&c);
    c.downtime_ms = ms;
    return c;
}

/* ---- Xen's rule -------------------------------------------------------- */

static void test_xen_rule(void)
{
    enum { GO = MS_XGS_POLICY_CONTINUE_PRECOPY, STOP = MS_XGS_POLICY_STOP_AND_COPY };
    static const struct {
        unsigned iteration;
        long dirty;
        int want;
    } cases[] = {
        {0, 100000, GO}, {0, 50, GO}, {0, 49, STOP}, {0, 0, STOP},
        /* dirty count unknown: only the iteration count decides */
        {0, -1, GO}, {4, -1, GO}, {5, -1, STOP}, {5, 1000000, STOP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ms_precopy_stats st = {.iteration = cases[i].iteration, .dirty_count = cases[i].dirty};
        CU_ASSERT_EQUAL(ms_xen_simple_precopy_policy(st), cases[i].want);
    }
}

/* An independent transliteration of send_memory_live() in xg_sr_save.c
 * (Xen 4.17): which dirty counts go out live, and how many bitmaps are
 * fetched before suspend. The final bitmap is the next one fetched. */
static int xen_rule(unsigned iteration, long dirty)
{
    return (dirty >= 0 && dirty < 50) || iteration >= 5;
}

static size_t xen_reference(long p2m, const long *script, long *sent, size_t *fetched)
{
    unsigned iteration = 0, x = 0;
    long policy_dirty = p2m, shadow_dirty = p2m;
    size_t n = 0, k = 0;
    for (;;) {
        int stop = xen_rule(iteration, policy_dirty);
        x++;
        if (shadow_dirty > 0)
            sent[n++] = shadow_dirty;
        if (stop)
            break;
        iteration = x;
        policy_dirty = -1;
        if (xen_rule(iteration, policy_dirty))
            break;
        shadow_dirty = script[k++];
        policy_dirty = shadow_dirty;
    }
    *fetched = k;
    return n;
}

/* Drive the scheduler the way the engine does, with scripted dirty counts;
 * return the live send counts and how many bitmaps were fetched. */
static size_t sched_run(const char *policy, uint64_t npages, const long *script, long *sent,
                        size_t *fetched)
{
    size_t nw, n = 0, k = 0;
    uint64_t *bm;
    ms_sched *s = sched_all_dirty(policy, NULL, npages, &bm, &nw);
    for (uint32_t round = 0;; round++) {
        ms_sched_round pr;
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.1, 0.1 * round, &pr), MS_OK);
        if (pr.decision == MS_DECIDE_STOP_NOW)
            break;
        if (pr.send_pages)
            sent[n++] = (long)pr.send_pages;
        if (pr.decision == MS_DECIDE_STOP_AFTER)
            break;
        ms_round_done d = {.round = round, .pages = pr.send_pages,
                           .raw_bytes = pr.send_pages * 4096, .time_s = 0.01 + pr.send_pages * 1e-6};
        int dec = ms_sched_sent(s, &d);
        CU_ASSERT_FATAL(dec >= 0);
        if (dec != MS_DECIDE_CONTINUE)
            break;
        set_first(bm, nw, (uint64_t)script[k++]);
    }
    *fetched = k;
    free(bm);
    ms_sched_free(s);
    return n;
}

static void check_precopy_script(uint64_t npages, const long *script)
{
    long want[64], got[64];
    size_t want_fetch, got_fetch;
    size_t nw = xen_reference((long)npages, script, want, &want_fetch);
    size_t ng = sched_run("precopy", npages, script, got, &got_fetch);
    CU_ASSERT_EQUAL(ng, nw);
    CU_ASSERT_EQUAL(got_fetch, want_fetch);
    for (size_t i = 0; i < nw && i < ng; i++)
        CU_ASSERT_EQUAL(got[i], want[i]);
}

static void test_precopy_matches_xen(void)
{
    /* never converges: one full pass and four dirty passes, then suspend */
    static const long busy[] = {9000, 9000, 9000, 9000, 9000, 9000, 9000, 9000};
    check_precopy_script(100000, busy);
    long got[64];
    size_t fetched;
    CU_ASSERT_EQUAL(sched_run("precopy", 100000, busy, got, &fetched), 5);
    CU_ASSERT_EQUAL(fetched, 4);
    CU_ASSERT_EQUAL(got[0], 100000);
    /* converges at the second bitmap: its 30 pages still go out live */
    static const long conv[] = {500, 30, 9000, 9000, 9000, 9000};
    check_precopy_script(100000, conv);
    CU_ASSERT_EQUAL(sched_run("precopy", 100000, conv, got, &fetched), 3);
    CU_ASSERT_EQUAL(got[2], 30);
    CU_ASSERT_EQUAL(fetched, 2);
    /* boundary: 50 continues, 49 stops */
    static const long b50[] = {50, 49, 1, 1, 1, 1};
    check_precopy_script(100000, b50);
    /* nothing dirty: no live send for that bitmap, stop */
    static const long idle[] = {0, 5, 5, 5, 5, 5};
    check_precopy_script(100000, idle);
    CU_ASSERT_EQUAL(sched_run("precopy", 100000, idle, got, &fetched), 1);
    /* a guest smaller than 50 pages: the first pass goes, then suspend */
    static const long tiny[] = {10, 10, 10, 10, 10, 10};
    check_precopy_script(40, tiny);
    CU_ASSERT_EQUAL(sched_run("precopy", 40, tiny, got, &fetched), 1);
    CU_ASSERT_EQUAL(fetched, 0);
    /* random scripts */
    rng_state = 42;
    for (int t = 0; t < 200; t++) {
        long script[16];
        for (int i = 0; i < 16; i++)
            script[i] = (long)(rnd() % 4 == 0 ? rnd() % 60 : rnd() % 5000);
        check_precopy_script(5000 + rnd() % 5000, script);
    }
}

/* ---- no page lost ------------------------------------------------------ */

typedef struct world {
    uint64_t npages;
    uint32_t *version;      /* bumped by every write */
    uint32_t *sent_version; /* version of the page as last sent */
    uint64_t *dirty;        /* pages written since the last read */
    uint64_t hot_first, hot_n;
    double hot_share;
} world;

static void world_write(world *w, uint64_t nwrites)
{
    for (uint64_t i = 0; i < nwrites; i++) {
        uint64_t p = rndf() < w->hot_share ? w->hot_first + rnd() % w->hot_n : rnd() % w->npages;
        w->version[p]++;
        ms_bit_set(w->dirty, p);
    }
}

static void world_send(world *w, const uint64_t *bm)
{
    for (uint64_t p = 0; p < w->npages; p++)
        if (ms_bit_test(bm, p))
            w->sent_version[p] = w->version[p];
}

/* One migration of a random workload; checks the budget on the way and
 * returns how many pages ended up different. */
static uint64_t run_random(const char *policy, uint64_t seed)
{
    rng_state = seed;
    world w = {0};
    w.npages = 1 + rnd() % 6000;
    uint64_t nw = ms_bitmap_words(w.npages);
    w.version = calloc(w.npages, 4);
    w.sent_version = malloc(w.npages * 4);
    memset(w.sent_version, 0xff, w.npages * 4);
    w.dirty = calloc(nw, 8);
    w.hot_n = 1 + rnd() % (w.npages < 1024 ? w.npages : 1024);
    w.hot_first = rnd() % (w.npages - w.hot_n + 1);
    w.hot_share = rndf();
    ms_policy_config c;
    ms_policy_config_default(&c);
    c.fragment_pages = 64 * (uint32_t)(1 + rnd() % 8);
    c.downtime_ms = 1 + rndf() * 300;
    c.defer_share = 0.05 + rndf() * 0.95;
    c.max_rounds = 3 + (unsigned)(rnd() % 20);
    ms_sched *s = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_sched_new(policy, &c, w.npages, 4096, &s), MS_OK);
    uint64_t *bm = calloc(nw, 8);
    set_first(bm, nw, w.npages);
    double rate = 1000 + rndf() * 100000; /* pages/s the "link" moves */
    double wr = rndf() * 3 * rate;        /* page writes/s */
    for (uint32_t round = 0; round < 200; round++) {
        ms_sched_round pr;
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.01, round * 0.01, &pr), MS_OK);
        if (!strcmp(policy, "fragmented")) {
            /* stop-now moves everything to pending: that is stop-and-copy */
            if (pr.decision != MS_DECIDE_STOP_NOW)
                CU_ASSERT(pr.pending_pages <= ms_sched_defer_budget(s));
            CU_ASSERT_EQUAL(pr.pending_pages, ms_sched_pending_count(s));
        }
        if (pr.decision == MS_DECIDE_STOP_NOW) {
            CU_ASSERT_EQUAL(pr.send_pages, 0);
            break;
        }
        /* writes race with the send: half before, half after */
        double t = 0.002 + (double)pr.send_pages / rate;
        world_write(&w, (uint64_t)(wr * t / 2));
        world_send(&w, bm);
        world_write(&w, (uint64_t)(wr * t / 2));
        if (pr.decision == MS_DECIDE_STOP_AFTER)
            break;
        ms_round_done d = {.round = round, .pages = pr.send_pages, .raw_bytes = pr.send_pages * 4096,
                           .wire_bytes = pr.send_pages * 2048, .time_s = t};
        int dec = ms_sched_sent(s, &d);
        CU_ASSERT_FATAL(dec >= 0);
        if (dec != MS_DECIDE_CONTINUE)
            break;
        memcpy(bm, w.dirty, nw * 8); /* get and clear */
        memset(w.dirty, 0, nw * 8);
    }
    world_write(&w, 1 + rnd() % 50); /* between the last read and the pause */
    memcpy(bm, w.dirty, nw * 8);
    ms_sched_final(s, bm);
    CU_ASSERT_EQUAL(ms_sched_pending_count(s), 0);
    world_send(&w, bm);
    uint64_t bad = 0;
    for (uint64_t p = 0; p < w.npages; p++)
        bad += w.sent_version[p] != w.version[p];
    free(bm);
    free(w.version);
    free(w.sent_version);
    free(w.dirty);
    ms_sched_free(s);
    return bad;
}

static void test_no_page_lost(void)
{
    static const char *const pol[] = {"precopy", "fragmented", "downtime"};
    for (int k = 0; k < 3; k++)
        for (uint64_t seed = 1; seed <= 150; seed++) {
            uint64_t bad = run_random(pol[k], seed * 7919 + (uint64_t)k);
            if (bad)
                fprintf(stderr, "policy %s seed %llu: %llu pages lost\n", pol[k],
                        (unsigned long long)seed, (unsigned long long)bad);
            CU_ASSERT_EQUAL(bad, 0);
        }
}

/* ---- fragmented: clear-cut cases --------------------------------------- */

/* 64 fragments of 512 pages; fragments 10..13 are rewritten entirely every
 * round, the rest see a handful of writes. After the first full pass the
 * hot ones must be held back, the cold ones sent first. */
static void defers_hot(bool hold)
{
    const uint64_t npages = 64 * 512;
    ms_policy_config c = config_downtime(300);
    c.hold_on_stop = hold;
    size_t nw;
    uint64_t *bm;
    ms_sched *s = sched_all_dirty("fragmented", &c, npages, &bm, &nw);
    ms_sched_round pr;
    CU_ASSERT_EQUAL(ms_sched_plan(s, 0, bm, 0, 0, &pr), MS_OK);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_CONTINUE);
    CU_ASSERT_EQUAL(pr.send_pages, npages);
    CU_ASSERT_EQUAL(pr.deferred_fragments, 0);
    /* 32768 pages in 1 s: 32768 pages/s, budget = 0.5 * 0.3 * 32768 = 4915 pages */
    ms_round_done d = {.round = 0, .pages = npages, .raw_bytes = npages * 4096,
                       .wire_bytes = npages * 4096, .time_s = 1.0};
    CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
    CU_ASSERT_EQUAL(ms_sched_defer_budget(s), 4915);
    memset(bm, 0, nw * 8);
    for (uint64_t p = 10 * 512; p < 14 * 512; p++)
        ms_bit_set(bm, p);
    for (int i = 0; i < 2000; i++) /* cold writes spread everywhere else */
        ms_bit_set(bm, (uint64_t)(20 + i % 44) * 512 + (uint64_t)(i * 37) % 512);
    CU_ASSERT_EQUAL(ms_sched_plan(s, 1, bm, 1.0, 1.0, &pr), MS_OK);
    /* 4048 pages outstanding at 32768/s = 124 ms <= 300 ms: stop after
     * this round */
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_AFTER);
    CU_ASSERT(strstr(pr.reason, "target") != NULL);
    /* the four hot fragments are last in the order */
    for (uint32_t i = 60; i < 64; i++)
        CU_ASSERT(pr.order[i] >= 10 && pr.order[i] < 14);
    /* coldest first: untouched fragments lead, in address order */
    CU_ASSERT_EQUAL(pr.order[0], 0);
    CU_ASSERT_EQUAL(pr.order[10], 14);
    if (!hold) {
        /* everything goes live once more, hottest last */
        CU_ASSERT_EQUAL(pr.deferred_fragments, 0);
        CU_ASSERT_EQUAL(pr.pending_pages, 0);
        CU_ASSERT_EQUAL(pr.send_pages, 4048);
        memset(bm, 0, nw * 8);
        CU_ASSERT_EQUAL(ms_sched_final(s, bm), 0);
        free(bm);
        ms_sched_free(s);
        return;
    }
    CU_ASSERT_EQUAL(pr.deferred_fragments, 4);
    CU_ASSERT_EQUAL(pr.pending_pages, 4 * 512);
    for (uint64_t p = 10 * 512; p < 14 * 512; p++)
        CU_ASSERT_FALSE(ms_bit_test(bm, p));
    CU_ASSERT_EQUAL(pr.send_pages, 2000);
    /* the final round carries the held-back pages */
    memset(bm, 0, nw * 8);
    CU_ASSERT_EQUAL(ms_sched_final(s, bm), 4 * 512);
    free(bm);
    ms_sched_free(s);
}

static void test_fragmented_defers_hot(void) { defers_hot(true); }
static void test_fragmented_releases_on_stop(void) { defers_hot(false); }

/* `fragmented` over 64 fragments of 512 pages, downtime target 100 ms. */
static ms_sched *fragmented_64_frags(uint64_t **bm, size_t *nw)
{
    ms_policy_config c = config_downtime(100);
    return sched_all_dirty("fragmented", &c, 64 * 512, bm, nw);
}

/* Hot memory larger than the budget: only what fits is held back, and the
 * policy stops when rounds stop shrinking what is outstanding. */
static void test_fragmented_budget_and_stall(void)
{
    size_t nw;
    uint64_t *bm;
    ms_sched *s = fragmented_64_frags(&bm, &nw);
    ms_sched_round pr;
    int stopped = -1;
    for (uint32_t round = 0; round < 30 && stopped < 0; round++) {
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.5, 0.5 * round, &pr), MS_OK);
        /* budget: 0.5 * 0.1 s * 32768 pages/s = 1638 pages: 3 fragments */
        if (pr.decision != MS_DECIDE_STOP_NOW)
            CU_ASSERT(pr.pending_pages <= ms_sched_defer_budget(s));
        if (round >= 1)
            CU_ASSERT_EQUAL(pr.deferred_fragments, 3);
        if (pr.decision != MS_DECIDE_CONTINUE) {
            stopped = (int)round;
            break;
        }
        ms_round_done d = {.round = round, .pages = pr.send_pages,
                           .raw_bytes = pr.send_pages * 4096, .time_s = pr.send_pages / 32768.0};
        CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
        /* 16 fragments (8192 pages) rewritten every round: never converges */
        memset(bm, 0, nw * 8);
        for (uint64_t p = 0; p < 16 * 512; p++)
            ms_bit_set(bm, p);
    }
    /* round 1 sets the reference, round 2 shows no progress: stop there,
     * not after Xen's five rounds or the 30-round safety. Every outstanding
     * page is rewritten every round, so one more live round would leave as
     * much for the pause: pause now. */
    CU_ASSERT_EQUAL(stopped, 2);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_NOW);
    CU_ASSERT(strstr(pr.reason, "no progress") != NULL);
    CU_ASSERT(strstr(pr.reason, "pause now") != NULL);
    CU_ASSERT_EQUAL(pr.send_pages, 0);
    CU_ASSERT_EQUAL(ms_sched_pending_count(s), 16 * 512);
    free(bm);
    ms_sched_free(s);
}

/* A deterministic workload for the stop rule: pages of fragments 0..15
 * (8192, the hot set) are written at 10/s each, the other 48 fragments'
 * pages at 0.02/s, each page a Poisson process drawn with rnd(). The link
 * moves 32768 pages/s; the downtime target is 100 ms, so the deferral
 * budget (1638 pages) holds only 3 of the 16 hot fragments and the rounds
 * stall near 6000 outstanding pages (~190 ms). */
#define HC_RATE 32768.0

static double hc_lambda(uint64_t page) { return page < 16 * 512 ? 10.0 : 0.02; }

/* The dirty bitmap after a live round that sent `sent` in fragment order
 * `order` at HC_RATE, `stretch` times slower than the link (a noisy
 * round). With reads within the round (`sync`, as the engine does for
 * fragmented) a sent page is dirty only if written after its send; without
 * (precopy), if written at any time in the round; an unsent page if
 * written at all. */
static void hc_round(uint64_t *bm, const uint64_t *sent, const uint32_t *order, uint32_t nfrag,
                     uint64_t npages, bool sync, double stretch)
{
    uint64_t n = ms_bitmap_count(sent, npages), k = 0;
    double round_s = stretch * (double)n / HC_RATE;
    memset(bm, 0, ms_bitmap_words(npages) * 8);
    for (uint32_t i = 0; i < nfrag; i++)
        for (uint64_t p = (uint64_t)order[i] * 512; p < (uint64_t)(order[i] + 1) * 512; p++) {
            double window = round_s;
            if (ms_bit_test(sent, p) && sync)
                window -= stretch * (double)k / HC_RATE;
            k += ms_bit_test(sent, p);
            if (rndf() < -expm1(-hc_lambda(p) * window))
                ms_bit_set(bm, p);
        }
}

/* Run `policy` on the workload until it stops; round `slow` (if any) takes
 * three times as long as the link needs. Returns the final round's pages;
 * *last is the plan of the round it stopped in (its order copied to
 * order[64]: the scheduler's own array is freed here) and *outstanding
 * what pausing at that plan would have left. */
static uint64_t hc_final(const char *policy, bool hold, uint32_t slow, ms_sched_round *last,
                         uint32_t *order, uint64_t *outstanding)
{
    const uint64_t npages = 64 * 512;
    ms_policy_config c = config_downtime(100);
    c.hold_on_stop = hold;
    size_t nw;
    uint64_t *bm;
    ms_sched *s = sched_all_dirty(policy, &c, npages, &bm, &nw);
    bool sync = ms_sched_syncs_in_round(s);
    uint64_t *sent = calloc(nw, 8);
    rng_state = 42;
    double interval = 0, t = 0;
    for (uint32_t round = 0;; round++) {
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, interval, t, last), MS_OK);
        *outstanding = last->send_pages + last->pending_pages;
        if (last->decision == MS_DECIDE_STOP_NOW) {
            memset(bm, 0, nw * 8); /* paused at once: nothing written since */
            break;
        }
        double stretch = round == slow ? 3 : 1;
        interval = stretch * (double)last->send_pages / HC_RATE;
        t += interval;
        ms_round_done d = {.round = round, .pages = last->send_pages,
                           .raw_bytes = last->send_pages * 4096, .time_s = interval};
        bool stop = last->decision == MS_DECIDE_STOP_AFTER ||
                    ms_sched_sent(s, &d) != MS_DECIDE_CONTINUE;
        memcpy(sent, bm, nw * 8);
        hc_round(bm, sent, last->order, last->nfragments, npages, sync, stretch);
        if (stop)
            break;
    }
    uint64_t final = ms_sched_final(s, bm);
    memcpy(order, last->order, 64 * sizeof(*order));
    last->order = NULL;
    last->frag_send = NULL;
    free(sent);
    free(bm);
    ms_sched_free(s);
    return final;
}

/* The budget-aware final round, in a steady stall: the hot set is larger
 * than the deferral budget and rounds stop shrinking above the target. One
 * more round would leave about as much as pausing now, so the policy
 * pauses now; that final round is smaller than precopy's on the same
 * workload (precopy's rounds carry every page written during them). */
static void test_fragmented_steady_stall(void)
{
    ms_sched_round pr;
    uint32_t order[64];
    uint64_t outstanding = 0, pre_out = 0;
    uint64_t final = hc_final("fragmented", false, UINT32_MAX, &pr, order, &outstanding);
    uint64_t pre = hc_final("precopy", false, UINT32_MAX, &pr, order, &pre_out);
    uint64_t again = hc_final("fragmented", false, UINT32_MAX, &pr, order, &outstanding);
    fprintf(stderr, "\n  steady: final %llu pages (%s); precopy %llu\n",
            (unsigned long long)final, pr.reason, (unsigned long long)pre);
    CU_ASSERT_EQUAL(final, again); /* deterministic */
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_NOW);
    CU_ASSERT(strstr(pr.reason, "no progress") != NULL);
    CU_ASSERT(strstr(pr.reason, "pause now") != NULL);
    CU_ASSERT(outstanding > 100 * HC_RATE / 1000); /* did not fit the target */
    CU_ASSERT_EQUAL(final, outstanding);
    CU_ASSERT(final < pre);
}

/* The same workload with one round three times slower than the link (the
 * machine was busy): the next bitmap is inflated, rounds look stalled, and
 * pausing there would carry all of it. One more live round, hot fragments
 * last, is predicted to leave much less, so the policy sends it. */
static void slow_round(bool hold)
{
    ms_sched_round pr;
    uint32_t order[64];
    uint64_t outstanding = 0, pre_out = 0;
    uint64_t final = hc_final("fragmented", hold, 2, &pr, order, &outstanding);
    fprintf(stderr, "\n  slow round%s: stop at %llu outstanding, final %llu pages (%s)",
            hold ? ", hold" : "", (unsigned long long)outstanding, (unsigned long long)final,
            pr.reason);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_AFTER);
    CU_ASSERT(strstr(pr.reason, "sent live once more") != NULL);
    CU_ASSERT(outstanding > 100 * HC_RATE / 1000);
    if (hold) {
        /* the budget's share stays held back for the pause */
        CU_ASSERT(pr.deferred_fragments > 0);
        CU_ASSERT(pr.pending_pages > 0 && pr.pending_pages <= 1638);
    } else {
        CU_ASSERT_EQUAL(pr.deferred_fragments, 0);
        CU_ASSERT_EQUAL(pr.pending_pages, 0);
        CU_ASSERT_EQUAL(pr.send_pages, outstanding);
    }
    /* hottest last: the sixteen hot fragments close the round */
    for (uint32_t i = 48; i < 64; i++)
        CU_ASSERT(order[i] < 16);
    CU_ASSERT(final < 0.8 * (double)outstanding);
    uint64_t pre = hc_final("precopy", false, 2, &pr, order, &pre_out);
    fprintf(stderr, "; precopy %llu\n", (unsigned long long)pre);
    CU_ASSERT(final < pre);
}

/* Memory that becomes rewritten faster than it can be sent (stress-ng
 * moving to a method that writes everything): outstanding doubles over
 * what the previous round left, but all of it is in saturated fragments,
 * so one more round would leave all of it again: pause now. */
static void test_fragmented_saturation_jump(void)
{
    size_t nw;
    uint64_t *bm;
    ms_sched *s = fragmented_64_frags(&bm, &nw);
    ms_sched_round pr;
    for (uint32_t round = 0; round < 3; round++) {
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.25, 0.25 * round, &pr), MS_OK);
        if (round == 2)
            break;
        CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_CONTINUE);
        ms_round_done d = {.round = round, .pages = pr.send_pages,
                           .raw_bytes = pr.send_pages * 4096, .time_s = pr.send_pages / 32768.0};
        CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
        /* fragments 0..7 rewritten after round 0, 0..15 after round 1 */
        memset(bm, 0, nw * 8);
        for (uint64_t p = 0; p < (round ? 16u : 8u) * 512; p++)
            ms_bit_set(bm, p);
    }
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_NOW);
    CU_ASSERT(strstr(pr.reason, "last round left 4096") != NULL);
    CU_ASSERT(strstr(pr.reason, "pause now") != NULL);
    CU_ASSERT_EQUAL(ms_sched_pending_count(s), 16 * 512);
    free(bm);
    ms_sched_free(s);
}

/* The stall of test_fragmented_budget_and_stall (16 fragments rewritten
 * every round), with bitmap reads telling the policy about the workload:
 * after round 0 one read of `quiet_s` found `quiet_pages` pages written,
 * and after every round one read of `busy_s` found 8192. From round `calm`
 * on (UINT32_MAX: never) nothing is written; the reads after each round
 * say so, unless `busy_reads` (a write pass that the bitmap missed).
 * Returns the round it stopped in. */
static uint32_t phased_reads(uint64_t quiet_pages, double quiet_s, double busy_s, uint32_t calm,
                             bool busy_reads, ms_sched_round *pr)
{
    size_t nw;
    uint64_t *bm;
    ms_sched *s = fragmented_64_frags(&bm, &nw);
    uint32_t round = 0;
    for (;; round++) {
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.25, 0.25 * round, pr), MS_OK);
        if (pr->decision != MS_DECIDE_CONTINUE || round == 30)
            break;
        ms_round_done d = {.round = round, .pages = pr->send_pages,
                           .raw_bytes = pr->send_pages * 4096, .time_s = pr->send_pages / 32768.0};
        CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
        if (round == 0)
            ms_sched_sample(s, quiet_pages, quiet_s);
        ms_sched_sample(s, round + 1 >= calm && !busy_reads ? 0 : 8192, busy_s);
        memset(bm, 0, nw * 8);
        for (uint64_t p = 0; p < (round + 1 >= calm ? 0u : 16u) * 512; p++)
            ms_bit_set(bm, p);
    }
    free(bm);
    ms_sched_free(s);
    return round;
}

static uint32_t phased_stop(uint64_t quiet_pages, double quiet_s, uint32_t calm, ms_sched_round *pr)
{
    return phased_reads(quiet_pages, quiet_s, 0.1, calm, false, pr);
}

/* A workload seen quiet once (stress-ng between write passes) stalls: the
 * policy goes on instead of pausing with everything, like Xen for at most
 * five live rounds, and stops as soon as a round falls into a quiet phase.
 * Reads that are busy, or too short to tell, change nothing. */
static void test_fragmented_quiet_phases(void)
{
    ms_sched_round pr;
    /* never calm: the stall rule waits out Xen's five rounds, then pauses */
    CU_ASSERT_EQUAL(phased_stop(2, 0.1, UINT32_MAX, &pr), 5);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_NOW);
    CU_ASSERT(strstr(pr.reason, "no progress") != NULL);
    /* calm from round 3: the quiet round's bitmap fits the target */
    CU_ASSERT_EQUAL(phased_stop(2, 0.1, 3, &pr), 3);
    CU_ASSERT_NOT_EQUAL(pr.decision, MS_DECIDE_CONTINUE);
    CU_ASSERT(strstr(pr.reason, "<= target") != NULL);
    /* never seen quiet: pause at the first stall, as before */
    CU_ASSERT_EQUAL(phased_stop(8192, 0.1, 3, &pr), 2);
    CU_ASSERT(strstr(pr.reason, "no progress") != NULL);
    /* 40 pages are 0.12% of memory: not quiet */
    CU_ASSERT_EQUAL(phased_stop(40, 0.1, 3, &pr), 2);
    /* a read over 10 ms is too short to call a phase quiet */
    CU_ASSERT_EQUAL(phased_stop(0, 0.01, 3, &pr), 2);
    /* the bitmap fits from round 3, but the reads say a write pass is on:
     * no stop in it; Xen's five rounds bound the wait */
    CU_ASSERT_EQUAL(phased_reads(2, 0.1, 0.1, 3, true, &pr), 5);
    CU_ASSERT(strstr(pr.reason, "<= target") != NULL);
    /* one quiet read among long busy ones (quiet 2% of the time): a
     * workload without quiet phases, pause at the first stall */
    CU_ASSERT_EQUAL(phased_reads(2, 0.05, 1.0, 3, false, &pr), 2);
}

static void test_fragmented_slow_round(void) { slow_round(false); }
static void test_fragmented_slow_round_hold(void) { slow_round(true); }

static void test_downtime_policy(void)
{
    const uint64_t npages = 10000;
    ms_policy_config c = config_downtime(100);
    c.max_rounds = 4;
    size_t nw;
    uint64_t *bm;
    ms_sched *s = sched_all_dirty("downtime", &c, npages, &bm, &nw);
    ms_sched_round pr;
    CU_ASSERT_EQUAL(ms_sched_plan(s, 0, bm, 0, 0, &pr), MS_OK);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_CONTINUE);
    ms_round_done d = {.round = 0, .pages = npages, .raw_bytes = npages * 4096, .time_s = 1.0};
    CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
    /* 10000 pages/s and 100 ms: 1001 pages do not fit, 1000 do */
    set_first(bm, nw, 1001);
    CU_ASSERT_EQUAL(ms_sched_plan(s, 1, bm, 1, 1, &pr), MS_OK);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_CONTINUE);
    d = (ms_round_done){.round = 1, .pages = 1001, .raw_bytes = 1001 * 4096, .time_s = 0.1001};
    CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
    set_first(bm, nw, 1000);
    CU_ASSERT_EQUAL(ms_sched_plan(s, 2, bm, 0.1, 1.1, &pr), MS_OK);
    CU_ASSERT_EQUAL(pr.decision, MS_DECIDE_STOP_NOW);
    CU_ASSERT_EQUAL(pr.send_pages, 0);
    CU_ASSERT_EQUAL(pr.pending_pages, 1000);
    memset(bm, 0, nw * 8);
    CU_ASSERT_EQUAL(ms_sched_final(s, bm), 1000);
    ms_sched_free(s);

    /* the safety stops a workload that never fits */
    CU_ASSERT_EQUAL_FATAL(ms_sched_new("downtime", &c, npages, 4096, &s), MS_OK);
    set_first(bm, nw, npages);
    uint32_t round = 0;
    for (;; round++) {
        CU_ASSERT_EQUAL_FATAL(ms_sched_plan(s, round, bm, 0.1, 0.1 * round, &pr), MS_OK);
        if (pr.decision != MS_DECIDE_CONTINUE)
            break;
        d = (ms_round_done){.round = round, .pages = pr.send_pages,
                            .raw_bytes = pr.send_pages * 4096, .time_s = pr.send_pages / 10000.0};
        CU_ASSERT_EQUAL(ms_sched_sent(s, &d), MS_DECIDE_CONTINUE);
        set_first(bm, nw, 5000);
    }
    CU_ASSERT_EQUAL(round, 4);
    CU_ASSERT(strstr(pr.reason, "max 4") != NULL);
    free(bm);
    ms_sched_free(s);
}

static void test_bad_config(void)
{
    ms_sched *s = NULL;
    CU_ASSERT_EQUAL(ms_sched_new("nope", NULL, 100, 4096, &s), MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "nope") != NULL);
    ms_policy_config c;
    ms_policy_config_default(&c);
    c.fragment_pages = 100;
    CU_ASSERT_EQUAL(ms_sched_new("fragmented", &c, 1000, 4096, &s), MS_ERR_INVAL);
    CU_ASSERT(strstr(ms_last_error(), "multiple of 64") != NULL);
    ms_policy_config_default(&c);
    c.defer_share = 1.5;
    CU_ASSERT_EQUAL(ms_sched_new("fragmented", &c, 1000, 4096, &s), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_sched_new("precopy", NULL, 0, 4096, &s), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_sched_new("precopy", NULL, 10, 1000, &s), MS_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(ms_policy_by_name("downtime"));
    CU_ASSERT_PTR_NULL(ms_policy_by_name("Precopy"));
}

/* A source that sets bits past npages must not make pages appear. */
static void test_tail_masked(void)
{
    ms_sched *s = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_sched_new("precopy", NULL, 100, 4096, &s), MS_OK);
    uint64_t bm[2] = {~0ull, ~0ull};
    ms_sched_round pr;
    CU_ASSERT_EQUAL(ms_sched_plan(s, 0, bm, 0, 0, &pr), MS_OK);
    CU_ASSERT_EQUAL(pr.send_pages, 100);
    CU_ASSERT_EQUAL(bm[1], (1ull << 36) - 1);
    ms_sched_free(s);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"xen simple_precopy_policy rule", test_xen_rule},
        {"precopy reproduces xen's send_memory_live decisions", test_precopy_matches_xen},
        {"no dirty page lost, any policy, random workloads", test_no_page_lost},
        {"fragmented holds hot fragments back, cold first", test_fragmented_defers_hot},
        {"fragmented sends all live once more when it stops", test_fragmented_releases_on_stop},
        {"fragmented deferral within budget, stops on stall", test_fragmented_budget_and_stall},
        {"fragmented: steady stall above target, pause now, final < precopy's",
         test_fragmented_steady_stall},
        {"fragmented: stall after a slow round, one more live round, final < precopy's",
         test_fragmented_slow_round},
        {"fragmented: the same with hold_on_stop", test_fragmented_slow_round_hold},
        {"fragmented: stall as memory saturates, pause now", test_fragmented_saturation_jump},
        {"fragmented: a workload with quiet phases is waited for, at most Xen's 5 rounds",
         test_fragmented_quiet_phases},
        {"downtime policy: limit and max iterations", test_downtime_policy},
        {"bad policy configurations refused", test_bad_config},
        {"bits past the last page ignored", test_tail_masked},
        {NULL, NULL},
    };
    ms_test_add_suite("fragsched", cases);
})
