/* The "auto" compressor: per frame, the candidate that delivers the most
 * input bytes per second given the link and the workers' CPU.
 *
 * The rule (ms_auto_decide) is a pure function of the measurements so it
 * can be tested without clocks; ms_auto keeps moving averages of those
 * measurements, fed by the worker threads, and re-decides after each. */
#include <math.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "codecs/codecs.h"

static const struct {
    const char *name;
    uint8_t comp;
    int8_t level;
} cands[MS_AUTO_NCAND] = {
    [MS_AUTO_NONE] = {"none", MS_COMP_NONE, 0},
    [MS_AUTO_LZ4] = {"lz4", MS_COMP_LZ4, 1},
    [MS_AUTO_ZSTD1] = {"zstd:1", MS_COMP_ZSTD, 1},
    [MS_AUTO_ZSTD3] = {"zstd:3", MS_COMP_ZSTD, 3},
};

const char *ms_auto_name(unsigned cand) { return cand < MS_AUTO_NCAND ? cands[cand].name : "?"; }

void ms_auto_chain(unsigned cand, uint32_t stages, ms_chain *out)
{
    if (cand >= MS_AUTO_NCAND)
        cand = MS_AUTO_NONE;
    *out = (ms_chain){.stages = stages, .comp = cands[cand].comp, .level = cands[cand].level};
}

double ms_auto_throughput(const ms_auto_view *v, unsigned cand)
{
    if (cand >= MS_AUTO_NCAND)
        return 0;
    /* Sending as is costs the workers nothing and shrinks nothing. */
    double ratio = cand == MS_AUTO_NONE ? 1.0 : v->ratio[cand];
    double cpu = cand == MS_AUTO_NONE ? INFINITY : v->cpu_rate[cand];
    if (!(ratio > 0) || !(cpu > 0))
        return 0;
    double link = v->link_rate > 0 ? v->link_rate / ratio : INFINITY;
    double work = (v->workers ? v->workers : 1) * cpu;
    return link < work ? link : work;
}

double ms_auto_estimate(const ms_auto_view *v, unsigned cand)
{
    if (cand >= MS_AUTO_NCAND)
        return 0;
    if (v->delivered[cand] > 0)
        return v->delivered[cand];
    return ms_auto_throughput(v, cand) / (1.0 + (v->trial_margin > 0 ? v->trial_margin : 0));
}

/* Among candidates within `hysteresis` of the best throughput the cheapest
 * (lowest index: none, lz4, zstd:1, zstd:3) is the target, since it
 * delivers about as much for less CPU. A cheaper current choice is kept
 * until it falls twice that far behind, so the way back needs a real change
 * and estimates jittering around one threshold cannot make it flap. */
unsigned ms_auto_decide(const ms_auto_view *v, unsigned current, double hysteresis)
{
    double t[MS_AUTO_NCAND], max_t = 0, tol = 1.0 + (hysteresis > 0 ? hysteresis : 0);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        t[c] = ms_auto_estimate(v, c);
        if (t[c] > max_t)
            max_t = t[c];
    }
    unsigned best = MS_AUTO_NONE;
    while (best + 1 < MS_AUTO_NCAND && !(t[best] * tol >= max_t))
        best++;
    if (current < best && t[current] * tol * tol >= max_t)
        return current;
    return best;
}

/* Windows of wire rate after a switch before the rate is the new choice's:
 * the sender's rate is itself a moving average (0.7 old, 0.3 new per 100 ms
 * window), so after three new windows two thirds of it is from after the
 * switch. */
#define SETTLE_WINDOWS 3

struct ms_auto {
    pthread_mutex_t lock;
    ms_auto_config cfg;
    ms_auto_view view;
    ms_auto_stats st;
    /* Per candidate: CPU rate from every frame, and from the frames it
     * compressed while it was the decision (0: never, or expired), with the
     * frame count when that was last updated. */
    double all_rate[MS_AUTO_NCAND], steady_rate[MS_AUTO_NCAND];
    uint64_t steady_at[MS_AUTO_NCAND], nframes;
    /* Wire rate samples are averages over time windows, so a new value
     * means a new window: count them since the last switch, and trust the
     * rate as the current choice's only when the windows before the switch
     * have faded. */
    double last_link_sample;
    unsigned windows_since_switch;
    uint64_t delivered_at[MS_AUTO_NCAND];
    /* Compressor bytes in and out under the current choice since it was
     * made: the ratio that matches the wire rate's time span. */
    uint64_t since_in, since_out;
    /* A candidate's ratio relative to the current choice's on neighbouring
     * frames, and which choice that was: memory holds regions of very
     * different compressibility (ratios from 0.01 to 1 within one guest),
     * and a ratio sampled once per 64 frames compares with another
     * candidate's only on the same data. */
    double rel[MS_AUTO_NCAND], abs_ratio[MS_AUTO_NCAND];
    unsigned rel_ref[MS_AUTO_NCAND];
};

