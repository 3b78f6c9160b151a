/* `fragmented`: fragmented iterative pre-copy (docs/fragsched.md).
 *
 * Per fragment we keep a smoothed per-page dirty intensity lambda (1/s),
 * estimated from the share of its pages found dirty over the interval the
 * bitmap covers, assuming each page is written as a Poisson process:
 *   share = 1 - exp(-lambda * interval).
 * A page sent now is wasted if it is written again before the pause; over a
 * horizon H that happens with probability 1 - exp(-lambda * H). Fragments
 * where that is likely are held back to stop-and-copy, hottest first, as
 * long as everything held back fits a share of the downtime target at the
 * measured page rate. The rest go out coldest first. We stop as soon as
 * all that is outstanding fits the downtime target, or when rounds stop
 * shrinking what is outstanding; then we pause at once, or, when that
 * round was an accident, after one more live round (decide_stop). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

/* A fragment found (nearly) all dirty only tells us lambda is at least
 * ln(size)/interval: we cannot tell warm from hot, so we hold it back and
 * measure it again over the next, shorter interval. */
#define SATURATED_SHARE 0.95

typedef struct frag_state {
    double lambda;   /* smoothed per-page dirty intensity, 1/s */
    bool measured;
    bool saturated;  /* the latest sample was saturated */
} frag_state;

typedef struct cand {
    uint32_t frag;
    double score;    /* predicted waste of sending now, 0..1 (saturated: 2) */
    double lambda;
    bool was_deferred;
} cand;

/* A bitmap read that found almost nothing written: at most
 * MS_QUIET_MEMORY_SHARE of memory, over at least QUIET_MIN_S, and (once it
 * is known) at most QUIET_RATE_SHARE of the page rate. A workload quiet for
 * QUIET_TIME_SHARE of the time its reads covered has quiet phases
 * (docs/fragsched.md, "Quiet phases"); a rare quiet read (redis between two
 * client bursts) does not make one. */
#define QUIET_RATE_SHARE 0.02
#define QUIET_MIN_S 0.02
#define QUIET_TIME_SHARE 0.1

typedef struct frag_policy {
    ms_policy_config cfg;
    uint64_t npages;
    uint32_t nfrag;
    frag_state *fs;
    cand *cands;
    uint64_t prev_outstanding;
    unsigned stall;
    uint64_t quiet_reads; /* bitmap reads that found a quiet phase */
    double quiet_s, read_s; /* time covered by quiet reads, by all reads */
    bool quiet_now;       /* the latest read long enough to tell was quiet */
} frag_policy;

static void frag_destroy(void *state)
{
    frag_policy *p = state;
    if (!p)
        return;
    free(p->fs);
    free(p->cands);
    free(p);
}

static int frag_create(const ms_policy_config *cfg, uint64_t npages, uint32_t page_size,
                       void **state)
{
    (void)page_size;
    frag_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return ms_error(MS_ERR_NOMEM, "fragmented policy: out of memory");
    p->cfg = *cfg;
    p->npages = npages;
    p->nfrag = (uint32_t)((npages + cfg->fragment_pages - 1) / cfg->fragment_pages);
    p->fs = calloc(p->nfrag, sizeof(*p->fs));
    p->cands = calloc(p->nfrag, sizeof(*p->cands));
    if (!p->fs || !p->cands) {
        uint32_t n = p->nfrag;
        frag_destroy(p);
        return ms_error(MS_ERR_NOMEM, "fragmented policy: out of memory for %u fragments", n);
    }
    *state = p;
    return MS_OK;
}

/* The share of a fragment's pages that were rewritten over the last
 * interval, counted among the pages where a rewrite matters: those sent in
 * the previous round (did resending help?), else those held back, else the
 * whole fragment. Counting among the sent pages only keeps a fragment with
 * a few very hot pages among cold ones from looking lukewarm. */
static double rewrite_share(const ms_round_view *v, uint32_t f, double *basis)
{
    if (v->frag_sent[f]) {
        *basis = v->frag_sent[f];
        return v->frag_redirty[f] / *basis;
    }
    if (v->frag_pending[f]) {
        *basis = v->frag_pending[f];
        double both = (double)v->frag_dirty[f] + v->frag_pending[f] - v->frag_union[f];
        return both / *basis;
    }
    *basis = v->frag_size[f];
    return v->frag_dirty[f] / *basis;
}

