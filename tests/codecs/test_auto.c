/* The auto compressor's decision rule on given measurements, and the
 * decision state's exploration, hysteresis and per-codec accounting. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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
    /* Incompressible data on a known link: every compressor ties with
     * sending as is; the cheapest compressor is the choice, as only a
     * compressor sees the data turn compressible again. */
    v = typical(50 * MB, 2);
    v.ratio[MS_AUTO_LZ4] = v.ratio[MS_AUTO_ZSTD1] = v.ratio[MS_AUTO_ZSTD3] = 1.0;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.03), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_LZ4);
    /* Sending as is wins only when clearly ahead (by NONE_MARGIN, 10%,
     * and the hysteresis): one worker at 40 MB/s of lz4 (after the 25%
     * trial margin: 32) on that 50 MB/s link. */
    v.workers = 1;
    v.cpu_rate[MS_AUTO_LZ4] = 40 * MB;
    v.cpu_rate[MS_AUTO_ZSTD1] = v.cpu_rate[MS_AUTO_ZSTD3] = 10 * MB;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.03), MS_AUTO_NONE);
    /* Between once and twice the hysteresis behind that, the current
     * choice stays, whichever it is: a compressor 5% behind is kept, and
     * sending as is is not left for it either. */
    v.efficiency[MS_AUTO_LZ4] = 1.0;
    v.cpu_rate[MS_AUTO_LZ4] = 50 * MB / 1.10 / 1.05;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.03), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_NONE);
    v.cpu_rate[MS_AUTO_LZ4] = 50 * MB / 1.10 / 1.02;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.03), MS_AUTO_LZ4);
}

/* A costlier compressor must promise 5% more than a cheaper one, whatever
 * the hysteresis: the 1 Gbit/s case where zstd:3 and zstd:1 both fill the
 * link and their efficiencies differ by noise (0.96 against 0.94). */
static void test_costlier_margin(void)
{
    ms_auto_view v = typical(122 * MB, 2);
    v.ratio[MS_AUTO_LZ4] = 0.71;
    v.ratio[MS_AUTO_ZSTD1] = v.ratio[MS_AUTO_ZSTD3] = 0.59;
    v.cpu_rate[MS_AUTO_ZSTD3] = 140 * MB;
    v.efficiency[MS_AUTO_LZ4] = 1.0;
    v.efficiency[MS_AUTO_ZSTD1] = 0.94;
    v.efficiency[MS_AUTO_ZSTD3] = 0.96;
    for (unsigned cur = 0; cur < MS_AUTO_NCAND; cur++)
        CU_ASSERT_EQUAL(ms_auto_decide(&v, cur, 0.01), MS_AUTO_ZSTD1);
    /* zstd:3 shrinking the data 7% more clears the margin (100 Mbit/s). */
    v = typical(12.5 * MB, 2);
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.07;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.01), MS_AUTO_ZSTD3);
    /* 4.5% does not move zstd:1 up; 5.5% does. */
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.045;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.01), MS_AUTO_ZSTD1);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.01), MS_AUTO_ZSTD1);
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.055;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.01), MS_AUTO_ZSTD3);
    /* Coming down needs the lead under half the margin (2.5%): zstd:3
     * stays at 4.5% and 4%, so estimates hovering at the margin cannot
     * swap the two; it leaves at 2%. */
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.045;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.01), MS_AUTO_ZSTD3);
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.04;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.01), MS_AUTO_ZSTD3);
    v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / 1.02;
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD3, 0.01), MS_AUTO_ZSTD1);
    unsigned cur = MS_AUTO_ZSTD1, changes = 0;
    for (int i = 0; i < 100; i++) {
        v.ratio[MS_AUTO_ZSTD3] = v.ratio[MS_AUTO_ZSTD1] / (i & 1 ? 1.055 : 1.045);
        unsigned next = ms_auto_decide(&v, cur, 0.01);
        changes += next != cur;
        cur = next;
    }
    CU_ASSERT_EQUAL(changes, 1);
}

/* While the link is unseen sending as is is no candidate, even where the
 * formula (link unknown: unlimited) would pick it; with nothing measured
 * the current choice stays. */
