/* The simulator: the engine loop and the same policies, over a source that
 * can let virtual time pass (model, trace), through a link model. A round
 * costs its wire bytes over the bandwidth (or its pages over the pipeline's
 * page rate, whichever is slower) plus one round trip for the barrier, and
 * the source dirties pages for exactly that long. Everything is counted a
 * 64-bit word at a time, so a 64 GiB guest (16M pages) takes milliseconds
 * per round. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

typedef struct sim_backend {
    ms_page_source *src;
    ms_link_model link;
    double vt;
    uint64_t *ever; /* pages sent at least once: later sends are deltas */
    size_t nwords;
    uint64_t r_pages; /* the round going out */
    double r_wire, r_time;
} sim_backend;

static double sim_now(void *ctx) { return ((sim_backend *)ctx)->vt; }

/* Let t seconds of virtual time pass (the source only dirties while not
 * paused; after the pause its advance does nothing). */
static int sim_pass(sim_backend *sb, double t)
{
    if (t <= 0)
        return MS_OK;
    int rc = sb->src->ops->advance(sb->src, t);
    if (rc)
        return ms_error_wrap(rc, "%s: advance %.6f s", sb->src->desc, t);
    sb->vt += t;
    return MS_OK;
}

static int sim_round_begin(void *ctx, uint32_t round)
{
    sim_backend *sb = ctx;
    (void)round;
    sb->r_pages = 0;
    sb->r_wire = 0;
    sb->r_time = 0;
    return MS_OK;
}

/* The fragments' pages take their wire time (or pipeline time); the
 * workload runs for that long, after their content was taken. */
static int sim_send_frags(void *ctx, uint32_t round, const uint64_t *bm, const uint32_t *frags,
                          uint32_t n, uint32_t fp)
{
    (void)round;
    sim_backend *sb = ctx;
    size_t wpf = fp / 64;
    uint64_t pages = 0, resent = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t w0 = (size_t)frags[i] * wpf, w1 = w0 + wpf < sb->nwords ? w0 + wpf : sb->nwords;
        for (size_t w = w0; w < w1; w++) {
            pages += (uint64_t)__builtin_popcountll(bm[w]);
            resent += (uint64_t)__builtin_popcountll(bm[w] & sb->ever[w]);
            sb->ever[w] |= bm[w];
        }
    }
    double ps = sb->src->page_size;
    double wire = (double)(pages - resent) * ps * sb->link.ratio +
                  (double)resent * ps * sb->link.resend_ratio + (double)pages * sb->link.frame_overhead;
    double t = wire / sb->link.bandwidth;
    if (sb->link.page_rate > 0 && (double)pages / sb->link.page_rate > t)
        t = (double)pages / sb->link.page_rate;
    sb->r_pages += pages;
    sb->r_wire += wire;
    sb->r_time += t;
    return sim_pass(sb, t);
}

/* The barrier: one round trip, during which the workload runs on. */
static int sim_round_end(void *ctx, uint32_t round, bool final, ms_round_done *d)
{
    (void)final;
    sim_backend *sb = ctx;
    double rtt = 2 * sb->link.latency_s;
    int rc = sim_pass(sb, rtt);
    if (rc)
        return rc;
    d->round = round;
    d->pages = sb->r_pages;
    d->raw_bytes = sb->r_pages * sb->src->page_size;
    d->wire_bytes = (uint64_t)llround(sb->r_wire);
    d->time_s = sb->r_time + rtt;
    d->link_rate = sb->link.bandwidth;
    return MS_OK;
}

static int check_link(ms_link_model *l)
{
    if (!(l->bandwidth > 0) || !isfinite(l->bandwidth))
        return ms_error(MS_ERR_INVAL, "link model: bandwidth must be > 0 bytes/s");
    if (l->latency_s < 0 || l->ratio < 0 || l->resend_ratio < 0 || l->page_rate < 0 ||
        l->frame_overhead < 0)
        return ms_error(MS_ERR_INVAL, "link model: negative latency, ratio, page rate or overhead");
    if (l->ratio == 0)
        l->ratio = 1;
    if (l->resend_ratio == 0)
        l->resend_ratio = l->ratio;
    if (l->frame_overhead == 0)
        l->frame_overhead = (double)MS_FRAME_HDR_SIZE / 256.0;
    return MS_OK;
}

int ms_simulate(ms_page_source *src, const char *policy, const ms_policy_config *pcfg,
                const ms_link_model *link, double max_s, ms_migration_report *rep)
{
    if (!src->ops->advance)
        return ms_error(MS_ERR_INVAL, "%s: the simulator needs a model or trace source "
                        "(this one cannot advance virtual time)", src->desc);
    sim_backend sb = {.src = src, .link = *link};
    int rc = check_link(&sb.link);
    if (rc)
        return rc;
    uint64_t cap = ms_source_max_pages(src);
    sb.nwords = ms_bitmap_words(cap > src->npages ? cap : src->npages);
    sb.ever = calloc(sb.nwords, 8);
    if (!sb.ever)
        return ms_error(MS_ERR_NOMEM, "simulator: out of memory for %llu pages",
                        (unsigned long long)src->npages);
    rep->simulated = true;
    snprintf(rep->chain, sizeof(rep->chain), "ratio %.3g/%.3g", sb.link.ratio, sb.link.resend_ratio);
    snprintf(rep->link, sizeof(rep->link), "sim %.1f Mbit/s, %.3g ms one way%s",
             sb.link.bandwidth * 8 / 1e6, sb.link.latency_s * 1000,
             sb.link.page_rate > 0 ? ", page-rate cap" : "");
    ms_engine_backend b = {.ctx = &sb, .now = sim_now, .round_begin = sim_round_begin,
                           .send_frags = sim_send_frags, .round_end = sim_round_end};
    ms_engine_loop_opts o = {.policy = policy, .pcfg = pcfg, .max_s = max_s > 0 ? max_s : 3600};
    rc = ms_engine_loop(src, &o, &b, rep);
    if (!rc)
        ms_source_resume(src);
    free(sb.ever);
    return rc;
}
