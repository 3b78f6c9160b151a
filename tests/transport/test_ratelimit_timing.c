/* TIMING TEST: checks the token bucket against the wall clock. Tolerances
 * are deliberately generous (a loaded 2-core CI machine), but a limiter
 * that lets bursts through, forgets to sleep or double-charges fails. */
#include <pthread.h>
#include <stdio.h>

#include "tests/ms_test.h"
#include "transport/transport.h"

#define MB 1000000ull

static double take_all(ms_ratelimit *rl, uint64_t total, uint64_t chunk)
{
    uint64_t t0 = ms_now_ns();
    for (uint64_t done = 0; done < total; done += chunk)
        ms_ratelimit_take(rl, chunk);
    return (double)(ms_now_ns() - t0) / 1e6;
}

/* 4 MB at 20 MB/s: 200 ms, within 10%. */
static void test_single_taker(void)
{
    ms_ratelimit *rl = ms_ratelimit_new(20 * MB);
    CU_ASSERT_FATAL(rl != NULL);
    double ms = take_all(rl, 4 * MB, 4 * MB / 64);
    printf("\n    4 MB at 20 MB/s in 64 takes: %.1f ms (want 200 +- 20)\n", ms);
    CU_ASSERT(ms >= 180 && ms <= 220);
    ms_ratelimit_free(rl);
}

typedef struct taker {
    ms_ratelimit *rl;
    uint64_t total, chunk;
} taker;

static void *taker_main(void *p)
{
    taker *t = p;
    take_all(t->rl, t->total, t->chunk);
    return NULL;
}

/* Four threads share one cap: together they still get 20 MB/s. */
static void test_shared_takers(void)
{
    ms_ratelimit *rl = ms_ratelimit_new(20 * MB);
    taker t = {.rl = rl, .total = 1 * MB, .chunk = 50000};
    pthread_t th[4];
    uint64_t t0 = ms_now_ns();
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, taker_main, &t);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    double ms = (double)(ms_now_ns() - t0) / 1e6;
    printf("\n    4 x 1 MB at 20 MB/s shared: %.1f ms (want 200 +- 20)\n", ms);
    CU_ASSERT(ms >= 180 && ms <= 220);
    ms_ratelimit_free(rl);
}

/* Idle time earns at most the burst (rate/20 = 50 ms here), not more. */
static void test_burst_bounded(void)
{
    ms_ratelimit *rl = ms_ratelimit_new(20 * MB);
    struct timespec idle = {0, 300 * 1000000L};
    nanosleep(&idle, NULL);
    double ms_burst = take_all(rl, 1 * MB, 1 * MB);  /* saved-up burst */
    double ms_more = take_all(rl, 2 * MB, 1 * MB);   /* no credit left */
    printf("\n    after idle: 1 MB burst %.1f ms, 2 MB more %.1f ms (want ~0, 100)\n", ms_burst,
           ms_more);
    CU_ASSERT(ms_burst < 20);
    CU_ASSERT(ms_more >= 90 && ms_more <= 120);
    ms_ratelimit_free(rl);
}

/* A low rate still gets its 64 KiB minimum burst and a long single take
 * larger than the burst is charged in full. */
static void test_low_rate(void)
{
    ms_ratelimit *rl = ms_ratelimit_new(1 * MB);
    double ms = take_all(rl, 200000, 200000);
    printf("\n    200 kB at 1 MB/s: %.1f ms (want 200 +- 20)\n", ms);
    CU_ASSERT(ms >= 180 && ms <= 220);
    ms_ratelimit_free(rl);
}

static const ms_test_case cases[] = {
    {"4 MB at 20 MB/s (timing)", test_single_taker},
    {"4 threads share the cap (timing)", test_shared_takers},
    {"burst bounded after idle (timing)", test_burst_bounded},
    {"large take at low rate (timing)", test_low_rate},
    {NULL, NULL},
};

MS_TEST_MAIN(ms_test_add_suite("transport-ratelimit-timing", cases))
