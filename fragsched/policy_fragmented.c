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
 * shrinking what is outstanding. */
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

typedef struct frag_policy {
    ms_policy_config cfg;
    uint32_t nfrag;
    frag_state *fs;
    cand *cands;
    uint64_t prev_outstanding;
    unsigned stall;
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
    double target_s = p->cfg.downtime_ms / 1000.0;
    out->est_stop_s = (double)outstanding / v->page_rate;

    uint64_t held = choose_deferrals(p, v, outstanding, out->defer);
    cold_first(p, v, out->defer, out->order);

    if (v->round >= 2 && (double)outstanding >= p->cfg.stall_ratio * (double)p->prev_outstanding)
        p->stall++;
    else
        p->stall = 0;
    p->prev_outstanding = outstanding;

    if (out->est_stop_s <= target_s) {
        /* Everything fits: send it live one last time, hottest last, then
         * pause. Only pages written between their send and the pause stay
         * for the downtime, and for the hottest that window is shortest.
         * (Holding hot fragments to the end instead leaves all of them.) */
        if (!p->cfg.hold_on_stop && held) {
            memset(out->defer, 0, v->nfragments);
            cold_first(p, v, out->defer, out->order);
            held = 0;
        }
        out->decision = held < outstanding ? MS_DECIDE_STOP_AFTER : MS_DECIDE_STOP_NOW;
        snprintf(out->reason, sizeof(out->reason),
                 "estimated stop-and-copy %.1f ms <= target %.0f ms (%llu pages, %llu held back)",
                 out->est_stop_s * 1000, p->cfg.downtime_ms, (unsigned long long)outstanding,
                 (unsigned long long)held);
    } else if (p->stall >= p->cfg.stall_rounds) {
        out->decision = MS_DECIDE_STOP_NOW;
        snprintf(out->reason, sizeof(out->reason),
                 "no progress: %llu pages outstanding, >= %.0f%% of last round's "
                 "(estimated stop-and-copy %.1f ms)",
                 (unsigned long long)outstanding, p->cfg.stall_ratio * 100, out->est_stop_s * 1000);
    } else if (v->round >= p->cfg.max_rounds) {
        out->decision = MS_DECIDE_STOP_NOW;
        snprintf(out->reason, sizeof(out->reason), "max %u rounds reached (estimated %.1f ms)",
                 p->cfg.max_rounds, out->est_stop_s * 1000);
    }
    return MS_OK;
}

const ms_policy_ops ms_policy_fragmented = {
    .name = "fragmented",
    .summary = "per-fragment dirty rates; hot fragments held back within the downtime budget",
    .create = frag_create,
    .plan = frag_plan,
    .sent = NULL,
    .destroy = frag_destroy,
    .sync_in_round = true,
};
