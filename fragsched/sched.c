/* The scheduler: one policy plus the bitmaps it works on.
 *
 * Policies only say which fragments to hold back and in which order to send
 * the rest; every bit moves here, word by word, so that no policy (however
 * wrong) can drop a dirty page: a page leaves the pending set only by being
 * put into a bitmap that the caller sends. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

struct ms_sched {
    const ms_policy_ops *ops;
    void *state;
    ms_policy_config cfg;
    uint64_t npages;
    uint32_t page_size;
    uint32_t fp;        /* pages per fragment (multiple of 64) */
    uint32_t wpf;       /* words per fragment */
    uint32_t nfrag;
    size_t nwords;
    uint64_t *pending;
    uint64_t *last_sent;
    uint64_t pending_count;
    uint32_t *frag_size, *frag_dirty, *frag_pending, *frag_union, *frag_sent, *frag_redirty;
    uint8_t *frag_deferred, *defer;
    uint32_t *order;
    uint8_t *seen;
    ms_round_view view;
    char reason[128];
    /* measurements */
    double acc_pages, acc_time; /* decayed sums for the page rate */
    double page_rate, link_rate;
    uint64_t total_raw, total_wire, total_pages;
};

static const ms_policy_ops *const policies[] = {
    &ms_policy_precopy, &ms_policy_fragmented, &ms_policy_downtime, NULL,
};

const ms_policy_ops *ms_policy_by_name(const char *name)
{
    for (size_t i = 0; name && policies[i]; i++)
        if (!strcmp(policies[i]->name, name))
            return policies[i];
    return NULL;
}

const char *ms_policy_names(void) { return "precopy|fragmented|downtime"; }

const char *ms_decision_name(int d)
{
    switch (d) {
    case MS_DECIDE_ABORT: return "abort";
    case MS_DECIDE_CONTINUE: return "continue";
    case MS_DECIDE_STOP_AFTER: return "stop-after-send";
    case MS_DECIDE_STOP_NOW: return "stop-now";
    default: return "?";
    }
}

void ms_policy_config_default(ms_policy_config *c)
{
    memset(c, 0, sizeof(*c));
    ms_policy_config_fill(c);
}

void ms_policy_config_fill(ms_policy_config *c)
{
    if (!c->fragment_pages) c->fragment_pages = 512;
    if (c->downtime_ms <= 0) c->downtime_ms = 300;
    if (c->defer_share <= 0) c->defer_share = 0.5;
    if (c->waste_threshold <= 0) c->waste_threshold = 0.5;
    if (c->stall_ratio <= 0) c->stall_ratio = 0.9;
    if (!c->stall_rounds) c->stall_rounds = 1;
    if (!c->max_rounds) c->max_rounds = 30;
    if (c->ewma_alpha <= 0) c->ewma_alpha = 0.5;
}

static int check_config(const ms_policy_config *c)
{
    if (c->fragment_pages % 64)
        return ms_error(MS_ERR_INVAL, "fragment size %u pages is not a multiple of 64",
                        c->fragment_pages);
    if (c->fragment_pages > (1u << 24))
        return ms_error(MS_ERR_INVAL, "fragment size %u pages is above 16M pages", c->fragment_pages);
    if (c->defer_share > 1)
        return ms_error(MS_ERR_INVAL, "defer share %.3f is above 1", c->defer_share);
    if (c->waste_threshold > 1)
        return ms_error(MS_ERR_INVAL, "waste threshold %.3f is above 1", c->waste_threshold);
    if (c->stall_ratio > 1)
        return ms_error(MS_ERR_INVAL, "stall ratio %.3f is above 1", c->stall_ratio);
    if (c->ewma_alpha > 1)
        return ms_error(MS_ERR_INVAL, "smoothing weight %.3f is above 1", c->ewma_alpha);
    if (!isfinite(c->downtime_ms) || c->downtime_ms > 3.6e6)
        return ms_error(MS_ERR_INVAL, "downtime target %.1f ms is out of range", c->downtime_ms);
    return MS_OK;
}

void ms_sched_free(ms_sched *s)
{
    if (!s)
        return;
    if (s->ops && s->state)
        s->ops->destroy(s->state);
    free(s->pending);
    free(s->last_sent);
    free(s->frag_size);
    free(s->frag_dirty);
    free(s->frag_pending);
    free(s->frag_union);
    free(s->frag_sent);
    free(s->frag_redirty);
    free(s->frag_deferred);
    free(s->defer);
    free(s->order);
    free(s->seen);
    free(s);
}