static void update_lambda(frag_policy *p, const ms_round_view *v)
{
    if (v->interval_s <= 0)
        return;
    double a = p->cfg.ewma_alpha;
    for (uint32_t f = 0; f < v->nfragments; f++) {
        frag_state *s = &p->fs[f];
        double basis, share = rewrite_share(v, f, &basis);
        s->saturated = share >= SATURATED_SHARE;
        if (share > 1 - 0.5 / basis)
            share = 1 - 0.5 / basis;
        double obs = -log1p(-share) / v->interval_s;
        s->lambda = s->measured ? a * obs + (1 - a) * s->lambda : obs;
        s->measured = true;
    }
}

static int by_score_desc(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->was_deferred != b->was_deferred)
        return a->was_deferred ? -1 : 1;
    if (a->lambda != b->lambda)
        return a->lambda > b->lambda ? -1 : 1;
    return a->frag < b->frag ? -1 : a->frag > b->frag;
}

static int by_lambda_asc(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    if (a->lambda != b->lambda)
        return a->lambda < b->lambda ? -1 : 1;
    return a->frag < b->frag ? -1 : a->frag > b->frag;
}

/* Choose the fragments to hold back; returns the pages they hold. */
static uint64_t choose_deferrals(frag_policy *p, const ms_round_view *v, uint64_t outstanding,
                                 uint8_t *defer)
{
    uint64_t budget = ms_defer_budget_pages(&p->cfg, v->page_rate);
    if (!budget)
        return 0;
    /* A page is wasted if written again before the pause, which is at least
     * this round away, and we aim to pause within about one downtime target
     * of the end: a page that is likely rewritten within either is hot. */
    double round_s = (double)outstanding / v->page_rate;
    double target_s = p->cfg.downtime_ms / 1000.0;
    double horizon = round_s > target_s ? round_s : target_s;
    size_t n = 0;
    for (uint32_t f = 0; f < v->nfragments; f++) {
        if (!v->frag_union[f])
            continue;
        const frag_state *s = &p->fs[f];
        double waste = s->saturated ? 2.0 : -expm1(-s->lambda * horizon);
        /* Hysteresis: a held-back fragment is released only when clearly
         * cooler, so it does not flap between rounds. */
        double threshold = v->frag_deferred[f] ? p->cfg.waste_threshold / 2 : p->cfg.waste_threshold;
        if (waste < threshold)
            continue;
        p->cands[n++] = (cand){f, waste, s->lambda, v->frag_deferred[f] != 0};
    }
    qsort(p->cands, n, sizeof(*p->cands), by_score_desc);
    if (ms_log_get_level() >= MS_LOG_DEBUG)
        for (size_t i = 0; i < n && i < 5; i++)
            ms_log(MS_LOG_DEBUG, "fragmented round %u: candidate %u score %.3f lambda %.3f/s "
                   "union %u (budget %llu, horizon %.3f s)", v->round, p->cands[i].frag,
                   p->cands[i].score, p->cands[i].lambda, v->frag_union[p->cands[i].frag],
                   (unsigned long long)budget, horizon);
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t f = p->cands[i].frag;
        if (used + v->frag_union[f] > budget)
            continue;
        used += v->frag_union[f];
        defer[f] = 1;
    }
    return used;
}

/* Coldest first: pages least likely to be written again go while the most
 * time is left; those most likely to be rewritten go last. */
static void cold_first(frag_policy *p, const ms_round_view *v, const uint8_t *defer,
                       uint32_t *order)
{
    size_t n = 0, k = 0;
    for (uint32_t f = 0; f < v->nfragments; f++)
        if (!defer[f])
            p->cands[n++] = (cand){f, 0, p->fs[f].saturated ? INFINITY : p->fs[f].lambda, false};
    qsort(p->cands, n, sizeof(*p->cands), by_lambda_asc);
    for (size_t i = 0; i < n; i++)
        order[k++] = p->cands[i].frag;
    for (uint32_t f = 0; f < v->nfragments; f++)
        if (defer[f])
            order[k++] = f;
}

