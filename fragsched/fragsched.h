/* migstream fragsched: the pre-copy scheduler and the migration engine.
 *
 * Three layers, each usable on its own:
 *  - policies (ms_policy_ops): given per-round statistics, answer "which
 *    fragments now and in which order, which fragments to hold back, stop
 *    now?". `precopy` is Xen 4.17's simple_precopy_policy exactly,
 *    `fragmented` is the fragmented iterative copy (docs/fragsched.md),
 *    `downtime` is a QEMU-like downtime-target policy.
 *  - the scheduler (ms_sched): a policy plus the bitmaps it works on. It is
 *    the only thing that moves pages between "send now" and "pending", so a
 *    policy cannot lose a dirty page. The Xen preload drives it from its
 *    precopy_policy / xc_logdirty_control hooks; the engine drives it here.
 *  - the engine (ms_migrate) and the simulator (ms_simulate): rounds,
 *    pause, final round, resume-or-stop, verification and the report, over
 *    any ms_page_source, codec chain and transport (engine) or a link model
 *    in virtual time (simulator).
 *
 * Bitmaps are arrays of uint64_t, bit i of word i/64 = page i (sources.h). */
#ifndef MS_FRAGSCHED_H
#define MS_FRAGSCHED_H

#include <stdio.h>

#include "common/common.h"
#include "sources/sources.h"
#include "stream/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================= Xen's default policy =========================== */

/* Same values and meaning as xenguest.h's XGS_POLICY_* and struct
 * precopy_stats, so the Xen preload can pass them through unchanged. */
enum {
    MS_XGS_POLICY_ABORT = -1,
    MS_XGS_POLICY_CONTINUE_PRECOPY = 0,
    MS_XGS_POLICY_STOP_AND_COPY = 1,
};
#define MS_XEN_SPP_MAX_ITERATIONS 5
#define MS_XEN_SPP_TARGET_DIRTY_COUNT 50

typedef struct ms_precopy_stats {
    unsigned int iteration;      /* live rounds sent so far */
    unsigned long total_written; /* sum of the dirty counts of those rounds */
    long dirty_count;            /* pages in the bitmap about to be sent, -1 unknown */
} ms_precopy_stats;

/* libxc's simple_precopy_policy: stop when 0 <= dirty_count < 50 or
 * iteration >= 5. */
int ms_xen_simple_precopy_policy(ms_precopy_stats st);

/* A bitmap read is "quiet" when it found at most this share of memory
 * written (fragmented's phase test, docs/fragsched.md "Quiet phases";
 * `migstream dirtyrate` reports the same). */
#define MS_QUIET_MEMORY_SHARE 0.001

/* ======================= policies ====================================== */

enum ms_decision {
    MS_DECIDE_ABORT = -1,
    MS_DECIDE_CONTINUE = 0,   /* send this round live, then read the next bitmap */
    MS_DECIDE_STOP_AFTER = 1, /* send this round live, then pause and send the rest (Xen) */
    MS_DECIDE_STOP_NOW = 2,   /* pause now: this round's pages go to stop-and-copy */
};
const char *ms_decision_name(int d);

typedef struct ms_policy_config {
    uint32_t fragment_pages; /* pages per fragment, a multiple of 64; 0 = 512 (2 MiB) */
    double downtime_ms;      /* downtime target (fragmented, downtime); 0 = 300 */
    double defer_share;      /* share of the target that deferred fragments may
                              * fill (fragmented); 0 = 0.5 */
    double waste_threshold;  /* defer a fragment when the predicted chance that a
                              * page sent now is dirtied again before the pause is
                              * at least this (fragmented); 0 = 0.5 */
    double stall_ratio;      /* a round makes no progress when what is outstanding
                              * is >= this share of the previous round's; and at
                              * such a stop, one more live round must be expected
                              * to leave less than this share of it (fragmented,
                              * docs/fragsched.md); 0 = 0.9 */
    unsigned stall_rounds;   /* stop after this many rounds in a row without
                              * progress (fragmented); 0 = 1 */
    unsigned max_rounds;     /* safety: live rounds before stop-and-copy
                              * (fragmented, downtime); 0 = 30 */
    double ewma_alpha;       /* weight of the newest sample in smoothed rates; 0 = 0.5 */
    bool hold_on_stop;       /* fragmented: when stopping, keep hot fragments held
                              * back for the pause instead of sending everything
                              * live once more, hottest last (default false) */
} ms_policy_config;

/* Fill the defaults above (explicit values instead of zeros). */
void ms_policy_config_default(ms_policy_config *c);

/* What a policy sees when it plans round `round` (after the bitmap read).
 * Per-fragment arrays have nfragments entries. */