int ms_sched_new(const char *policy, const ms_policy_config *cfg, uint64_t npages,
                 uint32_t page_size, ms_sched **out)
{
    const ms_policy_ops *ops = ms_policy_by_name(policy);
    if (!ops)
        return ms_error(MS_ERR_INVAL, "unknown policy '%s' (known: %s)", policy ? policy : "",
                        ms_policy_names());
    if (!npages)
        return ms_error(MS_ERR_INVAL, "page source has no pages");
    if (page_size < 512 || (page_size & (page_size - 1)))
        return ms_error(MS_ERR_INVAL, "page size %u is not a power of two >= 512", page_size);
    ms_sched *s = calloc(1, sizeof(*s));
    if (!s)
        return ms_error(MS_ERR_NOMEM, "scheduler: out of memory");
    if (cfg)
        s->cfg = *cfg;
    ms_policy_config_fill(&s->cfg);
    int rc = check_config(&s->cfg);
    if (rc)
        goto fail;
    s->npages = npages;
    s->page_size = page_size;
    s->fp = s->cfg.fragment_pages;
    s->wpf = s->fp / 64;
    uint64_t nfrag = (npages + s->fp - 1) / s->fp;
    if (nfrag > UINT32_MAX) {
        rc = ms_error(MS_ERR_INVAL, "%llu pages make too many fragments", (unsigned long long)npages);
        goto fail;
    }
    s->nfrag = (uint32_t)nfrag;
    s->nwords = ms_bitmap_words(npages);
    s->pending = calloc(s->nwords, 8);
    s->last_sent = calloc(s->nwords, 8);
    s->frag_size = calloc(s->nfrag, 4);
    s->frag_dirty = calloc(s->nfrag, 4);
    s->frag_pending = calloc(s->nfrag, 4);
    s->frag_union = calloc(s->nfrag, 4);
    s->frag_sent = calloc(s->nfrag, 4);
    s->frag_redirty = calloc(s->nfrag, 4);
    s->frag_deferred = calloc(s->nfrag, 1);
    s->defer = calloc(s->nfrag, 1);
    s->order = calloc(s->nfrag, 4);
    s->seen = calloc(s->nfrag, 1);
    if (!s->pending || !s->last_sent || !s->frag_size || !s->frag_dirty || !s->frag_pending ||
        !s->frag_union || !s->frag_sent || !s->frag_redirty || !s->frag_deferred || !s->defer ||
        !s->order || !s->seen) {
        rc = ms_error(MS_ERR_NOMEM, "scheduler: out of memory for %llu pages",
                      (unsigned long long)npages);
        goto fail;
    }
    for (uint32_t f = 0; f < s->nfrag; f++) {
        uint64_t first = (uint64_t)f * s->fp;
        s->frag_size[f] = (uint32_t)(npages - first < s->fp ? npages - first : s->fp);
    }
    s->ops = ops;
    rc = ops->create(&s->cfg, npages, page_size, &s->state);
    if (rc)
        goto fail;
    *out = s;
    return MS_OK;
fail:
    ms_sched_free(s);
    return rc;
}

/* Bits past npages in the last word must stay clear: a source that sets
 * them would otherwise make us "send" pages that do not exist. */
static void mask_tail(const ms_sched *s, uint64_t *bm)
{
    unsigned rem = (unsigned)(s->npages % 64);
    if (rem)
        bm[s->nwords - 1] &= (1ull << rem) - 1;
}

static size_t frag_words(const ms_sched *s, uint32_t f, size_t *first)
{
    *first = (size_t)f * s->wpf;
    size_t end = *first + s->wpf;
    if (end > s->nwords)
        end = s->nwords;
    return end - *first;
}

static void gather_stats(ms_sched *s, const uint64_t *bm)
{
    for (uint32_t f = 0; f < s->nfrag; f++) {
        size_t w0, nw = frag_words(s, f, &w0);
        uint32_t d = 0, p = 0, u = 0, r = 0;
        for (size_t w = w0; w < w0 + nw; w++) {
            d += (uint32_t)__builtin_popcountll(bm[w]);
            p += (uint32_t)__builtin_popcountll(s->pending[w]);
            u += (uint32_t)__builtin_popcountll(bm[w] | s->pending[w]);
            r += (uint32_t)__builtin_popcountll(bm[w] & s->last_sent[w]);
        }
        s->frag_dirty[f] = d;
        s->frag_pending[f] = p;
        s->frag_union[f] = u;
        s->frag_redirty[f] = r;
    }
}

