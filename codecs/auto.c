/* The "auto" compressor: per frame, the candidate that delivers the most
 * input bytes per second given the link and the workers' CPU.
 *
 * The rule (ms_auto_decide) is a pure function of the measurements so it
 * can be tested without clocks; ms_auto keeps moving averages of those
 * measurements, fed by the worker threads (frames) and the sender's writers
 * (rate windows), and re-decides after each, a new choice holding for
 * SETTLE_WINDOWS windows. */
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

/* A candidate that was the decision: the formula, with the wire rate it saw
 * as the link where the wire was full, times the share of it that it
 * delivered then. Compressibility changes along memory far more
 * than that share does, so the share measured on other data still holds
 * where a rate measured there would not. Never the decision: the formula
 * with the workers' speed discounted by the trial margin, since that speed
 * comes from frames compressed by a worker on its own while the pipeline
 * around it (producer, receiver, the other workers) takes its share of
 * the cores. The ratio, measured on the same data, needs no discount, so a
 * candidate the link limits gets its trial as soon as it shrinks the data
 * more. */
double ms_auto_estimate(const ms_auto_view *v, unsigned cand)
{
    if (cand >= MS_AUTO_NCAND || (cand == MS_AUTO_NONE && v->link_unseen))
        return 0;
    ms_auto_view d = *v;
    if (v->wire_rate[cand] > 0)
        d.link_rate = v->wire_rate[cand];
    if (v->efficiency[cand] > 0)
        return ms_auto_throughput(&d, cand) * v->efficiency[cand];
    d.cpu_rate[cand] /= 1.0 + (v->trial_margin > 0 ? v->trial_margin : 0);
    return ms_auto_throughput(&d, cand);
}

/* Among the compressors within `hysteresis` of the best throughput the
 * cheapest (lowest index: lz4, zstd:1, zstd:3) is the target, since it
 * delivers about as much for less CPU. Sending as is must win by
 * NONE_MARGIN besides: a compressor that about ties with it costs only idle
 * CPU, and only a compressor sees the data turn compressible again
 * (sending as is, only exploration finds that out, frames later). A
 * cheaper current choice is kept until it falls twice the hysteresis
 * behind, so the way back needs a real change and estimates jittering
 * around one threshold cannot make it flap. */
#define NONE_MARGIN 1.10

/* A costlier compressor must promise this much more than a cheaper one:
 * two candidates' estimates differ by a few percent from noise alone (each
 * efficiency was measured on other data), and one at 1 Gbit/s was enough
 * to send a third of the frames with zstd:3 at three times zstd:1's CPU. */
#define COSTLIER_MARGIN 0.05

unsigned ms_auto_decide(const ms_auto_view *v, unsigned current, double hysteresis)
{
    double t[MS_AUTO_NCAND], max_t = 0, max_c = 0, tol = 1.0 + (hysteresis > 0 ? hysteresis : 0);
    double within = 1.0 + fmax(hysteresis, COSTLIER_MARGIN);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        t[c] = ms_auto_estimate(v, c) / (c == MS_AUTO_NONE ? NONE_MARGIN : 1.0);
        max_t = fmax(max_t, t[c]);
        if (c != MS_AUTO_NONE)
            max_c = fmax(max_c, t[c]);
    }
    /* The cheapest compressor within the hysteresis of sending as is and
     * within COSTLIER_MARGIN of the other compressors. */
    unsigned best = MS_AUTO_LZ4;
    while (best < MS_AUTO_NCAND &&
           !(t[best] > 0 && t[best] * tol >= t[MS_AUTO_NONE] && t[best] * within >= max_c))
        best++;
    /* Coming down from a costlier current choice needs its lead to fall
     * under half the margin, or estimates hovering at the margin would
     * swap the two at every chance. */
    if (best < MS_AUTO_NCAND && current < MS_AUTO_NCAND && current > best && t[current] >= max_c &&
        t[current] > t[best] * (1.0 + (within - 1.0) / 2))
        return current;
    if (best == MS_AUTO_NCAND)
        best = v->link_unseen && current < MS_AUTO_NCAND ? current : MS_AUTO_NONE;
    bool cheaper = best == MS_AUTO_NONE ? current != MS_AUTO_NONE : current != MS_AUTO_NONE && current < best;
    if (cheaper && current < MS_AUTO_NCAND && t[current] * tol * tol >= max_t)
        return current;
    return best;
}

