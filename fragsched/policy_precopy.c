/* `precopy`: Xen 4.17's default live-migration policy, call for call.
 *
 * libxc's send_memory_live() (tools/libs/guest/xg_sr_save.c) keeps a
 * struct precopy_stats and asks the policy twice per iteration:
 *   1. before sending, with the dirty count of the bitmap about to be sent
 *      (p2m_size for the first full pass) — STOP_AND_COPY here still sends
 *      that bitmap live, then suspends;
 *   2. after sending, with iteration = rounds sent so far, total_written
 *      increased by the dirty count just sent and dirty_count = -1 — STOP
 *      here suspends without reading another bitmap.
 * After the loop the domain is suspended and the final bitmap (plus
 * anything deferred) is sent. The plan/sent hooks below keep the same
 * struct through the same updates, so the decisions are Xen's own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"

int ms_xen_simple_precopy_policy(ms_precopy_stats st)
{
    return ((st.dirty_count >= 0 && st.dirty_count < MS_XEN_SPP_TARGET_DIRTY_COUNT) ||
            st.iteration >= MS_XEN_SPP_MAX_ITERATIONS)
               ? MS_XGS_POLICY_STOP_AND_COPY
               : MS_XGS_POLICY_CONTINUE_PRECOPY;
}

typedef struct precopy_state {
    ms_precopy_stats st;
} precopy_state;

static int precopy_create(const ms_policy_config *cfg, uint64_t npages, uint32_t page_size,
                          void **state)
{
    (void)cfg;
    (void)page_size;
    precopy_state *p = calloc(1, sizeof(*p));
    if (!p)
        return ms_error(MS_ERR_NOMEM, "precopy policy: out of memory");
    /* send_memory_live() starts with dirty_count = p2m_size. */
    p->st.dirty_count = (long)npages;
    *state = p;
    return MS_OK;
}

static int to_decision(int xgs)
{
    switch (xgs) {
    case MS_XGS_POLICY_CONTINUE_PRECOPY: return MS_DECIDE_CONTINUE;
    case MS_XGS_POLICY_STOP_AND_COPY: return MS_DECIDE_STOP_AFTER;
    default: return MS_DECIDE_ABORT;
    }
}

static int precopy_plan(void *state, const ms_round_view *v, ms_plan *out)
{
    precopy_state *p = state;
    p->st.dirty_count = (long)v->dirty_count;
    out->decision = to_decision(ms_xen_simple_precopy_policy(p->st));
    if (out->decision == MS_DECIDE_STOP_AFTER)
        snprintf(out->reason, sizeof(out->reason),
                 "xen: %ld dirty pages < %d, iteration %u (sent live, then suspend)",
                 p->st.dirty_count, MS_XEN_SPP_TARGET_DIRTY_COUNT, p->st.iteration);
    return MS_OK;
}

static int precopy_sent(void *state, const ms_round_view *v, const ms_round_done *d, char *reason)
{
    (void)d;
    precopy_state *p = state;
    p->st.iteration = v->round + 1;
    p->st.total_written += (unsigned long)p->st.dirty_count;
    p->st.dirty_count = -1;
    int dec = to_decision(ms_xen_simple_precopy_policy(p->st));
    if (dec == MS_DECIDE_STOP_AFTER)
        snprintf(reason, 128, "xen: iteration %u >= %d (total written %lu pages)",
                 p->st.iteration, MS_XEN_SPP_MAX_ITERATIONS, p->st.total_written);
    return dec;
}

static void precopy_destroy(void *state) { free(state); }

const ms_policy_ops ms_policy_precopy = {
    .name = "precopy",
    .summary = "Xen 4.17 simple_precopy_policy: stop at < 50 dirty pages or after 5 iterations",
    .create = precopy_create,
    .plan = precopy_plan,
    .sent = precopy_sent,
    .destroy = precopy_destroy,
};
