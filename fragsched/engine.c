/* The migration engine: rounds, pause, final round, verification.
 *
 * ms_engine_loop is shared by the live engine and the simulator; they
 * differ only in the backend that moves a round (real pages through the
 * stream pipeline, or counts through a link model in virtual time). */
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

int ms_report_add_round(ms_migration_report *r, const ms_round_record *rec)
{
    if (r->nrounds == r->rounds_cap) {
        size_t cap = r->rounds_cap ? r->rounds_cap * 2 : 16;
        ms_round_record *n = realloc(r->rounds, cap * sizeof(*n));
        if (!n)
            return ms_error(MS_ERR_NOMEM, "report: out of memory for round %u", rec->round);
        r->rounds = n;
        r->rounds_cap = cap;
    }
    r->rounds[r->nrounds++] = *rec;
    return MS_OK;
}

static void progress_line(const ms_round_record *rec)
{
    fprintf(stderr,
            "  round %-3u%s dirty %-9llu sent %-9llu pages %9.2f MiB wire %8.1f ms"
            "  held back %u frags / %llu pages%s%s\n",
            rec->round, rec->final ? " (final)" : "        ", (unsigned long long)rec->dirty_pages,
            (unsigned long long)rec->sent_pages, rec->wire_bytes / 1048576.0, rec->time_s * 1000,
            rec->deferred_fragments, (unsigned long long)rec->pending_pages,
            rec->decision > MS_DECIDE_CONTINUE && !rec->final ? "  -> " : "",
            rec->decision > MS_DECIDE_CONTINUE && !rec->final ? ms_decision_name(rec->decision) : "");
}

static void fill_done(ms_round_record *rec, const ms_round_done *d)
{
    rec->sent_pages = d->pages;
    rec->raw_bytes = d->raw_bytes;
    rec->wire_bytes = d->wire_bytes;
    rec->time_s = d->time_s;
}

/* Pages numbered since the last read have never been sent: whatever the
 * source says about them, they are dirty (a source that forgets to report
 * new memory must not cost a page). */
static void mark_new_pages(uint64_t *bm, uint64_t from, uint64_t to)
{
    for (; from < to && from % 64; from++)
        ms_bit_set(bm, from);
    for (; from + 64 <= to; from += 64)
        bm[from / 64] = ~0ull;
    for (; from < to; from++)
        ms_bit_set(bm, from);
}

static int read_dirty(ms_page_source *src, uint64_t *bm, size_t nwords, uint64_t cap,
                      uint64_t *known, const ms_engine_loop_opts *o, double t)
{
    memset(bm, 0, nwords * 8);
    int rc = ms_source_dirty(src, bm);
    if (rc)
        return ms_error_wrap(rc, "%s: dirty bitmap", src->desc);
    if (src->npages > cap)
        return ms_error(MS_ERR_LIMIT, "%s: grew to %llu pages, above its stated bound of %llu",
                        src->desc, (unsigned long long)src->npages, (unsigned long long)cap);
    if (src->npages > *known) {
        mark_new_pages(bm, *known, src->npages);
        *known = src->npages;
    }
    if (o->trace)
        return ms_engine_trace_interval(o->trace, t, bm, *known);
    return MS_OK;
}

typedef struct loop_state {
    ms_sched *s;
    uint64_t *bm;    /* this round: pages to send */
    uint64_t *next;  /* next round's dirty set, filled while this one goes out */
    uint64_t *tmp;   /* one raw bitmap read */
    size_t nwords;
    uint64_t cap;    /* bitmap bits: the most pages the source may number */
    uint64_t known;  /* pages the source numbered at the last read */
    uint32_t fp, wpf;
    bool sync;       /* the policy wants bitmap reads within a round */
    double t0, t_read, interval;
    double t_sample; /* time of the previous bitmap read, for ms_sched_sample */
    uint32_t round;
    uint32_t syncs;
} loop_state;