typedef struct ms_round_view {
    uint32_t round;            /* 0 = the first full pass */
    uint64_t npages;
    uint32_t page_size;
    uint32_t fragment_pages;
    uint32_t nfragments;       /* ceil(npages / fragment_pages) */
    const uint32_t *frag_size; /* pages in each fragment (the last may be short) */
    const uint32_t *frag_dirty;   /* pages in the bitmap just read */
    const uint32_t *frag_pending; /* pages held back, not sent yet */
    const uint32_t *frag_union;   /* popcount(dirty | pending): what sending it costs */
    const uint32_t *frag_sent;    /* pages sent in the previous round */
    const uint32_t *frag_redirty; /* of those, dirtied again: resending did not help */
    const uint8_t *frag_deferred; /* held back in the previous round */
    uint64_t dirty_count;      /* pages in the bitmap just read */
    uint64_t pending_count;    /* pages held back */
    double interval_s;         /* time covered by the bitmap just read */
    double elapsed_s;          /* since the start of the migration */
    /* Measurements of the rounds sent so far (0 when none yet). */
    double page_rate;          /* pages/s end to end, smoothed */
    double link_rate;          /* wire bytes/s, smoothed */
    double comp_ratio;         /* wire bytes / raw bytes, 1 if unknown */
    uint64_t total_pages_sent;
    uint64_t prev_pages;       /* pages sent in the previous round */
    double prev_time_s;        /* its duration */
} ms_round_view;

/* A policy's answer for one round. The scheduler zeroes defer[] and fills
 * order[] with address order before calling plan. */
typedef struct ms_plan {
    int decision;        /* enum ms_decision */
    uint8_t *defer;      /* per fragment: 1 = hold its pages back this round */
    uint32_t *order;     /* permutation of fragments: send order (cold first) */
    double est_stop_s;   /* the policy's estimate of stop-and-copy time, -1 none */
    char reason[128];    /* why it stops (empty while continuing) */
} ms_plan;

/* What happened to a round that was sent live. */
typedef struct ms_round_done {
    uint32_t round;
    uint64_t pages;
    uint64_t raw_bytes;  /* pages * page_size */
    uint64_t wire_bytes; /* 0 if unknown (then the ratio stays as it was) */
    double time_s;       /* first page queued to receiver's acknowledgement */
    double link_rate;    /* transport's measured wire rate, 0 if unknown */
} ms_round_done;

typedef struct ms_policy_ops {
    const char *name;
    const char *summary;
    int (*create)(const ms_policy_config *cfg, uint64_t npages, uint32_t page_size, void **state);
    /* Fill out->decision (and defer/order/est_stop_s/reason). */
    int (*plan)(void *state, const ms_round_view *v, ms_plan *out);
    /* After a live round went out: return CONTINUE or STOP_AFTER (meaning:
     * pause now), or an error; say why in reason[0..128) when stopping.
     * `v` is the view the round was planned with. May be NULL. */
    int (*sent)(void *state, const ms_round_view *v, const ms_round_done *d, char *reason);
    void (*destroy)(void *state);
    /* Optional: after every live bitmap read, between rounds and within
     * them, how many distinct pages were written over how long, and the
     * page rate measured so far (0 before the first round is done). Finer
     * than rounds, it shows a workload's phases (fragmented:
     * docs/fragsched.md, "Quiet phases"). NULL: not wanted. */
    void (*sample)(void *state, uint64_t written, double interval_s, double page_rate);
    /* Read the dirty bitmap within a round too, so a page written before
     * its turn in the round is not sent again in the next one (the engine
     * does this; Xen's loop and QEMU's do not, so the baselines say no). */
    bool sync_in_round;
} ms_policy_ops;

extern const ms_policy_ops ms_policy_precopy;
extern const ms_policy_ops ms_policy_fragmented;
extern const ms_policy_ops ms_policy_downtime;
/* NULL if unknown. */
const ms_policy_ops *ms_policy_by_name(const char *name);
/* "precopy|fragmented|downtime" */
const char *ms_policy_names(void);

/* ======================= scheduler ===================================== */

typedef struct ms_sched ms_sched;

/* npages: the most pages the source will ever number (bitmaps are that
 * many bits). MS_ERR_INVAL for an unknown policy name or a bad config. */
int ms_sched_new(const char *policy, const ms_policy_config *cfg, uint64_t npages,
                 uint32_t page_size, ms_sched **out);
void ms_sched_free(ms_sched *s);

