/* Bandwidth cap: one token bucket shared by all channels of a session.
 *
 * Tokens are bytes. A caller takes what it needs even if that drives the
 * bucket negative, then sleeps until the debt would be repaid at the
 * configured rate. Debt (instead of waiting for tokens to appear) keeps each
 * caller to one lock and one sleep, serves callers in arrival order and
 * handles requests larger than the burst. The bucket starts empty so a
 * transfer measured from its first byte never exceeds the cap; the burst only
 * bounds what an idle period may save up. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "transport/transport.h"

#define RL_MIN_BURST (64u * 1024u)

struct ms_ratelimit {
    pthread_mutex_t lock;
    double rate;     /* bytes per ns */
    double burst;    /* bytes */
    double tokens;   /* bytes; negative = debt */
    uint64_t last_ns;
    bool unlimited;
};

ms_ratelimit *ms_ratelimit_new(uint64_t bytes_per_s)
{
    ms_ratelimit *rl = calloc(1, sizeof(*rl));
    if (!rl) {
        ms_error(MS_ERR_NOMEM, "rate limiter: out of memory");
        return NULL;
    }
    pthread_mutex_init(&rl->lock, NULL);
    rl->unlimited = bytes_per_s == 0;
    rl->rate = (double)bytes_per_s / 1e9;
    double burst = (double)bytes_per_s / 20.0; /* 50 ms worth */
    rl->burst = burst > RL_MIN_BURST ? burst : RL_MIN_BURST;
    rl->tokens = 0;
    rl->last_ns = ms_now_ns();
    return rl;
}

void ms_ratelimit_free(ms_ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

static void sleep_until(uint64_t when_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(when_ns / 1000000000ull),
                          .tv_nsec = (long)(when_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

void ms_ratelimit_take(ms_ratelimit *rl, uint64_t n)
{
    if (!rl || rl->unlimited || n == 0)
        return;
    pthread_mutex_lock(&rl->lock);
    uint64_t now = ms_now_ns();
    rl->tokens += (double)(now - rl->last_ns) * rl->rate;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    rl->last_ns = now;
    rl->tokens -= (double)n;
    double debt = -rl->tokens;
    pthread_mutex_unlock(&rl->lock);
    if (debt > 0)
        sleep_until(now + (uint64_t)(debt / rl->rate));
}