static void frag_sample(void *state, uint64_t written, double interval_s, double page_rate)
{
    frag_policy *p = state;
    if (interval_s < QUIET_MIN_S)
        return;
    p->quiet_now = (double)written <= MS_QUIET_MEMORY_SHARE * (double)p->npages &&
                   !(page_rate > 0 && (double)written > QUIET_RATE_SHARE * page_rate * interval_s);
    p->quiet_reads += p->quiet_now;
    p->quiet_s += p->quiet_now ? interval_s : 0;
    p->read_s += interval_s;
}

enum stop_cause { GO_ON, STOP_FITS, STOP_STALLED, STOP_MAX_ROUNDS };

/* A stall on a workload that has quiet phases (stress-ng between its
 * write passes) is a phase, not a steady state: a round that falls into a
 * quiet phase sends what is outstanding for good, and the next bitmap then
 * fits the target. So keep going, as Xen's precopy would, but never for
 * more live rounds than Xen's five. A workload quiet for less than
 * QUIET_TIME_SHARE of the time (a steady sweep, hot-spot writes, redis)
 * pauses at the stall as before. */
static bool wait_for_quiet(const frag_policy *p, const ms_round_view *v)
{
    return p->quiet_s >= QUIET_TIME_SHARE * p->read_s && p->quiet_reads &&
           v->round < MS_XEN_SPP_MAX_ITERATIONS;
}

/* The same workload in a write pass right now: what is outstanding may fit
 * the target, but the last live round would be rewritten while it goes
 * out, so the pause would carry the pass. Wait for the quiet spell too. */
static bool busy_phase(const frag_policy *p, const ms_round_view *v)
{
    return wait_for_quiet(p, v) && !p->quiet_now;
}

/* Why the policy wants to stop now (GO_ON: it does not). STOP_FITS: all
 * that is outstanding fits the downtime target. */
static enum stop_cause stop_cause(frag_policy *p, const ms_round_view *v, uint64_t outstanding,
                                  double est_s)
{
    if (v->round >= 2 && (double)outstanding >= p->cfg.stall_ratio * (double)p->prev_outstanding)
        p->stall++;
    else
        p->stall = 0;
    p->prev_outstanding = outstanding;
    if (est_s <= p->cfg.downtime_ms / 1000.0) {
        if (!busy_phase(p, v))
            return STOP_FITS;
        ms_log(MS_LOG_DEBUG, "fragmented round %u: %llu pages outstanding fit the target, but the "
               "workload is in a write pass: going on", v->round, (unsigned long long)outstanding);
        return GO_ON;
    }
    if (p->stall >= p->cfg.stall_rounds) {
        if (!wait_for_quiet(p, v))
            return STOP_STALLED;
        ms_log(MS_LOG_DEBUG, "fragmented round %u: no progress (%llu pages outstanding), but the "
               "workload has quiet phases (%llu quiet reads): going on", v->round,
               (unsigned long long)outstanding, (unsigned long long)p->quiet_reads);
    }
    if (v->round >= p->cfg.max_rounds)
        return STOP_MAX_ROUNDS;
    return GO_ON;
}

/* Chance that a page of this fragment is written within t seconds. A
 * saturated fragment only bounds lambda from below: count it as rewritten
 * whatever its place in the round. */
static double written_within(const frag_state *s, double t)
{
    return s->saturated ? 1.0 : -expm1(-s->lambda * (t > 0 ? t : 0));
}

/* Pages the pause would carry if the fragments not held back (`defer`
 * NULL: none) went live once more and we paused right after: each page is
 * rewritten within that round's duration with the fragment's rate, held-
 * back pages are in it for certain. lambda was fitted to the share of
 * sent pages found rewritten by the next bitmap read, with the engine's
 * reads within a round and cold-first order, so "rewritten within T" here
 * means what it meant there: after the last round, this predicts its dirty
 * count again, scaled to the next round's length. */
static double final_after_one_more(const frag_policy *p, const ms_round_view *v,
                                   const uint8_t *defer, double *saturated)
{
    *saturated = 0;
    double live = 0;
    for (uint32_t f = 0; f < v->nfragments; f++)
        live += defer && defer[f] ? 0 : v->frag_union[f];
    double round_s = live / v->page_rate, pages = 0;
    for (uint32_t f = 0; f < v->nfragments; f++) {
        double held = defer && defer[f] ? v->frag_union[f] : 0;
        pages += held + ((double)v->frag_size[f] - held) * written_within(&p->fs[f], round_s);
        *saturated += p->fs[f].saturated ? v->frag_size[f] : 0;
    }
    return pages;
}