/* Reads within a round: pages not read yet in this round lose their dirty
 * bit (they will be read later with the new content), so a page written
 * before its turn is not sent twice. Worth it once a round moves at least
 * SYNC_MIN_PAGES; at most SYNC_CHUNKS reads per round. */
#define SYNC_MIN_PAGES 4096u
#define SYNC_CHUNKS 8u

static void or_into(uint64_t *dst, const uint64_t *src, size_t nwords)
{
    for (size_t w = 0; w < nwords; w++)
        dst[w] |= src[w];
}

/* One live bitmap read into ls->tmp; the policy also learns how many
 * pages were written over how long, its finest view of the workload's
 * phases (a round is too coarse to see stress-ng's quiet verify passes). */
static int read_live(ms_page_source *src, const ms_engine_loop_opts *o, loop_state *ls, double now)
{
    int rc = read_dirty(src, ls->tmp, ls->nwords, ls->cap, &ls->known, o, now - ls->t0);
    if (rc)
        return rc;
    ms_sched_sample(ls->s, ms_bitmap_count(ls->tmp, ls->known), now - ls->t_sample);
    ls->t_sample = now;
    return MS_OK;
}

static int sync_within_round(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                             loop_state *ls, const uint32_t *rest, uint32_t nrest)
{
    int rc = read_live(src, o, ls, b->now(b->ctx));
    if (rc)
        return rc;
    for (uint32_t i = 0; i < nrest; i++) {
        size_t w0 = (size_t)rest[i] * ls->wpf, w1 = w0 + ls->wpf < ls->nwords ? w0 + ls->wpf : ls->nwords;
        for (size_t w = w0; w < w1; w++)
            ls->tmp[w] &= ~ls->bm[w];
    }
    or_into(ls->next, ls->tmp, ls->nwords);
    ls->syncs++;
    return MS_OK;
}

static int send_round(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                      loop_state *ls, const uint32_t *order, const uint32_t *frag_pages,
                      uint32_t nfrag, uint64_t pages, bool final, ms_round_done *d)
{
    uint64_t chunk = UINT64_MAX;
    if (!final && ls->sync && frag_pages && pages >= 2 * SYNC_MIN_PAGES)
        chunk = pages / SYNC_CHUNKS > SYNC_MIN_PAGES ? pages / SYNC_CHUNKS : SYNC_MIN_PAGES;
    int rc = b->round_begin(b->ctx, ls->round);
    uint32_t i0 = 0;
    uint64_t acc = 0;
    for (uint32_t i = 0; i + 1 < nfrag && !rc && chunk != UINT64_MAX; i++) {
        acc += frag_pages[order[i]];
        if (acc < chunk)
            continue;
        rc = b->send_frags(b->ctx, ls->round, ls->bm, order + i0, i + 1 - i0, ls->fp);
        if (!rc)
            rc = sync_within_round(src, o, b, ls, order + i + 1, nfrag - i - 1);
        i0 = i + 1;
        acc = 0;
    }
    if (!rc)
        rc = b->send_frags(b->ctx, ls->round, ls->bm, order + i0, nfrag - i0, ls->fp);
    if (!rc)
        rc = b->round_end(b->ctx, ls->round, final, d);
    return rc;
}