ms_auto *ms_auto_new(const ms_auto_config *cfg)
{
    ms_auto *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    if (cfg)
        a->cfg = *cfg;
    if (!a->cfg.workers)
        a->cfg.workers = 1;
    if (!a->cfg.explore_every)
        a->cfg.explore_every = 32;
    if (!(a->cfg.alpha > 0 && a->cfg.alpha <= 1))
        a->cfg.alpha = 0.25;
    if (!(a->cfg.hysteresis > 0))
        a->cfg.hysteresis = 0.03;
    if (!(a->cfg.link_cap > 0))
        a->cfg.link_cap = 0;
    if (!a->cfg.steady_frames)
        a->cfg.steady_frames = 2048;
    if (a->cfg.trial_margin == 0)
        a->cfg.trial_margin = 0.25;
    a->view.trial_margin = a->cfg.trial_margin > 0 ? a->cfg.trial_margin : 0;
    /* The first choice follows no other: its rate is its own at once. */
    a->windows_since_switch = SETTLE_WINDOWS;
    a->view.workers = a->cfg.workers;
    a->view.link_rate = a->cfg.link_cap;
    a->view.ratio[MS_AUTO_NONE] = 1.0;
    a->view.cpu_rate[MS_AUTO_NONE] = INFINITY;
    /* Until the others are measured, the only known choice is none. */
    a->st.current = MS_AUTO_NONE;
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

void ms_auto_free(ms_auto *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static double ewma(double old, double sample, double alpha)
{
    return old > 0 && isfinite(old) ? (1 - alpha) * old + alpha * sample : sample;
}

static void redecide_locked(ms_auto *a)
{
    unsigned next = ms_auto_decide(&a->view, a->st.current, a->cfg.hysteresis);
    if (next != a->st.current) {
        a->st.current = next;
        a->st.switches++;
        a->windows_since_switch = 0;
        a->since_in = a->since_out = 0;
    }
}

static bool cpu_bound(const ms_auto_view *v, unsigned cand)
{
    double ratio = cand == MS_AUTO_NONE ? 1.0 : v->ratio[cand];
    double cpu = cand == MS_AUTO_NONE ? INFINITY : v->cpu_rate[cand];
    if (!(ratio > 0) || !(cpu > 0) || !(v->link_rate > 0))
        return false;
    return v->workers * cpu < v->link_rate / ratio;
}

void ms_auto_link_sample(ms_auto *a, double bytes_per_s, bool saturated)
{
    if (!a || !(bytes_per_s > 0) || !isfinite(bytes_per_s))
        return;
    pthread_mutex_lock(&a->lock);
    if (a->cfg.link_cap > 0 && bytes_per_s > a->cfg.link_cap)
        bytes_per_s = a->cfg.link_cap;
    ms_auto_view *v = &a->view;
    /* An unsaturated wire that was never seen full is taken as unlimited:
     * the producer, not the link, sets its pace, and compressing more
     * would not speed it up. */
    if (!(v->link_rate > 0)) {
        if (saturated)
            v->link_rate = bytes_per_s;
    } else if (bytes_per_s > v->link_rate || (saturated && !cpu_bound(v, a->st.current)))
        v->link_rate = ewma(v->link_rate, bytes_per_s, a->cfg.alpha);
    if (bytes_per_s != a->last_link_sample) {
        a->last_link_sample = bytes_per_s;
        a->windows_since_switch++;
    }
    unsigned cur = a->st.current;
    double ratio = cur == MS_AUTO_NONE || !a->since_in ? 1.0 : (double)a->since_out / (double)a->since_in;
    /* While no link limit is known, sending as is wins by definition and
     * what it delivers measures the producer, not the link. */
    if (v->link_rate > 0 && a->windows_since_switch >= SETTLE_WINDOWS && ratio > 0) {
        v->delivered[cur] = ewma(v->delivered[cur], bytes_per_s / ratio, a->cfg.alpha);
        a->delivered_at[cur] = a->nframes;
    }
    redecide_locked(a);
    pthread_mutex_unlock(&a->lock);
}

/* The k-th compressing candidate other than `current`: none needs no
 * exploring, its ratio and cost are known. */
#define HOPELESS_TURNS 8

static unsigned explore_target(unsigned current, uint64_t k)
{
    unsigned others[MS_AUTO_NCAND], n = 0;
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        if (c != current)
            others[n++] = c;
    return others[k % n];
}

unsigned ms_auto_pick(ms_auto *a, uint64_t seq)
{
    pthread_mutex_lock(&a->lock);
    unsigned pick = a->st.current;
    bool explore = false;
    for (unsigned c = 1; c < MS_AUTO_NCAND && !explore; c++)
        if (!(a->view.ratio[c] > 0) || !(a->view.cpu_rate[c] > 0)) {
            pick = c;
            explore = true;
        }
    unsigned n = a->cfg.explore_every;
    if (!explore && seq % n == n - 1) {
        unsigned t = explore_target(a->st.current, seq / n);
        /* A candidate whose workers could not keep up with what the current
         * choice achieves even if it shrank the data to nothing cannot win
         * on ratio: exploring it only costs (one slow frame holds up the
         * frames behind it), so it is explored one turn in HOPELESS_TURNS,
         * to notice a change in its speed. */
        double ceiling = a->view.workers * a->all_rate[t];
        if (ceiling >= ms_auto_estimate(&a->view, a->st.current) || (seq / n) % HOPELESS_TURNS == 0) {
            pick = t;
            explore = true;
        }
    }
    a->st.explored[pick] += explore;
    pthread_mutex_unlock(&a->lock);
    return pick;
}

/* The rate the rule sees: a frame compressed now and then, while the
 * workers otherwise idle, runs faster than the same compressor on every
 * frame, when the workers contend with each other, the producer and (on one
 * host) the receiver for the cores. Once a candidate has been the decision,
 * its rate measured then caps the estimate, so exploration cannot talk auto
 * back into a choice that already fell short; the cap lapses after
 * steady_frames frames, so a changed machine gets a new trial. */
static void publish_rate_locked(ms_auto *a, unsigned cand)
{
    if (a->view.delivered[cand] > 0 && a->nframes - a->delivered_at[cand] > a->cfg.steady_frames)
        a->view.delivered[cand] = 0;
    if (cand == MS_AUTO_NONE)
        return;
    unsigned cur = a->st.current;
    if (cand != cur && a->rel_ref[cand] == cur && cur != MS_AUTO_NONE && a->rel[cand] > 0)
        a->view.ratio[cand] = a->rel[cand] * a->abs_ratio[cur];
    else
        a->view.ratio[cand] = a->abs_ratio[cand];
    double r = a->all_rate[cand];
    if (a->steady_rate[cand] > 0 && a->nframes - a->steady_at[cand] > a->cfg.steady_frames)
        a->steady_rate[cand] = 0;
    if (a->steady_rate[cand] > 0 && a->steady_rate[cand] < r)
        r = a->steady_rate[cand];
    a->view.cpu_rate[cand] = r;
}

void ms_auto_record(ms_auto *a, unsigned cand, uint64_t in_bytes, uint64_t out_bytes, double cpu_s)
{
    if (!a || cand >= MS_AUTO_NCAND)
        return;
    pthread_mutex_lock(&a->lock);
    a->st.frames[cand]++;
    a->st.in_bytes[cand] += in_bytes;
    a->st.out_bytes[cand] += out_bytes;
    a->nframes++;
    if (cand == a->st.current) {
        a->since_in += in_bytes;
        a->since_out += out_bytes;
    }
    if (cand != MS_AUTO_NONE && in_bytes) {
        double r = (double)out_bytes / (double)in_bytes;
        unsigned cur = a->st.current;
        a->abs_ratio[cand] = ewma(a->abs_ratio[cand], r, a->cfg.alpha);
        if (cand != cur && cur != MS_AUTO_NONE && a->abs_ratio[cur] > 0) {
            double rel = r / a->abs_ratio[cur];
            a->rel[cand] = a->rel_ref[cand] == cur ? ewma(a->rel[cand], rel, a->cfg.alpha) : rel;
            a->rel_ref[cand] = cur;
        }
        /* A clock too coarse to see the work counts as one microsecond. */
        double cpu = (double)in_bytes / (cpu_s > 1e-6 ? cpu_s : 1e-6);
        a->all_rate[cand] = ewma(a->all_rate[cand], cpu, a->cfg.alpha);
        if (cand == cur) {
            a->steady_rate[cand] = ewma(a->steady_rate[cand], cpu, a->cfg.alpha);
            a->steady_at[cand] = a->nframes;
        }
    }
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++)
        publish_rate_locked(a, c);
    redecide_locked(a);
    pthread_mutex_unlock(&a->lock);
}

void ms_auto_get_view(ms_auto *a, ms_auto_view *out)
{
    pthread_mutex_lock(&a->lock);
    *out = a->view;
    pthread_mutex_unlock(&a->lock);
}

void ms_auto_get_stats(ms_auto *a, ms_auto_stats *out)
{
    pthread_mutex_lock(&a->lock);
    *out = a->st;
    pthread_mutex_unlock(&a->lock);
}

void ms_auto_stats_json(const ms_auto_stats *st, FILE *f)
{
    fputs("{\"choices\":{", f);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++)
        fprintf(f,
                "%s\"%s\":{\"frames\":%" PRIu64 ",\"explored\":%" PRIu64 ",\"in_bytes\":%" PRIu64
                ",\"out_bytes\":%" PRIu64 "}",
                c ? "," : "", cands[c].name, st->frames[c], st->explored[c], st->in_bytes[c], st->out_bytes[c]);
    fprintf(f, "},\"switches\":%" PRIu64 ",\"current\":\"%s\"}", st->switches, ms_auto_name(st->current));
}