static void test_link_unseen_decide(void)
{
    ms_auto_view v = typical(0, 2);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.01), MS_AUTO_NONE);
    v.link_unseen = true;
    CU_ASSERT_EQUAL(ms_auto_estimate(&v, MS_AUTO_NONE), 0);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_LZ4, 0.01), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_NONE, 0.01), MS_AUTO_LZ4);
    ms_auto_view blank = {.workers = 2, .link_unseen = true};
    blank.ratio[MS_AUTO_NONE] = 1.0;
    blank.cpu_rate[MS_AUTO_NONE] = INFINITY;
    CU_ASSERT_EQUAL(ms_auto_decide(&blank, MS_AUTO_LZ4, 0.01), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(ms_auto_decide(&blank, MS_AUTO_ZSTD1, 0.01), MS_AUTO_ZSTD1);
}

/* What the rule compares: the formula scaled by the efficiency a candidate
 * showed while it was the decision, else with its CPU rate (not its ratio)
 * discounted by the trial margin. The 100 Mbit/s case: zstd:1 delivered
 * what the formula said; zstd:3, never tried, shrinks 6% more and the link
 * limits it too, so it gets its trial at once, margin or not. */
static void test_estimate_and_trial(void)
{
    ms_auto_view v = typical(12 * MB, 2);
    v.trial_margin = 0.25;
    v.ratio[MS_AUTO_ZSTD1] = 0.32;
    v.ratio[MS_AUTO_ZSTD3] = 0.30;
    v.efficiency[MS_AUTO_ZSTD1] = 1.0;
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_estimate(&v, MS_AUTO_ZSTD1), 12 * MB / 0.32, 1);
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_estimate(&v, MS_AUTO_ZSTD3), 12 * MB / 0.30, 1);
    CU_ASSERT_EQUAL(ms_auto_decide(&v, MS_AUTO_ZSTD1, 0.02), MS_AUTO_ZSTD3);
    /* CPU-bound, the margin applies: 2 x 150 / 1.25 = 240 MB/s. */
    v.link_rate = 125 * MB;
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_estimate(&v, MS_AUTO_ZSTD3), 240 * MB, 1);
    /* A measured efficiency scales the formula: zstd:1 delivered 80%. */
    v.efficiency[MS_AUTO_ZSTD1] = 0.8;
    CU_ASSERT_DOUBLE_EQUAL(ms_auto_estimate(&v, MS_AUTO_ZSTD1), 0.8 * 125 * MB / 0.32, 1);
    CU_ASSERT_EQUAL(ms_auto_estimate(&v, MS_AUTO_NCAND), 0);
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

static double cpu_s_of(const ms_auto_view *v, unsigned c) { return c ? 1e6 / v->cpu_rate[c] : 0; }

/* Each zstd level compared with lz4 on one frame, then one frame of each
 * compressor recorded (zstd:3 last). */
static void teach(ms_auto *a, const ms_auto_view *v)
{
    for (unsigned c = MS_AUTO_ZSTD1; c < MS_AUTO_NCAND; c++)
        ms_auto_compare(a, 1000000, c, (uint64_t)(1e6 * v->ratio[c]), cpu_s_of(v, c), MS_AUTO_LZ4,
                        (uint64_t)(1e6 * v->ratio[MS_AUTO_LZ4]), cpu_s_of(v, MS_AUTO_LZ4));
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        feed(a, v, c);
}

/* Frame `seq` of 1 MB as auto picks it, compressed as `v` says, with the
 * comparison auto asks for; returns the pick. */
static unsigned step(ms_auto *a, uint64_t seq, const ms_auto_view *v)
{
    unsigned shadow, c = ms_auto_pick(a, seq, 1000000, &shadow);
    uint64_t out = (uint64_t)(1e6 * v->ratio[c]);
    if (shadow < MS_AUTO_NCAND)
        ms_auto_compare(a, 1000000, c, out, cpu_s_of(v, c), shadow, (uint64_t)(1e6 * v->ratio[shadow]),
                        cpu_s_of(v, shadow));
    ms_auto_record(a, c, 1000000, out, cpu_s_of(v, c));
    return c;
}

/* n rate windows at about `rate`, each a new value as real windows are
 * (and none exactly `rate`, which a test may have passed just before). */
static void windows(ms_auto *a, double rate, int limit, unsigned n)
{
    static unsigned k;
    for (unsigned i = 0; i < n; i++)
        ms_auto_link_sample(a, rate * (1.0 + 1e-6 * (1 + ++k % 7)), limit);
}

/* A state over a full link at truth's rate that tried each compressor on
 * frames 0-2 and held the first choice for its three windows: the decision
 * must be `expect`. */