static int check_order(ms_sched *s)
{
    memset(s->seen, 0, s->nfrag);
    for (uint32_t i = 0; i < s->nfrag; i++) {
        uint32_t f = s->order[i];
        if (f >= s->nfrag || s->seen[f])
            return ms_error(MS_ERR_INVAL, "policy %s: send order is not a permutation "
                            "(entry %u = %u of %u fragments)", s->ops->name, i, f, s->nfrag);
        s->seen[f] = 1;
    }
    return MS_OK;
}

/* Move bits between the send bitmap and the pending set, fragment by
 * fragment, and record what will be sent (for next round's redirty). */
static void apply_plan(ms_sched *s, uint64_t *bm, bool hold_all, ms_sched_round *out)
{
    uint64_t send = 0, pend = 0;
    uint32_t deferred = 0;
    for (uint32_t f = 0; f < s->nfrag; f++) {
        size_t w0, nw = frag_words(s, f, &w0);
        bool hold = hold_all || s->defer[f];
        uint32_t sent = 0;
        for (size_t w = w0; w < w0 + nw; w++) {
            if (hold) {
                s->pending[w] |= bm[w];
                bm[w] = 0;
            } else {
                bm[w] |= s->pending[w];
                s->pending[w] = 0;
            }
            s->last_sent[w] = bm[w];
            sent += (uint32_t)__builtin_popcountll(bm[w]);
            pend += (uint64_t)__builtin_popcountll(s->pending[w]);
        }
        s->frag_sent[f] = sent;
        s->frag_deferred[f] = s->defer[f];
        deferred += s->defer[f] ? 1 : 0;
        send += sent;
    }
    s->pending_count = pend;
    out->send_pages = send;
    out->pending_pages = pend;
    out->deferred_fragments = deferred;
}

int ms_sched_plan(ms_sched *s, uint32_t round, uint64_t *bm, double interval_s,
                  double elapsed_s, ms_sched_round *out)
{
    memset(out, 0, sizeof(*out));
    mask_tail(s, bm);
    gather_stats(s, bm);

    ms_round_view *v = &s->view;
    memset(v, 0, sizeof(*v));
    v->round = round;
    v->npages = s->npages;
    v->page_size = s->page_size;
    v->fragment_pages = s->fp;
    v->nfragments = s->nfrag;
    v->frag_size = s->frag_size;
    v->frag_dirty = s->frag_dirty;
    v->frag_pending = s->frag_pending;
    v->frag_union = s->frag_union;
    v->frag_sent = s->frag_sent;
    v->frag_redirty = s->frag_redirty;
    v->frag_deferred = s->frag_deferred;
    v->dirty_count = ms_bitmap_count(bm, s->npages);
    v->pending_count = s->pending_count;
    v->interval_s = interval_s;
    v->elapsed_s = elapsed_s;
    v->page_rate = s->page_rate;
    v->link_rate = s->link_rate;
    v->comp_ratio = s->total_raw && s->total_wire ? (double)s->total_wire / (double)s->total_raw : 1.0;
    v->total_pages_sent = s->total_pages;

    memset(s->defer, 0, s->nfrag);
    for (uint32_t f = 0; f < s->nfrag; f++)
        s->order[f] = f;
    ms_plan plan = {.decision = MS_DECIDE_CONTINUE, .defer = s->defer, .order = s->order,
                    .est_stop_s = -1};
    int rc = s->ops->plan(s->state, v, &plan);
    if (rc < 0)
        return rc;
    if (plan.decision == MS_DECIDE_ABORT)
        return ms_error(MS_ERR_ABORTED, "policy %s aborted the migration at round %u%s%s",
                        s->ops->name, round, plan.reason[0] ? ": " : "", plan.reason);
    if (plan.decision < MS_DECIDE_CONTINUE || plan.decision > MS_DECIDE_STOP_NOW)
        return ms_error(MS_ERR_INVAL, "policy %s returned unknown decision %d", s->ops->name,
                        plan.decision);
    rc = check_order(s);
    if (rc)
        return rc;
    apply_plan(s, bm, plan.decision == MS_DECIDE_STOP_NOW, out);
    out->decision = plan.decision;
    out->dirty_pages = v->dirty_count;
    out->order = s->order;
    out->frag_send = s->frag_sent;
    out->nfragments = s->nfrag;
    out->est_stop_s = plan.est_stop_s;
    plan.reason[sizeof(plan.reason) - 1] = 0;
    memcpy(out->reason, plan.reason, sizeof(out->reason));
    memcpy(s->reason, plan.reason, sizeof(s->reason));
    return MS_OK;
}

