/* `downtime`: a QEMU-like downtime-target policy, the second baseline.
 *
 * QEMU iterates until the remaining dirty memory could be sent within the
 * downtime limit at the bandwidth measured so far, then stops the guest and
 * sends the rest (migration_iteration_run / migration_completion), with no
 * per-fragment knowledge. We estimate the stop-and-copy time with the same
 * end-to-end page rate the fragmented policy uses, so the two differ only in
 * what they decide, not in how they measure. max_rounds is the safety that
 * QEMU leaves to the operator (it would iterate forever on a workload that
 * never converges). */
#include <stdio.h>
#include <stdlib.h>

#include "fragsched/fragsched.h"

typedef struct downtime_state {
    ms_policy_config cfg;
} downtime_state;

static int downtime_create(const ms_policy_config *cfg, uint64_t npages, uint32_t page_size,
                           void **state)
{
    (void)npages;
    (void)page_size;
    downtime_state *p = calloc(1, sizeof(*p));
    if (!p)
        return ms_error(MS_ERR_NOMEM, "downtime policy: out of memory");
    p->cfg = *cfg;
    *state = p;
    return MS_OK;
}

static int downtime_plan(void *state, const ms_round_view *v, ms_plan *out)
{
    downtime_state *p = state;
    out->decision = MS_DECIDE_CONTINUE;
    if (v->round == 0 || v->page_rate <= 0)
        return MS_OK; /* nothing measured yet: the first pass sends everything */
    uint64_t remaining = v->dirty_count + v->pending_count;
    out->est_stop_s = (double)remaining / v->page_rate;
    double target = p->cfg.downtime_ms / 1000.0;
    if (out->est_stop_s <= target) {
        out->decision = MS_DECIDE_STOP_NOW;
        snprintf(out->reason, sizeof(out->reason),
                 "%llu dirty pages fit the %.0f ms limit (estimated %.1f ms)",
                 (unsigned long long)remaining, p->cfg.downtime_ms, out->est_stop_s * 1000);
    } else if (v->round >= p->cfg.max_rounds) {
        out->decision = MS_DECIDE_STOP_NOW;
        snprintf(out->reason, sizeof(out->reason),
                 "max %u iterations reached (estimated stop-and-copy %.1f ms)",
                 p->cfg.max_rounds, out->est_stop_s * 1000);
    }
    return MS_OK;
}

static void downtime_destroy(void *state) { free(state); }

const ms_policy_ops ms_policy_downtime = {
    .name = "downtime",
    .summary = "QEMU-like: iterate until the dirty pages fit the downtime limit",
    .create = downtime_create,
    .plan = downtime_plan,
    .sent = NULL,
    .destroy = downtime_destroy,
};