static ms_auto *tried_state(const ms_auto_config *cfg, const ms_auto_view *truth, unsigned expect)
{
    ms_auto *a = ms_auto_new(cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    windows(a, truth->link_rate, MS_AUTO_BY_LINK, 2);
    for (uint64_t seq = 0; seq < 3; seq++)
        step(a, seq, truth);
    windows(a, truth->link_rate, MS_AUTO_BY_LINK, 3);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL_FATAL(st.current, expect);
    return a;
}

/* Two workers on a 100 Mbit/s link, the typical shapes as the truth. */
static ms_auto *slow_link_state(unsigned explore_every, ms_auto_view *truth)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = explore_every};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    *truth = typical(12.5 * MB, 2);
    windows(a, truth->link_rate, MS_AUTO_BY_LINK, 2); /* the second full window tells the link */
    return a;
}

static void test_state_converges(void)
{
    ms_auto_view truth;
    ms_auto *a = slow_link_state(8, &truth);
    /* Each compressor is tried first, before anything is known. */
    bool seen[MS_AUTO_NCAND] = {0};
    for (uint64_t seq = 0; seq < 3; seq++) {
        unsigned c = step(a, seq, &truth);
        CU_ASSERT(c != MS_AUTO_NONE);
        seen[c] = true;
    }
    CU_ASSERT(seen[MS_AUTO_LZ4] && seen[MS_AUTO_ZSTD1] && seen[MS_AUTO_ZSTD3]);
    /* lz4, known first, became the decision and holds for three windows. */
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_LZ4);
    windows(a, truth.link_rate, MS_AUTO_BY_LINK, 3);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    /* Ratios and speeds from the comparisons on the same frames, scaled
     * from the current choice's. */
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_LZ4], 0.5, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(v.cpu_rate[MS_AUTO_ZSTD1], 300 * MB, 1e3);
    CU_ASSERT_DOUBLE_EQUAL(v.cpu_rate[MS_AUTO_ZSTD3], 150 * MB, 1e3);
    ms_auto_free(a);
}

static void test_exploration_and_stats(void)
{
    ms_auto_view truth;
    ms_auto *a = slow_link_state(8, &truth);
    unsigned per[MS_AUTO_NCAND] = {0};
    for (uint64_t seq = 0; seq < 3 + 160; seq++) {
        unsigned c = ms_auto_pick(a, seq, 1000000, NULL);
        per[c]++;
        feed(a, &truth, c);
        if (seq == 2)
            windows(a, truth.link_rate, MS_AUTO_BY_LINK, 3);
    }
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    /* Never none on a slow link; the others explored every 8th frame in
     * turn (lz4 was the decision for the three frames before the windows). */
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
    /* lz4 from the start (the link unseen), lz4 -> zstd:3 after the hold,
     * then steady through the exploration. */
    CU_ASSERT_EQUAL(st.switches, 1);

    /* The data turns incompressible: every compressor ties with sending as
     * is, and auto moves to the cheapest compressor, which sees the data
     * when it turns compressible again. */
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        truth.ratio[c] = 1.0;
    for (uint64_t seq = 163; seq < 163 + 200; seq++) {
        feed(a, &truth, ms_auto_pick(a, seq, 1000000, NULL));
        windows(a, truth.link_rate, MS_AUTO_BY_LINK, 1);
    }
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_LZ4);
    ms_auto_free(a);
}