/* Decayed sums weight each round by its size: a 3-page round's fixed costs
 * (barrier round trip, bitmap scan) should not dominate the rate that a
 * 100000-page stop-and-copy is predicted with. */
static void update_rates(ms_sched *s, const ms_round_done *d)
{
    double a = s->cfg.ewma_alpha;
    if (d->pages && d->time_s > 0) {
        s->acc_pages = s->acc_pages * (1 - a) + (double)d->pages;
        s->acc_time = s->acc_time * (1 - a) + d->time_s;
        s->page_rate = s->acc_pages / s->acc_time;
    }
    if (d->link_rate > 0)
        s->link_rate = d->link_rate;
    else if (d->wire_bytes && d->time_s > 0)
        s->link_rate = s->link_rate > 0 ? a * ((double)d->wire_bytes / d->time_s) + (1 - a) * s->link_rate
                                        : (double)d->wire_bytes / d->time_s;
    if (d->wire_bytes) {
        s->total_wire += d->wire_bytes;
        s->total_raw += d->raw_bytes ? d->raw_bytes : d->pages * s->page_size;
    }
    s->total_pages += d->pages;
}

int ms_sched_sent(ms_sched *s, const ms_round_done *d)
{
    update_rates(s, d);
    s->view.page_rate = s->page_rate;
    s->view.link_rate = s->link_rate;
    s->view.prev_pages = d->pages;
    s->view.prev_time_s = d->time_s;
    char why[128] = "";
    int rc = s->ops->sent ? s->ops->sent(s->state, &s->view, d, why) : MS_DECIDE_CONTINUE;
    why[sizeof(why) - 1] = 0;
    if (rc > MS_DECIDE_CONTINUE) {
        if (!why[0])
            snprintf(why, sizeof(why), "policy %s stopped after round %u", s->ops->name, d->round);
        memcpy(s->reason, why, sizeof(s->reason));
    }
    if (rc == MS_DECIDE_ABORT)
        return ms_error(MS_ERR_ABORTED, "policy %s aborted the migration after round %u",
                        s->ops->name, d->round);
    if (rc < 0)
        return rc;
    return rc == MS_DECIDE_CONTINUE ? MS_DECIDE_CONTINUE : MS_DECIDE_STOP_AFTER;
}

void ms_sched_note_round(ms_sched *s, const ms_round_done *d) { update_rates(s, d); }

void ms_sched_sample(ms_sched *s, uint64_t written, double interval_s)
{
    if (s->ops->sample && interval_s > 0)
        s->ops->sample(s->state, written, interval_s, s->page_rate);
}

uint64_t ms_sched_final(ms_sched *s, uint64_t *bm)
{
    mask_tail(s, bm);
    uint64_t n = 0;
    for (size_t w = 0; w < s->nwords; w++) {
        bm[w] |= s->pending[w];
        s->pending[w] = 0;
        n += (uint64_t)__builtin_popcountll(bm[w]);
    }
    s->pending_count = 0;
    memset(s->frag_deferred, 0, s->nfrag);
    return n;
}

uint32_t ms_sched_fragment_pages(const ms_sched *s) { return s->fp; }
uint32_t ms_sched_nfragments(const ms_sched *s) { return s->nfrag; }
const uint64_t *ms_sched_pending(const ms_sched *s) { return s->pending; }
uint64_t ms_sched_pending_count(const ms_sched *s) { return s->pending_count; }
const char *ms_sched_policy_name(const ms_sched *s) { return s->ops->name; }
const char *ms_sched_reason(const ms_sched *s) { return s->reason; }
bool ms_sched_syncs_in_round(const ms_sched *s) { return s->ops->sync_in_round; }
double ms_sched_page_rate(const ms_sched *s) { return s->page_rate; }
double ms_sched_comp_ratio(const ms_sched *s)
{
    return s->total_raw && s->total_wire ? (double)s->total_wire / (double)s->total_raw : 1.0;
}

uint64_t ms_sched_defer_budget(const ms_sched *s)
{
    if (s->ops != &ms_policy_fragmented)
        return 0;
    return ms_defer_budget_pages(&s->cfg, s->page_rate);
}

uint64_t ms_defer_budget_pages(const ms_policy_config *c, double page_rate)
{
    if (page_rate <= 0)
        return 0;
    return (uint64_t)(c->defer_share * c->downtime_ms / 1000.0 * page_rate);
}