typedef struct ms_sched_round {
    int decision;            /* enum ms_decision */
    uint64_t dirty_pages;    /* pages in the bitmap passed in */
    uint64_t send_pages;     /* pages left in the bitmap: send these now */
    uint64_t pending_pages;  /* pages held back after this plan */
    uint32_t deferred_fragments;
    const uint32_t *order;   /* fragments in send order (nfragments entries) */
    const uint32_t *frag_send; /* pages to send now, per fragment */
    uint32_t nfragments;
    double est_stop_s;
    char reason[128];
} ms_sched_round;

/* Plan round `round`. In: `bitmap` = pages dirtied since the previous call
 * (round 0: every page the source has; the caller sets them). Out:
 * `bitmap` = pages to send now. Pages of deferred fragments move to the
 * pending set; pages of fragments no longer deferred move back. With
 * STOP_NOW the whole bitmap moves to pending (it is sent by the final
 * round). interval_s: time covered by the bitmap; elapsed_s: since start. */
int ms_sched_plan(ms_sched *s, uint32_t round, uint64_t *bitmap, double interval_s,
                  double elapsed_s, ms_sched_round *out);
/* Report the live round just sent (same round number). Returns
 * MS_DECIDE_CONTINUE or MS_DECIDE_STOP_AFTER (pause now), or an error. */
int ms_sched_sent(ms_sched *s, const ms_round_done *d);
/* The engine, after each live bitmap read: `written` distinct pages were
 * written over the last `interval_s` seconds (passed to the policy). */
void ms_sched_sample(ms_sched *s, uint64_t written, double interval_s);
/* Final round: OR every pending page into `bitmap` (the final dirty
 * bitmap read after the pause), clear the pending set, and return the
 * number of pages to send. */
uint64_t ms_sched_final(ms_sched *s, uint64_t *bitmap);

uint32_t ms_sched_fragment_pages(const ms_sched *s);
uint32_t ms_sched_nfragments(const ms_sched *s);
const uint64_t *ms_sched_pending(const ms_sched *s);
uint64_t ms_sched_pending_count(const ms_sched *s);
/* Page budget that deferral must stay within right now (fragmented; 0 for
 * others): defer_share * downtime target * measured page rate. */
uint64_t ms_sched_defer_budget(const ms_sched *s);
const char *ms_sched_policy_name(const ms_sched *s);
/* Why the policy stopped (after a stop decision from plan or sent). */
const char *ms_sched_reason(const ms_sched *s);
bool ms_sched_syncs_in_round(const ms_sched *s);
/* Current smoothed estimates (what the next plan will see). */
double ms_sched_page_rate(const ms_sched *s);
double ms_sched_comp_ratio(const ms_sched *s);

/* ======================= report ======================================== */

typedef struct ms_round_record {
    uint32_t round;
    bool final;              /* the stop-and-copy round */
    uint64_t dirty_pages;    /* pages in the bitmap read for this round */
    uint64_t sent_pages;
    uint64_t raw_bytes, wire_bytes;
    uint64_t pending_pages;  /* held back after planning this round */
    uint32_t deferred_fragments;
    double t_start_s;        /* since migration start */
    double time_s;
    double est_stop_s;
    int decision;
} ms_round_record;

typedef struct ms_migration_report {
    char policy[32];
    char source[128];        /* the page source's description */
    char chain[MS_CHAIN_TEXT_MAX];
    char link[96];           /* "loopback tcp x2", "sim 1 Gbit/s 1 ms", ... */
    bool simulated;
    uint64_t npages;
    uint32_t page_size;
    uint32_t fragment_pages;
    double downtime_target_ms;
    double total_s;          /* start of round 0 to destination complete */
    double downtime_s;       /* pause to destination complete */
    double live_s;           /* start to pause */
    uint32_t live_rounds;    /* rounds sent before the pause */
    uint64_t pages_sent, raw_bytes, wire_bytes;
    uint64_t final_pages;    /* sent while paused */
    uint32_t max_deferred_fragments;
    uint64_t deferred_pages_final; /* pending pages that the final round carried */
    uint32_t syncs_in_rounds;      /* bitmap reads within rounds */
    char stop_reason[128];
    /* Verification: done only when the destination image is visible. */
    bool verify_done;
    bool verified;           /* every page equal to the source at the pause */
    uint64_t verify_mismatches;
    int64_t verify_first_bad;/* first differing page, -1 none */
    double verify_s;
    /* ms_page_hashes_digest of the source at the pause (stream.h): equal to
     * the image digest `migstream recv` prints iff the images are equal. */
    bool have_digest;
    uint64_t image_digest;
    double cpu_s;            /* process CPU time during the migration */
    ms_round_record *rounds;
    size_t nrounds, rounds_cap;
} ms_migration_report;

void ms_report_free(ms_migration_report *r);
void ms_report_print(const ms_migration_report *r, FILE *f);
/* One JSON object, no trailing newline. */
void ms_report_json(const ms_migration_report *r, FILE *f);
/* A table of several reports of one workload, with each one's change in
 * total time, downtime and wire bytes against the `precopy` report. */