/* Live rounds until the policy stops. */
static int live_rounds(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                       loop_state *ls, ms_migration_report *rep)
{
    for (;;) {
        double now = b->now(b->ctx);
        ms_sched_round pr;
        int rc = ms_sched_plan(ls->s, ls->round, ls->bm, ls->interval, now - ls->t0, &pr);
        if (rc)
            return rc;
        ms_round_record rec = {.round = ls->round, .dirty_pages = pr.dirty_pages,
                               .pending_pages = pr.pending_pages,
                               .deferred_fragments = pr.deferred_fragments,
                               .t_start_s = now - ls->t0, .est_stop_s = pr.est_stop_s,
                               .decision = pr.decision};
        if (pr.deferred_fragments > rep->max_deferred_fragments)
            rep->max_deferred_fragments = pr.deferred_fragments;
        ms_round_done d = {.round = ls->round};
        memset(ls->next, 0, ls->nwords * 8);
        if (pr.decision != MS_DECIDE_STOP_NOW) {
            rc = send_round(src, o, b, ls, pr.order, pr.frag_send, pr.nfragments, pr.send_pages,
                            false, &d);
            if (rc)
                return rc;
            fill_done(&rec, &d);
            rep->live_rounds++;
        }
        int dec = pr.decision;
        if (dec == MS_DECIDE_CONTINUE) {
            dec = ms_sched_sent(ls->s, &d);
            if (dec < 0)
                return dec;
            rec.decision = dec;
        } else {
            ms_sched_note_round(ls->s, &d);
        }
        if ((rc = ms_report_add_round(rep, &rec)))
            return rc;
        if (o->progress)
            progress_line(&rec);
        if (dec != MS_DECIDE_CONTINUE) {
            snprintf(rep->stop_reason, sizeof(rep->stop_reason), "%s", ms_sched_reason(ls->s));
            return MS_OK;
        }
        if (o->max_s > 0 && b->now(b->ctx) - ls->t0 > o->max_s)
            return ms_error(MS_ERR_LIMIT, "policy %s still iterating after %.0f s (round %u)",
                            o->policy, o->max_s, ls->round);
        double t_now = b->now(b->ctx);
        ls->interval = t_now - ls->t_read; /* what the bitmap covers */
        ls->t_read = t_now;
        if ((rc = read_live(src, o, ls, ls->t_read)))
            return rc;
        or_into(ls->next, ls->tmp, ls->nwords);
        uint64_t *t = ls->bm;
        ls->bm = ls->next;
        ls->next = t;
        ls->round++;
    }
}

static int final_round(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                       loop_state *ls, ms_migration_report *rep, double *t_pause)
{
    *t_pause = b->now(b->ctx);
    int rc = ms_source_pause(src);
    if (rc)
        return ms_error_wrap(rc, "%s: pause", src->desc);
    /* The live rounds may have left dirty bits from reads within the last
     * round in `next`: they belong to this round too. */
    if ((rc = read_dirty(src, ls->bm, ls->nwords, ls->cap, &ls->known, o, *t_pause - ls->t0)))
        return rc;
    or_into(ls->bm, ls->next, ls->nwords);
    uint64_t dirty = ms_bitmap_count(ls->bm, ls->cap);
    uint64_t pending = ms_sched_pending_count(ls->s);
    rep->deferred_pages_final = pending;
    uint64_t n = ms_sched_final(ls->s, ls->bm);
    ls->round++;
    ms_round_record rec = {.round = ls->round, .final = true, .dirty_pages = dirty,
                           .pending_pages = pending, .t_start_s = b->now(b->ctx) - ls->t0,
                           .est_stop_s = -1, .decision = MS_DECIDE_STOP_NOW};
    ms_round_done d = {.round = ls->round};
    /* Address order: nothing is written any more, order cannot matter. */
    uint32_t nfrag = ms_sched_nfragments(ls->s);
    uint32_t *order = malloc((size_t)nfrag * sizeof(*order));
    if (!order)
        return ms_error(MS_ERR_NOMEM, "final round: out of memory");
    for (uint32_t f = 0; f < nfrag; f++)
        order[f] = f;
    rc = send_round(src, o, b, ls, order, NULL, nfrag, n, true, &d);
    free(order);
    if (rc)
        return rc;
    if (b->finish && (rc = b->finish(b->ctx)))
        return rc;
    fill_done(&rec, &d);
    rec.time_s = b->now(b->ctx) - *t_pause;
    rep->final_pages = n;
    if (o->progress)
        progress_line(&rec);
    return ms_report_add_round(rep, &rec);
}