static void release_held(frag_policy *p, const ms_round_view *v, ms_plan *out)
{
    memset(out->defer, 0, v->nfragments);
    cold_first(p, v, out->defer, out->order);
}

/* The budget-aware final round. Pausing now puts everything outstanding
 * into the downtime: fine when that fits the target. When it does not (the
 * rounds stalled: the hot set is larger than the deferral budget; or the
 * round limit), there are two ways to end:
 *  - pause now: the final round is the outstanding set, exactly;
 *  - one more live round of everything, hottest last (precopy's way to
 *    end), then pause: the final round is what that round re-dirties.
 * In a steady stall both leave about the same and the extra round only
 * costs time and bytes, so we pause now unless this stall is an accident
 * (see below). Held-back fragments are released for the extra round
 * (unless hold_on_stop): sent last, a hot page is in the final round only
 * if written again in the time left; held back, it is in it for certain. */
static void decide_stop(frag_policy *p, const ms_round_view *v, enum stop_cause cause,
                        uint64_t outstanding, uint64_t before, uint64_t held, ms_plan *out)
{
    bool release = !p->cfg.hold_on_stop && held;
    double est_ms = out->est_stop_s * 1000;
    if (cause == STOP_FITS) {
        if (release)
            release_held(p, v, out);
        held = release ? 0 : held;
        out->decision = held == outstanding ? MS_DECIDE_STOP_NOW : MS_DECIDE_STOP_AFTER;
        snprintf(out->reason, sizeof(out->reason),
                 "estimated stop-and-copy %.1f ms <= target %.0f ms (%llu pages, %llu held back)",
                 est_ms, p->cfg.downtime_ms, (unsigned long long)outstanding,
                 (unsigned long long)held);
        return;
    }
    /* One more round pays when the previous round left clearly less than
     * what is outstanding now (this bitmap covers an unusual round: a slow
     * one, a burst of writes), unless the saturated fragments alone would
     * fill the final round again (memory rewritten faster than it can be
     * sent: both ways leave all of it) or the rates predict that a round
     * leaves clearly more. */
    double r = p->cfg.stall_ratio, o = (double)outstanding, sat;
    double model = final_after_one_more(p, v, release ? NULL : out->defer, &sat);
    bool one_more = before && (double)before < r * o && sat < r * o && model < o / r;
    out->decision = one_more ? MS_DECIDE_STOP_AFTER : MS_DECIDE_STOP_NOW;
    if (one_more && release)
        release_held(p, v, out);
    snprintf(out->reason, sizeof(out->reason),
             "%s: %llu pages outstanding (est. %.0f ms), last round left %llu, rates say "
             "~%.0f: %s", cause == STOP_STALLED ? "no progress" : "max rounds",
             (unsigned long long)outstanding, est_ms, (unsigned long long)before, model,
             one_more ? "sent live once more" : "pause now");
}

static int frag_plan(void *state, const ms_round_view *v, ms_plan *out)
{
    frag_policy *p = state;
    out->decision = MS_DECIDE_CONTINUE;
    if (v->round == 0 || v->page_rate <= 0)
        return MS_OK; /* first full pass in address order: nothing known yet */
    update_lambda(p, v);

    uint64_t outstanding = 0;
    for (uint32_t f = 0; f < v->nfragments; f++)
        outstanding += v->frag_union[f];
    out->est_stop_s = (double)outstanding / v->page_rate;

    uint64_t held = choose_deferrals(p, v, outstanding, out->defer);
    cold_first(p, v, out->defer, out->order);
    uint64_t before = v->round >= 2 ? p->prev_outstanding : 0;
    enum stop_cause cause = stop_cause(p, v, outstanding, out->est_stop_s);
    if (cause != GO_ON)
        decide_stop(p, v, cause, outstanding, before, held, out);
    return MS_OK;
}

const ms_policy_ops ms_policy_fragmented = {
    .name = "fragmented",
    .summary = "per-fragment dirty rates; hot fragments held back within the downtime budget",
    .create = frag_create,
    .plan = frag_plan,
    .sent = NULL,
    .destroy = frag_destroy,
    .sample = frag_sample,
    .sync_in_round = true,
};