static void test_link_samples(void)
{
    /* No trial margin: this is about reading the link, not about trials. */
    ms_auto_config cfg = {.workers = 1, .link_cap = 100 * MB, .alpha = 0.5, .trial_margin = -1};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view v;
    /* The cap bounds every sample. */
    ms_auto_link_sample(a, 500 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.link_rate, 100 * MB, 1);
    /* zstd:3, at 20 MB/s of input for a 0.3 ratio, is CPU-bound on this link. */
    ms_auto_view truth = typical(100 * MB, 1);
    truth.cpu_rate[MS_AUTO_LZ4] = truth.cpu_rate[MS_AUTO_ZSTD1] = 1 * MB;
    truth.cpu_rate[MS_AUTO_ZSTD3] = 20 * MB;
    teach(a, &truth);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE); /* 100 MB/s as is beats 20 of zstd:3 */
    ms_auto_link_sample(a, 10 * MB, MS_AUTO_BY_LINK); /* full while sending as is: the link is slow */
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.link_rate, 55 * MB, 1);
    ms_auto_link_sample(a, 2 * MB, MS_AUTO_BY_LINK);
    ms_auto_link_sample(a, 2.1 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    /* A full wire lowers the link whatever the choice; what zstd:3 saw is
     * its own wire rate only once its trial's three windows have passed. */
    ms_auto_get_view(a, &v);
    double before = v.link_rate;
    ms_auto_link_sample(a, 1 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_view(a, &v);
    CU_ASSERT(v.link_rate < before);
    /* Each choice keeps the wire rate it saw: sending as is, the four
     * windows before zstd:3 was chosen (100 as capped, 10, 2, 2.1, weight
     * 0.5 each); zstd:3 none yet, in its three-window hold. */
    CU_ASSERT_DOUBLE_EQUAL(v.wire_rate[MS_AUTO_NONE], 15.3 * MB, 1);
    CU_ASSERT_EQUAL(v.wire_rate[MS_AUTO_ZSTD3], 0);
    /* A wire that was not saturated tells only a lower bound. */
    ms_auto_link_sample(a, 0.5 * MB, MS_AUTO_BY_PRODUCER);
    ms_auto_view lb;
    ms_auto_get_view(a, &lb);
    CU_ASSERT_EQUAL(lb.link_rate, v.link_rate);
    ms_auto_link_sample(a, 90 * MB, MS_AUTO_BY_WORKERS);
    ms_auto_get_view(a, &lb);
    CU_ASSERT(lb.link_rate > v.link_rate);
    v = lb;
    /* Junk samples are ignored. */
    ms_auto_link_sample(a, NAN, MS_AUTO_BY_LINK);
    ms_auto_link_sample(a, -1, MS_AUTO_BY_LINK);
    ms_auto_link_sample(a, 0, MS_AUTO_BY_LINK);
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
    /* A producer-bound wire at 40 MB/s says nothing of the link. Until it
     * has been free for three windows, the link may be slow: lz4 stays. */
    ms_auto_link_sample(a, 40 * MB, false);
    ms_auto_link_sample(a, 40.1 * MB, false);
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    CU_ASSERT_EQUAL(v.link_rate, 0);
    CU_ASSERT(v.link_unseen);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_LZ4);
    /* The third free window: unlimited as far as anyone can tell, so none. */
    ms_auto_link_sample(a, 40.2 * MB, false);
    ms_auto_get_view(a, &v);
    CU_ASSERT(!v.link_unseen);
    CU_ASSERT_EQUAL(v.link_rate, 0);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE);
    /* Saturated at 40 MB/s twice in a row: the link is slow, compress hard
     * (once none's hold of three windows is over). */
    ms_auto_link_sample(a, 40 * MB, true);
    ms_auto_link_sample(a, 40.1 * MB, true);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.link_rate, 40.1 * MB, 1);
    ms_auto_link_sample(a, 40.2 * MB, true);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    ms_auto_free(a);
}

/* Frame `seq` of 1 MB as auto picks it, with the given ratio and per-worker
 * rate of each candidate; returns the pick. */
static unsigned send_frame(ms_auto *a, uint64_t seq, const double *ratio, const double *cpu)
{
    ms_auto_view v = {.workers = 1};
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        v.ratio[c] = ratio[c];
        v.cpu_rate[c] = c ? cpu[c] : INFINITY;
    }
    return step(a, seq, &v);
}

/* One host, two cores: lz4 on every frame contends for the cores with the
 * producer and the receiver, and the pipeline delivers far less than the
 * workers' CPU speed (the same, frame for frame) suggests; frames wait for
 * the workers. auto must learn that from what lz4 delivered while it was
 * the decision, settle on none, and try lz4 again only now and then;
 * without that contention (lz4 keeps the 600 MB/s wire full) lz4 stays.
 * Each step is one rate window and one frame. */
static unsigned run_contended(double lz4_delivers, unsigned *switches)
{
    ms_auto_config cfg = {.workers = 2, .steady_frames = 512};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view truth = {.workers = 2};
    const double cpu[MS_AUTO_NCAND] = {INFINITY, 900 * MB, 400 * MB, 150 * MB};
    const double ratio[MS_AUTO_NCAND] = {1, 0.42, 0.30, 0.28};
    memcpy(truth.cpu_rate, cpu, sizeof cpu);
    memcpy(truth.ratio, ratio, sizeof ratio);
    unsigned per_none = 0;
    ms_auto_stats st;
    for (uint64_t seq = 0; seq < 2000; seq++) {
        ms_auto_get_stats(a, &st);
        double jitter = seq % 2 ? 1.001 : 1.0, wire = 600 * MB;
        int limit = MS_AUTO_BY_LINK;
        if (st.current != MS_AUTO_NONE && lz4_delivers * ratio[st.current] < wire) {
            wire = lz4_delivers * ratio[st.current];
            limit = MS_AUTO_BY_WORKERS;
        }
        ms_auto_link_sample(a, wire * jitter, limit);
        per_none += step(a, seq, &truth) == MS_AUTO_NONE;
    }
    ms_auto_get_stats(a, &st);
    *switches = (unsigned)st.switches;
    unsigned current = st.current;
    ms_auto_free(a);
    return current == MS_AUTO_NONE ? per_none : 0;
}