static void summarise(ms_migration_report *rep)
{
    rep->pages_sent = rep->raw_bytes = rep->wire_bytes = 0;
    for (size_t i = 0; i < rep->nrounds; i++) {
        rep->pages_sent += rep->rounds[i].sent_pages;
        rep->raw_bytes += rep->rounds[i].raw_bytes;
        rep->wire_bytes += rep->rounds[i].wire_bytes;
    }
}

int ms_engine_loop(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                   ms_migration_report *rep)
{
    loop_state ls = {0};
    double cpu0 = ms_process_cpu_s();
    ls.cap = ms_source_max_pages(src);
    if (ls.cap < src->npages)
        ls.cap = src->npages;
    int rc = ms_sched_new(o->policy, o->pcfg, ls.cap, src->page_size, &ls.s);
    if (rc)
        return rc;
    ls.nwords = ms_bitmap_words(ls.cap);
    ls.fp = ms_sched_fragment_pages(ls.s);
    ls.wpf = ls.fp / 64;
    ls.sync = ms_sched_syncs_in_round(ls.s);
    ls.bm = calloc(ls.nwords, 8);
    ls.next = calloc(ls.nwords, 8);
    ls.tmp = calloc(ls.nwords, 8);
    if (!ls.bm || !ls.next || !ls.tmp) {
        rc = ms_error(MS_ERR_NOMEM, "engine: out of memory for %llu-page bitmaps",
                      (unsigned long long)ls.cap);
        goto out;
    }
    snprintf(rep->policy, sizeof(rep->policy), "%s", ms_sched_policy_name(ls.s));
    rep->page_size = src->page_size;
    rep->fragment_pages = ls.fp;
    ms_policy_config pc = o->pcfg ? *o->pcfg : (ms_policy_config){0};
    ms_policy_config_fill(&pc);
    rep->downtime_target_ms = pc.downtime_ms;

    if ((rc = ms_source_start(src))) {
        ms_error_wrap(rc, "%s: start dirty tracking", src->desc);
        goto out;
    }
    ls.t0 = ls.t_read = ls.t_sample = b->now(b->ctx);
    mark_new_pages(ls.bm, 0, src->npages);
    ls.known = src->npages;
    rc = live_rounds(src, o, b, &ls, rep);
    if (rc)
        goto out;
    double t_pause = 0;
    rc = final_round(src, o, b, &ls, rep, &t_pause);
    if (rc)
        goto out;
    double t_done = b->now(b->ctx);
    rep->total_s = t_done - ls.t0;
    rep->downtime_s = t_done - t_pause;
    rep->live_s = t_pause - ls.t0;
    rep->cpu_s = ms_process_cpu_s() - cpu0;
    rep->syncs_in_rounds = ls.syncs;
    summarise(rep);
out:
    snprintf(rep->source, sizeof(rep->source), "%s", src->desc);
    rep->npages = src->npages;
    free(ls.bm);
    free(ls.next);
    free(ls.tmp);
    ms_sched_free(ls.s);
    return rc;
}

/* ======================= live backend ================================== */

typedef struct live_backend {
    ms_page_source *src;
    ms_sender *snd;
    uint32_t batch;
    uint64_t cap;
    uint64_t *pfns;
    uint8_t *buf;
    uint64_t t_round, pages; /* the round going out */
    uint64_t read_ns, queue_ns; /* where its time went */
} live_backend;

static double live_now(void *ctx)
{
    (void)ctx;
    return (double)ms_now_ns() / 1e9;
}

static int live_flush(live_backend *lb, uint32_t round, uint32_t frag, size_t n)
{
    if (!n)
        return MS_OK;
    uint64_t t0 = ms_now_ns();
    int rc = ms_source_read(lb->src, lb->pfns, n, lb->buf);
    if (rc)
        return ms_error_wrap(rc, "%s: read %zu pages from %llu", lb->src->desc, n,
                             (unsigned long long)lb->pfns[0]);
    uint64_t t1 = ms_now_ns();
    rc = ms_sender_pages(lb->snd, round, frag, lb->pfns, lb->buf, n);
    lb->read_ns += t1 - t0;
    lb->queue_ns += ms_now_ns() - t1;
    return rc;
}

