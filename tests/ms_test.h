/* Shared helpers for the CUnit suites. */
#ifndef MS_TEST_H
#define MS_TEST_H

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>

/* A fixed-seed xorshift64: the same "random" sizes and contents on every
 * run, so a failure reproduces. One sequence per test program. */
static unsigned long long ms_test_rng_state = 0x9e3779b97f4a7c15ull;
static inline unsigned long long ms_test_rand(void)
{
    ms_test_rng_state ^= ms_test_rng_state << 13;
    ms_test_rng_state ^= ms_test_rng_state >> 7;
    ms_test_rng_state ^= ms_test_rng_state << 17;
    return ms_test_rng_state;
}

/* Exit code meson treats as "skipped". */
#define MS_TEST_SKIP 77

/* Run every registered suite verbosely; exit status 1 if anything failed. */
static inline int ms_test_run_all(void)
{
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (ran == 0) {
        fprintf(stderr, "no test ran\n");
        return 1;
    }
    return fails ? 1 : 0;
}

/* Register a suite of tests given as {name, fn} pairs ending in {NULL, NULL}. */
typedef struct ms_test_case {
    const char *name;
    void (*fn)(void);
} ms_test_case;

static inline void ms_test_add_suite(const char *name, const ms_test_case *cases)
{
    CU_pSuite s = CU_add_suite(name, NULL, NULL);
    if (!s) {
        fprintf(stderr, "CUnit: cannot add suite %s\n", name);
        exit(1);
    }
    for (; cases->name; cases++)
        CU_add_test(s, cases->name, cases->fn);
}

#define MS_TEST_MAIN(...)                                                  \
    int main(void)                                                         \
    {                                                                      \
        if (CU_initialize_registry() != CUE_SUCCESS)                       \
            return 1;                                                      \
        __VA_ARGS__;                                                       \
        return ms_test_run_all();                                          \
    }

#endif