void ms_report_compare(const ms_migration_report *reps, size_t n, FILE *f);
/* Write PREFIX.dat and PREFIX.gp (pages sent and dirty pages per round,
 * one group per report) and run gnuplot to make PREFIX.png and PREFIX.svg.
 * MS_ERR_UNSUPPORTED if gnuplot is not installed (data files are kept). */
int ms_report_plot(const ms_migration_report *const *reps, size_t n, const char *prefix,
                   const char *title);
/* Run gnuplot on script `gp` (which writes the images); MS_ERR_UNSUPPORTED
 * naming the package when gnuplot is missing (the data and script stay in
 * PREFIX.dat and gp). */
int ms_gnuplot_run(const char *gp, const char *prefix);

/* Per-page XXH3-64 of `count` pages starting at `mem` (pages beyond
 * mem_len count as zero pages). */
void ms_page_hashes(const uint8_t *mem, uint64_t mem_len, uint64_t first, uint64_t count,
                    uint32_t page_size, uint64_t *out);

/* ======================= engine ======================================== */

enum ms_source_after {
    MS_AFTER_RESUME = 0,      /* let the source run again (it stays the original) */
    MS_AFTER_STAY_PAUSED = 1, /* leave it stopped: the destination took over */
};

typedef struct ms_engine_config {
    const char *policy;          /* default "fragmented" */
    ms_policy_config policy_cfg;
    ms_session_config session;   /* chain, workers, max_bandwidth, key, timeouts */
    unsigned channels;           /* parallel TCP connections; 0 = 1 */
    const char *to;              /* NULL or "local": receiver in this process on
                                  * loopback TCP; else "HOST:PORT" of `migstream recv` */
    const char *local_listen;    /* local receiver's address (default 127.0.0.1) */
    const char *receiver_netns;  /* local receiver's socket in this network namespace
                                  * (a name under /var/run/netns or a path), so the
                                  * data crosses a real link, e.g. a tbf veth pair */
    bool verify;                 /* compare destination with source at the pause */
    int after;                   /* enum ms_source_after (on success; failure resumes) */
    const char *record_trace;    /* write the dirty trace here (sources' trace format) */
    uint32_t batch_pages;        /* pages per read/queue call; 0 = 256 */
    bool progress;               /* one progress line per round on stderr */
} ms_engine_config;

void ms_engine_config_default(ms_engine_config *c);

/* Migrate `src` live. Starts tracking, runs the rounds, pauses, sends the
 * final round, waits for the destination, verifies (local receiver), then
 * resumes the source or leaves it paused. On failure the source is resumed.
 * Errors: those of the source, transport and pipeline; MS_ERR_VERIFY if the
 * destination differs from the source (rep says where). */
int ms_migrate(ms_page_source *src, const ms_engine_config *cfg, ms_migration_report *rep);

/* Lower level: run the rounds over an already open sender (the caller
 * still frees it; this call sends END with ms_sender_finish, which is when
 * the destination is complete). `verify` (may be NULL) is called while the
 * source is still paused, with the per-page hashes of the source at the
 * pause; it returns MS_OK, or MS_ERR_VERIFY with *mismatches and
 * *first_bad set. */
typedef int (*ms_verify_fn)(void *ctx, const uint64_t *hashes, uint64_t npages,
                            uint32_t page_size, uint64_t *mismatches, int64_t *first_bad);
int ms_migrate_sender(ms_page_source *src, ms_sender *snd, const ms_engine_config *cfg,
                      ms_verify_fn verify, void *verify_ctx, ms_migration_report *rep);

/* ======================= simulator ===================================== */

typedef struct ms_link_model {
    double bandwidth;      /* wire bytes/s (required) */
    double latency_s;      /* one way; each round barrier costs a round trip */
    double ratio;          /* wire/raw for a page's first send; 0 = 1 */
    double resend_ratio;   /* wire/raw for a page sent before (delta); 0 = ratio */
    double page_rate;      /* pipeline limit in pages/s (CPU); 0 = none */
    double frame_overhead; /* wire bytes per page of framing; 0 = 56/256 */
} ms_link_model;

/* Run a policy over a simulated source (ops->advance must exist) in
 * virtual time: each round's duration comes from the link model, and the
 * source advances by it. No page content moves. max_s bounds virtual time
 * (0: 3600 s) so a broken policy cannot loop forever. */
int ms_simulate(ms_page_source *src, const char *policy, const ms_policy_config *pcfg,
                const ms_link_model *link, double max_s, ms_migration_report *rep);

#ifdef __cplusplus
}
#endif
#endif