static int live_round_begin(void *ctx, uint32_t round)
{
    live_backend *lb = ctx;
    (void)round;
    lb->t_round = ms_now_ns();
    lb->pages = 0;
    lb->read_ns = lb->queue_ns = 0;
    return MS_OK;
}

/* Read and queue the pages of fragments frags[0..n) in that order. */
static int live_send_frags(void *ctx, uint32_t round, const uint64_t *bm, const uint32_t *frags,
                           uint32_t n, uint32_t fp)
{
    live_backend *lb = ctx;
    size_t nwords = ms_bitmap_words(lb->cap), wpf = fp / 64;
    int rc = MS_OK;
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint32_t f = frags[i];
        size_t w0 = (size_t)f * wpf, w1 = w0 + wpf < nwords ? w0 + wpf : nwords;
        size_t k = 0;
        for (size_t w = w0; w < w1 && !rc; w++) {
            for (uint64_t x = bm[w]; x && !rc; x &= x - 1) {
                lb->pfns[k++] = w * 64 + (uint64_t)__builtin_ctzll(x);
                if (k == lb->batch) {
                    rc = live_flush(lb, round, f, k);
                    lb->pages += k;
                    k = 0;
                }
            }
        }
        if (!rc) {
            rc = live_flush(lb, round, f, k);
            lb->pages += k;
        }
    }
    return rc;
}

static int live_round_end(void *ctx, uint32_t round, bool final, ms_round_done *d)
{
    (void)final;
    live_backend *lb = ctx;
    uint64_t t = ms_now_ns();
    int rc = ms_sender_round_end(lb->snd, round);
    if (rc)
        return rc;
    ms_log(MS_LOG_DEBUG, "round %u: %llu pages, source reads %.1f ms, queueing %.1f ms, "
           "waiting for the acknowledgement %.1f ms, total %.1f ms", round,
           (unsigned long long)lb->pages, lb->read_ns / 1e6, lb->queue_ns / 1e6,
           (ms_now_ns() - t) / 1e6, (ms_now_ns() - lb->t_round) / 1e6);
    /* Read after the acknowledgement: the writers are idle until we queue
     * the next round's pages, so the per-round counters are settled. */
    const ms_stats *st = ms_sender_stats(lb->snd);
    d->round = round;
    d->pages = lb->pages;
    d->raw_bytes = lb->pages * lb->src->page_size;
    for (size_t i = 0; i < st->nrounds; i++)
        if (st->rounds[i].round == round)
            d->wire_bytes += st->rounds[i].wire_bytes;
    d->time_s = (double)(ms_now_ns() - lb->t_round) / 1e9;
    d->link_rate = ms_sender_link_rate(lb->snd);
    return MS_OK;
}

static int live_finish(void *ctx)
{
    live_backend *lb = ctx;
    return ms_sender_finish(lb->snd);
}

/* Hash every page of the (paused) source. */
static int source_hashes(ms_page_source *src, uint64_t *hashes, uint64_t *pfns, uint8_t *buf,
                         uint32_t batch)
{
    for (uint64_t first = 0; first < src->npages; first += batch) {
        size_t n = src->npages - first < batch ? (size_t)(src->npages - first) : batch;
        for (size_t i = 0; i < n; i++)
            pfns[i] = first + i;
        int rc = ms_source_read(src, pfns, n, buf);
        if (rc)
            return ms_error_wrap(rc, "verification: read pages %llu..%llu of the source",
                                 (unsigned long long)first, (unsigned long long)(first + n - 1));
        ms_page_hashes(buf, (uint64_t)n * src->page_size, 0, n, src->page_size, hashes + first);
    }
    return MS_OK;
}