static void test_contention_learned(void)
{
    unsigned switches;
    unsigned none_frames = run_contended(300 * MB, &switches);
    /* Trials of lz4 at the start and again each time its measured
     * efficiency has drifted back (RELAX_FRAMES) or lapsed (every 512
     * frames), a few windows each; the explored frames (1 in 32).
     * Everything else goes out as is. */
    CU_ASSERT(none_frames >= 1800);
    CU_ASSERT(switches <= 40);
    /* lz4 keeping the link full: 600 / 0.42 = 1429 MB/s of input, more
     * than twice what sending as is gives. It stays the decision. */
    CU_ASSERT_EQUAL(run_contended(600 * MB / 0.42, &switches), 0);
}

/* The --json record of the choices: exact bytes per candidate as recorded. */
static void test_stats_json(void)
{
    ms_auto_view truth;
    ms_auto *a = slow_link_state(4, &truth);
    for (uint64_t seq = 0; seq < 11; seq++) {
        feed(a, &truth, ms_auto_pick(a, seq, 1000000, NULL));
        if (seq == 2)
            windows(a, truth.link_rate, MS_AUTO_BY_LINK, 3);
    }
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    ms_auto_stats_json(&st, f);
    fclose(f);
    /* Frames 0-2 try lz4, zstd:1, zstd:3 (lz4 the decision from the start,
     * held for three windows); then zstd:3 (slow link), with frames 3
     * and 7 explored (lz4, then zstd:1) and frame 11 not reached. */
    CU_ASSERT_STRING_EQUAL(text, "{\"choices\":{\"none\":{\"frames\":0,\"explored\":0,\"in_bytes\":0,\"out_bytes\":0},"
                                 "\"lz4\":{\"frames\":2,\"explored\":2,\"in_bytes\":2000000,\"out_bytes\":1000000},"
                                 "\"zstd:1\":{\"frames\":2,\"explored\":2,\"in_bytes\":2000000,\"out_bytes\":760000},"
                                 "\"zstd:3\":{\"frames\":7,\"explored\":1,\"in_bytes\":7000000,\"out_bytes\":2310000}},"
                                 "\"switches\":1,\"current\":\"zstd:3\"}");
    free(text);
    ms_auto_free(a);
}

/* A receiver on the same cores: the wire fills at 600 MB/s sending as is,
 * and compressing does not raise what arrives, since the receiver, not the
 * link, sets the pace (it delivers `comp_delivers` input bytes/s whatever
 * the ratio). The workers themselves look fast, so only what each choice
 * delivered while it was the decision can tell. Each step is a new window
 * of the sender's wire rate. Returns the frames sent as is. */
static unsigned run_receiver_bound(double comp_delivers)
{
    ms_auto_config cfg = {.workers = 2, .steady_frames = 512};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const double ratio[MS_AUTO_NCAND] = {1, 0.36, 0.30, 0.28};
    const double cpu[MS_AUTO_NCAND] = {0, 900 * MB, 400 * MB, 150 * MB};
    unsigned none_frames = 0;
    /* What sending as is delivers is known only from a window after the
     * two that make the link known: here the producer is slow to start. */
    windows(a, 600 * MB, MS_AUTO_BY_LINK, 3);
    for (uint64_t seq = 0; seq < 2000; seq++) {
        ms_auto_stats st;
        ms_auto_get_stats(a, &st);
        double input = st.current == MS_AUTO_NONE ? 600 * MB : comp_delivers;
        if (st.current == MS_AUTO_ZSTD3 && input > 2 * cpu[MS_AUTO_ZSTD3])
            input = 2 * cpu[MS_AUTO_ZSTD3];
        ms_auto_link_sample(a, input * ratio[st.current] * (seq % 2 ? 1.001 : 1.0), MS_AUTO_BY_LINK);
        none_frames += send_frame(a, seq, ratio, cpu) == MS_AUTO_NONE;
    }
    ms_auto_free(a);
    return none_frames;
}