/* Windows of wire rate after a switch before the rate is the new choice's:
 * the frames of the previous choice already compressed, queued and in the
 * socket's send queue go out first. A new choice also holds for that long
 * (redecide_locked). */
#define SETTLE_WINDOWS 3

/* A share above 1 is the formula underestimating (a ratio from older data);
 * capped so one such window cannot make a candidate look far better. */
#define MAX_EFFICIENCY 1.5

struct ms_auto {
    pthread_mutex_t lock;
    ms_auto_config cfg;
    ms_auto_view view;
    ms_auto_stats st;
    uint64_t nframes;
    /* Wire rate samples are averages over time windows, so a new value
     * means a new window: count them since the last switch, and trust the
     * rate as the current choice's only when the windows before the switch
     * have faded. */
    double last_link_sample;
    unsigned windows_since_switch;
    bool full_in_a_row;    /* link unknown: the last window was full */
    unsigned free_in_a_row; /* link unknown: windows in a row not full */
    /* Efficiency and wire rate as measured, and the frame count when they
     * last were. */
    double efficiency[MS_AUTO_NCAND], wire_rate[MS_AUTO_NCAND];
    uint64_t efficiency_at[MS_AUTO_NCAND], wire_at[MS_AUTO_NCAND];
    /* Compressor bytes in and out under the current choice since it was
     * made: the ratio that matches the wire rate's time span. */
    uint64_t since_in, since_out;
    /* Memory holds regions of very different compressibility (ratios from
     * 0.01 to 1 within one guest) and compression speed, so a frame
     * compressed with another candidate now and then says little by itself.
     * What is stable is how the compressors compare on the same data:
     * factor[c] is the power of lz4's ratio that c's ratio is (ln r_c /
     * ln r_lz4: data lz4 cannot shrink, no compressor shrinks much, and the
     * more lz4 shrinks it the more zstd gains), speed_factor[c] c's speed
     * over lz4's, from frames compressed with both (ms_auto_compare); recent[c]
     * and speed[c] are c's ratio and speed (input bytes per CPU second) on
     * its latest frames, at frame recent_at[c]. A candidate's estimates are
     * the most recently used compressor's, scaled by the factors. */
    double factor[MS_AUTO_NCAND], speed_factor[MS_AUTO_NCAND];
    unsigned factors_learnt[MS_AUTO_NCAND], speed_factors_learnt[MS_AUTO_NCAND];
    double recent[MS_AUTO_NCAND], speed[MS_AUTO_NCAND];
    uint64_t recent_at[MS_AUTO_NCAND];
    /* An exploration turn (number `turn`) waits for a frame large enough. */
    bool turn_due;
    uint64_t turn;
};

/* Until compared on compressible data: where lz4 leaves 40%, zstd at
 * levels 1 and 3 typically leave about 30% and 28% (0.4^1.3, 0.4^1.4), at
 * half and a third of its speed. */
static const double factor_prior[MS_AUTO_NCAND] = {1.0, 1.0, 1.3, 1.4};
static const double speed_prior[MS_AUTO_NCAND] = {1.0, 1.0, 0.5, 0.3};

/* Frames apart for a ratio or speed to describe the data now, and the
 * ratio above which data is too incompressible to compare compressors. */
