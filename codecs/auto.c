/* The "auto" compressor: per frame, the candidate that delivers the most
 * input bytes per second given the link and the workers' CPU.
 *
 * The rule (ms_auto_decide) is a pure function of the measurements so it
 * can be tested without clocks; ms_auto keeps moving averages of those
 * measurements, fed by the worker threads, and re-decides after each. */
#include <math.h>
#include <pthread.h>
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

/* Among candidates within `hysteresis` of the best throughput the cheapest
 * (lowest index: none, lz4, zstd:1, zstd:3) is the target, since it
 * delivers about as much for less CPU. A cheaper current choice is kept
 * until it falls twice that far behind, so the way back needs a real change
 * and estimates jittering around one threshold cannot make it flap. */
unsigned ms_auto_decide(const ms_auto_view *v, unsigned current, double hysteresis)
{
    double t[MS_AUTO_NCAND], max_t = 0, tol = 1.0 + (hysteresis > 0 ? hysteresis : 0);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        t[c] = ms_auto_throughput(v, c);
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

struct ms_auto {
    pthread_mutex_t lock;
    ms_auto_config cfg;
    ms_auto_view view;
    ms_auto_stats st;
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
    redecide_locked(a);
    pthread_mutex_unlock(&a->lock);
}

/* The k-th compressing candidate other than `current`: none needs no
 * exploring, its ratio and cost are known. */
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
        pick = explore_target(a->st.current, seq / n);
        explore = true;
    }
    a->st.explored[pick] += explore;
    pthread_mutex_unlock(&a->lock);
    return pick;
}

void ms_auto_record(ms_auto *a, unsigned cand, uint64_t in_bytes, uint64_t out_bytes, double cpu_s)
{
    if (!a || cand >= MS_AUTO_NCAND)
        return;
    pthread_mutex_lock(&a->lock);
    a->st.frames[cand]++;
    a->st.in_bytes[cand] += in_bytes;
    a->st.out_bytes[cand] += out_bytes;
    if (cand != MS_AUTO_NONE && in_bytes) {
        ms_auto_view *v = &a->view;
        v->ratio[cand] = ewma(v->ratio[cand], (double)out_bytes / (double)in_bytes, a->cfg.alpha);
        /* A clock too coarse to see the work counts as one microsecond. */
        double cpu = (double)in_bytes / (cpu_s > 1e-6 ? cpu_s : 1e-6);
        v->cpu_rate[cand] = ewma(v->cpu_rate[cand], cpu, a->cfg.alpha);
    }
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