static void test_receiver_bound(void)
{
    /* Compressing delivers half: trials of lz4 and zstd:1, a few windows
     * each, at the start and when their measurement lapses; else none. */
    CU_ASSERT(run_receiver_bound(300 * MB) >= 1800);
    /* A real link of 600 MB/s: lz4 delivers 600 / 0.36 and keeps it. */
    CU_ASSERT(run_receiver_bound(600 * MB / 0.36) <= 100);
}

/* Compressibility changes along memory far more than the ratio of one
 * compressor to another: a candidate explored on compressible data must not
 * keep that ratio when the data the current choice sees turns
 * incompressible. Its ratio is kept relative to the current choice's. */
static void test_ratio_follows_data(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 4};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    /* A 1 Gbit/s link, lz4 cheap enough to be the choice. */
    windows(a, 125 * MB, MS_AUTO_BY_LINK, 2);
    double ratio[MS_AUTO_NCAND] = {1, 0.40, 0.32, 0.30};
    const double cpu[MS_AUTO_NCAND] = {0, 900 * MB, 100 * MB, 40 * MB};
    for (uint64_t seq = 0; seq < 40; seq++) {
        send_frame(a, seq, ratio, cpu);
    }
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL_FATAL(st.current, MS_AUTO_LZ4);
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD3], 0.30, 1e-9);
    /* The data turns nearly incompressible; lz4 sees it at once, zstd:3 is
     * not explored again yet (frames 40-42 are lz4's). */
    ratio[MS_AUTO_LZ4] = 0.96;
    for (uint64_t seq = 40; seq < 43; seq++)
        ms_auto_record(a, ms_auto_pick(a, seq, 1000000, NULL), 1000000, 960000, 1000000 / cpu[MS_AUTO_LZ4]);
    ms_auto_get_view(a, &v);
    double lz4 = v.ratio[MS_AUTO_LZ4];
    CU_ASSERT(lz4 > 0.7);
    /* Scaled as powers: ln 0.30 / ln 0.40 learnt from compared frames. */
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD3], pow(lz4, log(0.30) / log(0.40)), 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD1], pow(lz4, log(0.32) / log(0.40)), 1e-9);
    ms_auto_free(a);
}

/* Sending as is at 600 MB/s: zstd:3, at 150 MB/s per worker, could not keep
 * up even if it shrank the data to nothing, so it is explored only one turn
 * in 8 (a slow frame holds up the frames behind it); lz4 and zstd:1 (2 x 320
 * MB/s could keep up, though with the trial margin they do not beat
 * sending as is) every turn. */
static void test_hopeless_explored_rarely(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 4, .link_cap = 601 * MB};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const double ratio[MS_AUTO_NCAND] = {1, 0.6, 0.55, 0.5};
    const double cpu[MS_AUTO_NCAND] = {0, 320 * MB, 320 * MB, 150 * MB};
    for (uint64_t seq = 0; seq < 3 + 4 * 48; seq++) {
        ms_auto_link_sample(a, 600 * MB * (seq % 2 ? 1.001 : 1.0), true);
        send_frame(a, seq, ratio, cpu);
    }
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_NONE);
    /* 48 turns, each other candidate every third: lz4 and zstd:1 16 (+1
     * first try); zstd:3 only on turns divisible by 8. */
    CU_ASSERT_EQUAL(st.explored[MS_AUTO_LZ4], 17);
    CU_ASSERT_EQUAL(st.explored[MS_AUTO_ZSTD1], 17);
    CU_ASSERT_EQUAL(st.explored[MS_AUTO_ZSTD3], 3); /* first try, turns 8 and 32 */
    ms_auto_free(a);
}

/* Explored frames are compressed with the current choice too (with lz4
 * while sending as is); the pair teaches how the two compare on the same
 * data: ratios as powers (ln r_c / ln r_lz4), speeds as factors. */