#define RECENT_FRAMES 64
#define INFORMATIVE_RATIO 0.9
#define FACTOR_ALPHA 0.3

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
        a->cfg.hysteresis = 0.01;
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
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        a->factor[c] = factor_prior[c];
        a->speed_factor[c] = speed_prior[c];
    }
    /* Until the link is seen, sending as is risks the most (on a slow
     * link a whole socket buffer of raw pages queues before the first
     * window closes), lz4 the least. With a cap the formula decides at
     * once, and until the compressors are measured the only known choice
     * is none. */
    a->view.link_unseen = !(a->cfg.link_cap > 0);
    a->st.current = a->view.link_unseen ? MS_AUTO_LZ4 : MS_AUTO_NONE;
    /* Held like any switch: the first windows tell the link, not lz4. */
    if (a->view.link_unseen)
        a->windows_since_switch = 0;
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

static void publish_locked(ms_auto *a);

/* A new choice holds for SETTLE_WINDOWS windows: what it delivers is only
 * known then, and estimates that move with every frame cannot make it flap
 * between frames. */
static void redecide_locked(ms_auto *a)
{
    if (a->windows_since_switch < SETTLE_WINDOWS)
        return;
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

void ms_auto_link_sample(ms_auto *a, double bytes_per_s, int limit)
{
    bool saturated = limit == MS_AUTO_BY_LINK;
    if (!a || !(bytes_per_s > 0) || !isfinite(bytes_per_s))
        return;
    pthread_mutex_lock(&a->lock);
    if (a->cfg.link_cap > 0 && bytes_per_s > a->cfg.link_cap)
        bytes_per_s = a->cfg.link_cap;
    ms_auto_view *v = &a->view;
    /* An unsaturated wire that was never seen full is taken as unlimited:
     * the producer, not the link, sets its pace, and compressing more
     * would not speed it up. The link becomes known with the second full
     * window in a row: the first of a stream fills the queues on the path
     * at more than the link's rate (a token bucket's burst), and on one
     * host a single full window is often a receiver briefly behind. Until
     * it is known, no window measures a choice. */
    bool unknown = !(v->link_rate > 0);
    if (unknown) {
        if (saturated && a->full_in_a_row)
            v->link_rate = bytes_per_s;
        a->full_in_a_row = saturated;
        a->free_in_a_row = saturated ? 0 : a->free_in_a_row + 1;
        if (v->link_rate > 0 || a->free_in_a_row >= MS_AUTO_FREE_WINDOWS)
            v->link_unseen = false;
    } else if (bytes_per_s > v->link_rate || saturated)
        v->link_rate = ewma(v->link_rate, bytes_per_s, a->cfg.alpha);
    if (bytes_per_s != a->last_link_sample) {
        a->last_link_sample = bytes_per_s;
        a->windows_since_switch++;
    }
    unsigned cur = a->st.current;
    double ratio = cur == MS_AUTO_NONE || !a->since_in ? 1.0 : (double)a->since_out / (double)a->since_in;
    /* The formula on the frames the wire carried, with their own ratio and
     * (saturated) this very wire rate as the link: a link-bound choice on a
     * saturated link then has a share of 1 whatever the data did since and
     * however slowly the link estimate moves. A window the producer set
     * the pace of (neither the link nor the workers were behind) says
     * nothing of the choice. While no link limit is known, sending as is
     * wins by definition and what it delivers measures the producer, not
     * the link. */
    ms_auto_view same = *v;
    same.ratio[cur] = ratio;
    if (saturated)
        same.link_rate = bytes_per_s;
    double formula = ms_auto_throughput(&same, cur);
    /* A full wire may be full at the pace of a receiver decompressing on
     * the same cores: then it depends on the choice, so each choice has
     * the wire rate it saw. */
    if (saturated && a->windows_since_switch >= SETTLE_WINDOWS && !unknown) {
        a->wire_rate[cur] = v->wire_rate[cur] = ewma(v->wire_rate[cur], bytes_per_s, a->cfg.alpha);
        a->wire_at[cur] = a->nframes;
    }
    if (!unknown && a->windows_since_switch >= SETTLE_WINDOWS && ratio > 0 && formula > 0 &&
        isfinite(formula) && (limit != MS_AUTO_BY_PRODUCER || cpu_bound(&same, cur))) {
        double share = fmin(MAX_EFFICIENCY, bytes_per_s / ratio / formula);
        a->efficiency[cur] = v->efficiency[cur] = ewma(v->efficiency[cur], share, a->cfg.alpha);
        a->efficiency_at[cur] = a->nframes;
    }
    redecide_locked(a);
    publish_locked(a);
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

unsigned ms_auto_pick(ms_auto *a, uint64_t seq, uint64_t in_bytes, unsigned *shadow)
{
    pthread_mutex_lock(&a->lock);
    unsigned pick = a->st.current, cur = a->st.current;
    bool explore = false;
    unsigned n = a->cfg.explore_every;
    if (seq % n == n - 1) {
        a->turn_due = true;
        a->turn = seq / n;
    }
    /* A frame of a few pages (the rest zero) takes fixed costs more than
     * compression: its speed and ratio would mislead. */
    if (in_bytes < MS_AUTO_MIN_SAMPLE)
        goto out;
    for (unsigned c = 1; c < MS_AUTO_NCAND && !explore; c++)
        if (!(a->view.ratio[c] > 0) || !(a->view.cpu_rate[c] > 0)) {
            pick = c;
            explore = true;
        }
    if (!explore && a->turn_due) {
        a->turn_due = false;
        unsigned t = explore_target(cur, a->turn);
        /* A candidate whose workers could not keep up with what the current
         * choice achieves even if it shrank the data to nothing cannot win
         * on ratio: exploring it only costs (one slow frame holds up the
         * frames behind it), so it is explored one turn in HOPELESS_TURNS,
         * to notice a change in its speed. */
        double ceiling = a->view.workers * a->view.cpu_rate[t];
        if (ceiling >= ms_auto_estimate(&a->view, cur) || a->turn % HOPELESS_TURNS == 0) {
            pick = t;
            explore = true;
        }
    }
out:
    /* An explored frame is compressed with the current choice too (with
     * lz4 while sending as is), to compare the two on the same data. */
    if (shadow)
        *shadow = !explore ? MS_AUTO_NCAND
                  : cur != MS_AUTO_NONE && cur != pick ? cur
                  : pick != MS_AUTO_LZ4 ? MS_AUTO_LZ4
                                        : MS_AUTO_NCAND;
    a->st.explored[pick] += explore;
    pthread_mutex_unlock(&a->lock);
    return pick;
}

/* The compressor whose ratio and speed describe the data now: the one that
 * compressed the latest frame (after a switch, the new choice's own
 * figures may be from long ago). */
static unsigned latest_compressor(const ms_auto *a)
{
    unsigned best = MS_AUTO_NONE;
    for (unsigned c = 1; c < MS_AUTO_NCAND; c++)
        if (a->recent[c] > 0 && (best == MS_AUTO_NONE || a->recent_at[c] > a->recent_at[best]))
            best = c;
    return best;
}

/* The estimates the rule sees, from the latest compressor's ratio and speed
 * and the factors. The efficiency and wire rate measured while a candidate
 * was the decision stand for steady_frames frames, then it may be tried
 * again. */
static double unexpired(ms_auto *a, double *measured, uint64_t at)
{
    if (*measured > 0 && a->nframes - at > a->cfg.steady_frames)
        *measured = 0;
    return *measured;
}

/* A higher zstd level never shrinks less on the same data: noisy
 * comparisons must not say otherwise. */
static double factor_of(const ms_auto *a, unsigned c)
{
    return c == MS_AUTO_ZSTD3 ? fmax(a->factor[c], a->factor[MS_AUTO_ZSTD1]) : a->factor[c];
}

static void publish_locked(ms_auto *a)
{
    unsigned ref = latest_compressor(a);
    for (unsigned c = 0; c < MS_AUTO_NCAND; c++) {
        a->view.efficiency[c] = unexpired(a, &a->efficiency[c], a->efficiency_at[c]);
        a->view.wire_rate[c] = unexpired(a, &a->wire_rate[c], a->wire_at[c]);
        if (c == MS_AUTO_NONE || ref == MS_AUTO_NONE || !(a->recent[c] > 0))
            continue;
        a->view.ratio[c] = fmin(1.0, pow(a->recent[ref], factor_of(a, c) / factor_of(a, ref)));
        a->view.cpu_rate[c] = a->speed[ref] * a->speed_factor[c] / a->speed_factor[ref];
    }
}

/* A clock too coarse to see the work counts as one microsecond. */
static double speed_of(uint64_t in_bytes, double cpu_s) { return (double)in_bytes / (cpu_s > 1e-6 ? cpu_s : 1e-6); }

static void note_recent(ms_auto *a, unsigned cand, double r, double sp)
{
    /* A ratio from long ago describes other data: start afresh. */
    bool stale = a->nframes - a->recent_at[cand] > RECENT_FRAMES;
    a->recent[cand] = stale ? r : ewma(a->recent[cand], r, a->cfg.alpha);
    a->speed[cand] = stale ? sp : ewma(a->speed[cand], sp, a->cfg.alpha);
    a->recent_at[cand] = a->nframes;
}

/* vc / vs = factor[cand] / factor[shadow], lz4's factor being 1 (vc, vs:
 * speeds, or logarithms of ratios). The first comparison replaces the
 * prior; `learnt` counts them. */
static void learn(double *factor, unsigned *learnt, unsigned cand, unsigned shadow, double vc, double vs)
{
    unsigned c = cand == MS_AUTO_LZ4 ? shadow : cand;
    double sample = fmin(4.0, cand == MS_AUTO_LZ4 ? vs / vc : vc / vs * factor[shadow]);
    if (c == MS_AUTO_LZ4 || !(sample > 0))
        return;
    factor[c] = learnt[c]++ ? (1 - FACTOR_ALPHA) * factor[c] + FACTOR_ALPHA * sample : sample;
}

void ms_auto_compare(ms_auto *a, uint64_t in_bytes, unsigned cand, uint64_t cand_out, double cand_cpu_s,
                     unsigned shadow, uint64_t shadow_out, double shadow_cpu_s)
{
    if (!a || in_bytes < MS_AUTO_MIN_SAMPLE || cand == shadow || cand == MS_AUTO_NONE || shadow == MS_AUTO_NONE ||
        cand >= MS_AUTO_NCAND || shadow >= MS_AUTO_NCAND)
        return;
    pthread_mutex_lock(&a->lock);
    double in = (double)in_bytes;
    double rc = fmin(1.0, (double)cand_out / in), rs = fmin(1.0, (double)shadow_out / in);
    double sc = speed_of(in_bytes, cand_cpu_s), ss = speed_of(in_bytes, shadow_cpu_s);
    /* Data that hardly compresses says little of ratios, and of speeds
     * less still: lz4 gives up on it many times faster than zstd does. */
    if (fmax(rc, rs) < INFORMATIVE_RATIO && rc > 0 && rs > 0) {
        learn(a->factor, a->factors_learnt, cand, shadow, log(rc), log(rs));
        learn(a->speed_factor, a->speed_factors_learnt, cand, shadow, sc, ss);
    }
    note_recent(a, shadow, rs, ss);
    publish_locked(a);
    pthread_mutex_unlock(&a->lock);
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
    if (cand != MS_AUTO_NONE && in_bytes >= MS_AUTO_MIN_SAMPLE)
        note_recent(a, cand, (double)out_bytes / (double)in_bytes, speed_of(in_bytes, cpu_s));
    publish_locked(a);
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
