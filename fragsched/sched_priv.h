/* Internals shared by the files of fragsched/ (not part of its interface). */
#ifndef MS_FRAGSCHED_PRIV_H
#define MS_FRAGSCHED_PRIV_H

#include "fragsched/fragsched.h"

/* Replace zero fields of a policy config by their defaults. */
void ms_policy_config_fill(ms_policy_config *c);
/* Pages that deferred fragments may hold at a given page rate. */
uint64_t ms_defer_budget_pages(const ms_policy_config *c, double page_rate);
/* Feed a round's measurements without asking the policy (final round). */
void ms_sched_note_round(ms_sched *s, const ms_round_done *d);

/* How the engine loop moves a round: the live engine reads and queues page
 * contents; the simulator only counts and lets virtual time pass. */
typedef struct ms_engine_backend {
    void *ctx;
    /* Seconds since an arbitrary origin. */
    double (*now)(void *ctx);
    int (*round_begin)(void *ctx, uint32_t round);
    /* Send the pages of `bm` in fragments frags[0..n), in that order; when
     * this returns their content has been read from the source. */
    int (*send_frags)(void *ctx, uint32_t round, const uint64_t *bm, const uint32_t *frags,
                      uint32_t n, uint32_t fragment_pages);
    /* Wait until the destination has the whole round; fill d. */
    int (*round_end)(void *ctx, uint32_t round, bool final, ms_round_done *d);
    /* After the final round: end the session (destination complete). */
    int (*finish)(void *ctx);
} ms_engine_backend;

typedef struct ms_engine_loop_opts {
    const char *policy;
    const ms_policy_config *pcfg;
    bool progress;
    bool real;              /* start/pause/resume the source and use its clock */
    void *trace;            /* trace writer (sources' API) or NULL */
    double max_s;           /* virtual-time bound (simulator); 0 none */
} ms_engine_loop_opts;

/* The round loop shared by ms_migrate_sender and ms_simulate. Leaves the
 * source paused on success (the caller verifies, then resumes or not). */
int ms_engine_loop(ms_page_source *src, const ms_engine_loop_opts *o, ms_engine_backend *b,
                   ms_migration_report *rep);

/* Dirty-trace recording through sources' trace writer (trace.c). */
int ms_engine_trace_open(void **trace, const char *path, const ms_page_source *src);
int ms_engine_trace_interval(void *trace, double t, const uint64_t *bm, uint64_t npages);
int ms_engine_trace_close(void *trace);

int ms_report_add_round(ms_migration_report *r, const ms_round_record *rec);

#endif