static void test_compare_learns(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 1000, .alpha = 1};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    windows(a, 12.5 * MB, MS_AUTO_BY_LINK, 2);
    unsigned shadow;
    /* Sending as is: lz4 explored first, nothing to compare it with. */
    CU_ASSERT_EQUAL(ms_auto_pick(a, 0, 1000000, &shadow), MS_AUTO_LZ4);
    CU_ASSERT_EQUAL(shadow, MS_AUTO_NCAND);
    ms_auto_record(a, MS_AUTO_LZ4, 1000000, 500000, 1e6 / (800 * MB));
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL_FATAL(st.current, MS_AUTO_LZ4);
    /* zstd:1 explored next, compared with lz4, now the decision. */
    CU_ASSERT_EQUAL(ms_auto_pick(a, 1, 1000000, &shadow), MS_AUTO_ZSTD1);
    CU_ASSERT_EQUAL(shadow, MS_AUTO_LZ4);
    ms_auto_compare(a, 1000000, MS_AUTO_ZSTD1, 250000, 1e6 / (300 * MB), MS_AUTO_LZ4, 500000, 1e6 / (800 * MB));
    ms_auto_record(a, MS_AUTO_ZSTD1, 1000000, 250000, 1e6 / (300 * MB));
    ms_auto_view v;
    ms_auto_get_view(a, &v);
    /* zstd:1 compressed the latest frame: its ratio and speed are the
     * reference; lz4's follow from the factors. */
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD1], 0.25, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_LZ4], 0.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(v.cpu_rate[MS_AUTO_LZ4], 800 * MB, 1);
    /* On data where lz4 leaves 0.8, zstd:1 is expected to leave 0.8^2. */
    ms_auto_record(a, MS_AUTO_LZ4, 1000000, 800000, 1e6 / (800 * MB));
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD1], 0.64, 1e-9);
    /* Incompressible data teaches nothing of ratios or speeds, and a frame
     * of a few pages nothing at all. */
    ms_auto_compare(a, 1000000, MS_AUTO_ZSTD1, 990000, 1e6 / (400 * MB), MS_AUTO_LZ4, 1000000, 1e6 / (800 * MB));
    ms_auto_compare(a, 4096, MS_AUTO_ZSTD1, 10, 1.0, MS_AUTO_LZ4, 4000, 1e-9);
    ms_auto_record(a, MS_AUTO_LZ4, 1000000, 800000, 1e6 / (800 * MB));
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.ratio[MS_AUTO_ZSTD1], 0.64, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(v.cpu_rate[MS_AUTO_ZSTD1], 300 * MB, 1);
    /* zstd:3 is never expected to shrink less than zstd:1. */
    ms_auto_compare(a, 1000000, MS_AUTO_ZSTD3, 260000, 1e6 / (100 * MB), MS_AUTO_ZSTD1, 250000, 1e6 / (300 * MB));
    ms_auto_record(a, MS_AUTO_ZSTD3, 1000000, 260000, 1e6 / (100 * MB));
    ms_auto_get_view(a, &v);
    CU_ASSERT(v.ratio[MS_AUTO_ZSTD3] <= v.ratio[MS_AUTO_ZSTD1]);
    ms_auto_free(a);
}

/* Frames of a few pages (the rest of them zero) are never explored and
 * teach nothing but the stats; an exploration turn falling on one waits
 * for the next larger frame. */
static void test_small_frames(void)
{
    ms_auto_config cfg = {.workers = 2, .explore_every = 4};
    ms_auto_view truth = typical(12.5 * MB, 2);
    /* Nothing measured: a small frame still goes out as the decision, lz4
     * while the link is unseen. */
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(ms_auto_pick(a, 0, MS_AUTO_MIN_SAMPLE - 1, NULL), MS_AUTO_LZ4);
    ms_auto_free(a);
    a = tried_state(&cfg, &truth, MS_AUTO_ZSTD3);
    /* Frame 3's turn; frame 7's: frames 7 and 8 are small, frame 9 takes it. */
    CU_ASSERT(step(a, 3, &truth) != MS_AUTO_ZSTD3);
    for (uint64_t seq = 4; seq < 7; seq++)
        CU_ASSERT_EQUAL(step(a, seq, &truth), MS_AUTO_ZSTD3);
    ms_auto_view before, after;
    ms_auto_get_view(a, &before);
    for (uint64_t seq = 7; seq < 9; seq++) {
        unsigned c = ms_auto_pick(a, seq, 512, NULL);
        CU_ASSERT_EQUAL(c, MS_AUTO_ZSTD3);
        ms_auto_record(a, c, 512, 20, 1e-9);
    }
    ms_auto_get_view(a, &after);
    CU_ASSERT_EQUAL(after.ratio[MS_AUTO_ZSTD3], before.ratio[MS_AUTO_ZSTD3]);
    CU_ASSERT_EQUAL(after.cpu_rate[MS_AUTO_ZSTD3], before.cpu_rate[MS_AUTO_ZSTD3]);
    CU_ASSERT(step(a, 9, &truth) != MS_AUTO_ZSTD3);
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.in_bytes[MS_AUTO_ZSTD3], 4 * 1000000ull + 2 * 512); /* frames 2, 4-6, 7, 8 */
    ms_auto_free(a);
}