static int run_verify(ms_page_source *src, live_backend *lb, ms_verify_fn verify, void *vctx,
                      ms_migration_report *rep)
{
    uint64_t t = ms_now_ns();
    uint64_t *hashes = malloc(src->npages * sizeof(*hashes));
    if (!hashes)
        return ms_error(MS_ERR_NOMEM, "verification: out of memory for %llu hashes",
                        (unsigned long long)src->npages);
    int rc = source_hashes(src, hashes, lb->pfns, lb->buf, lb->batch);
    rep->verify_first_bad = -1;
    if (!rc) {
        /* What `migstream recv` prints for its image: a remote destination
         * is checked by comparing the two. */
        rep->image_digest = ms_page_hashes_digest(hashes, src->npages);
        rep->have_digest = true;
    }
    if (!rc && verify) {
        rc = verify(vctx, hashes, src->npages, src->page_size, &rep->verify_mismatches,
                    &rep->verify_first_bad);
        rep->verify_done = rc == MS_OK || rc == MS_ERR_VERIFY;
        rep->verified = rc == MS_OK;
    }
    free(hashes);
    rep->verify_s = (double)(ms_now_ns() - t) / 1e9;
    return rc;
}

void ms_engine_config_default(ms_engine_config *c)
{
    memset(c, 0, sizeof(*c));
    c->policy = "fragmented";
    ms_policy_config_default(&c->policy_cfg);
    ms_chain_parse("zero,delta,lz4", &c->session.chain);
    c->session.page_size = MS_PAGE_SIZE;
    c->channels = 1;
    c->verify = true;
    c->after = MS_AFTER_RESUME;
    c->batch_pages = 256;
}

int ms_migrate_sender(ms_page_source *src, ms_sender *snd, const ms_engine_config *cfg,
                      ms_verify_fn verify, void *verify_ctx, ms_migration_report *rep)
{
    live_backend lb = {.src = src, .snd = snd, .batch = cfg->batch_pages ? cfg->batch_pages : 256,
                       .cap = ms_source_max_pages(src)};
    if (lb.cap < src->npages)
        lb.cap = src->npages;
    if (lb.batch > 65536)
        return ms_error(MS_ERR_INVAL, "batch of %u pages is above 65536", lb.batch);
    int rc;
    lb.pfns = malloc(lb.batch * sizeof(*lb.pfns));
    lb.buf = malloc((size_t)lb.batch * src->page_size);
    if (!lb.pfns || !lb.buf) {
        rc = ms_error(MS_ERR_NOMEM, "engine: out of memory for a %u-page batch", lb.batch);
        goto out;
    }
    ms_chain_format(&cfg->session.chain, rep->chain, sizeof(rep->chain));
    ms_engine_backend b = {.ctx = &lb, .now = live_now, .round_begin = live_round_begin,
                           .send_frags = live_send_frags, .round_end = live_round_end,
                           .finish = live_finish};
    ms_engine_loop_opts o = {.policy = cfg->policy ? cfg->policy : "fragmented",
                             .pcfg = &cfg->policy_cfg, .progress = cfg->progress, .real = true};
    if (cfg->record_trace && (rc = ms_engine_trace_open(&o.trace, cfg->record_trace, src)))
        goto out;
    rc = ms_engine_loop(src, &o, &b, rep);
    if (o.trace) {
        int trc = ms_engine_trace_close(o.trace);
        if (!rc && trc)
            rc = trc;
    }
    if (!rc && cfg->verify)
        rc = run_verify(src, &lb, verify, verify_ctx, rep);
out:
    if (rc) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        ms_sender_abort(snd, eb.msg);
        ms_source_resume(src); /* the source stays the original: let it run */
        ms_errbuf_raise(&eb);
    } else if (cfg->after == MS_AFTER_RESUME) {
        rc = ms_source_resume(src);
    }
    free(lb.pfns);
    free(lb.buf);
    return rc;
}