/* What a window was held back by decides what it says: the producer (no
 * share of a link-bound choice's), the workers (the choice's share of what
 * the formula promised), the link (link-bound: a share of 1 at this very
 * rate, however slowly the link estimate follows). */
static void test_efficiency_windows(void)
{
    ms_auto_config cfg = {.workers = 2, .alpha = 1};
    ms_auto_view truth = typical(125 * MB, 2);
    truth.ratio[MS_AUTO_LZ4] = 0.35;
    truth.cpu_rate[MS_AUTO_ZSTD1] = 50 * MB; /* out of the running throughout */
    truth.cpu_rate[MS_AUTO_ZSTD3] = 20 * MB;
    ms_auto *a = tried_state(&cfg, &truth, MS_AUTO_LZ4); /* min(357, 1280) */
    for (uint64_t seq = 3; seq < 6; seq++)
        step(a, seq, &truth);
    ms_auto_view v;
    ms_auto_link_sample(a, 60 * MB, MS_AUTO_BY_PRODUCER);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.efficiency[MS_AUTO_LZ4], 1.0, 1e-9);
    /* Frames waiting for the workers at 60 MB/s of wire: 171 MB/s of input
     * where the formula (lz4 link-bound at 125 / 0.35) says 357. */
    ms_auto_link_sample(a, 60 * MB, MS_AUTO_BY_WORKERS);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.efficiency[MS_AUTO_LZ4], 60.0 / 125.0, 1e-4);
    /* A full wire at 110 MB/s while the link estimate says 125: share 1. */
    ms_auto_link_sample(a, 110 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_view(a, &v);
    CU_ASSERT_DOUBLE_EQUAL(v.efficiency[MS_AUTO_LZ4], 1.0, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(v.wire_rate[MS_AUTO_LZ4], 110 * MB, 1);
    ms_auto_free(a);
}

/* A new choice holds for three rate windows (a repeated value is no new
 * window), however the estimates move in between. */
static void test_hold_after_switch(void)
{
    /* A capped link is known from the start: none is the first decision. */
    ms_auto_config cfg = {.workers = 2, .explore_every = 1000, .link_cap = 12.5 * MB};
    ms_auto *a = ms_auto_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ms_auto_view truth = typical(12.5 * MB, 2);
    step(a, 0, &truth); /* lz4 measured: the decision at once */
    ms_auto_stats st;
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL_FATAL(st.current, MS_AUTO_LZ4);
    step(a, 1, &truth);
    step(a, 2, &truth); /* zstd:3 now known and far better on this link */
    ms_auto_link_sample(a, 12.0 * MB, MS_AUTO_BY_LINK);
    ms_auto_link_sample(a, 12.0 * MB, MS_AUTO_BY_LINK);
    ms_auto_link_sample(a, 12.1 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_LZ4);
    ms_auto_link_sample(a, 12.2 * MB, MS_AUTO_BY_LINK);
    ms_auto_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.current, MS_AUTO_ZSTD3);
    CU_ASSERT_EQUAL(st.switches, 2);
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
            picks[run][seq] = ms_auto_pick(a, seq, 1000000, NULL);
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
        feed(shared, &truth, ms_auto_pick(shared, base + i, 1000000, NULL));
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
                                           {"a costlier compressor must promise 5% more", test_costlier_margin},
                                           {"link unseen: never none", test_link_unseen_decide},
                                           {"cpu-bound picks lz4", test_cpu_bound_picks_lz4},
                                           {"hysteresis", test_hysteresis},
                                           {"estimate and trial", test_estimate_and_trial},
                                           {"compare learns", test_compare_learns},
                                           {"small frames", test_small_frames},
                                           {"efficiency windows", test_efficiency_windows},
                                           {"hold after switch", test_hold_after_switch},
                                           {"state converges", test_state_converges},
                                           {"exploration and stats", test_exploration_and_stats},
                                           {"link samples", test_link_samples},
                                           {"unknown link", test_unknown_link},
                                           {"contention learned", test_contention_learned},
                                           {"receiver-bound link", test_receiver_bound},
                                           {"ratio follows the data", test_ratio_follows_data},
                                           {"hopeless candidates explored rarely", test_hopeless_explored_rarely},
                                           {"stats json", test_stats_json},
                                           {"deterministic", test_deterministic},
                                           {"concrete chains", test_chains},
                                           {"threads", test_threads},
                                           {NULL, NULL},
                                       }))
