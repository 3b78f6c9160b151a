/* Helpers shared by the process-source tests: a tracker that keeps a copy
 * of the source's pages up to date round by round, as the migration engine
 * does, and a byte-for-byte check of that copy against the source. */
#ifndef MS_TEST_PROC_HELPERS_H
#define MS_TEST_PROC_HELPERS_H

#include "sources/sources.h"
#include "tests/ms_test.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exit with "skipped" unless process tracking can work here. */
static inline void require_process_tracking(void)
{
    if (geteuid() != 0) {
        printf("SKIP: process tracking tests need root (userfaultfd and ptrace on other processes)\n");
        exit(MS_TEST_SKIP);
    }
    if (ms_process_probe() != MS_OK) {
        printf("SKIP: %s\n", ms_last_error());
        exit(MS_TEST_SKIP);
    }
}

typedef struct mirror {
    ms_page_source *s;
    uint8_t *copy;     /* npages pages */
    uint64_t npages;
    uint64_t *bm;      /* ms_source_max_pages bits */
    uint64_t last_dirty;
    uint64_t total_dirty;
    int rounds;
} mirror;

static inline int mirror_fetch(mirror *m, const uint64_t *idx, size_t n)
{
    uint8_t *buf = malloc(n * MS_PAGE_SIZE);
    if (!buf)
        return MS_ERR_NOMEM;
    int rc = ms_source_read(m->s, idx, n, buf);
    for (size_t i = 0; !rc && i < n; i++)
        memcpy(m->copy + idx[i] * MS_PAGE_SIZE, buf + i * MS_PAGE_SIZE, MS_PAGE_SIZE);
    free(buf);
    return rc;
}

static inline int mirror_grow(mirror *m)
{
    if (m->s->npages <= m->npages)
        return MS_OK;
    uint8_t *c = realloc(m->copy, m->s->npages * MS_PAGE_SIZE);
    if (!c)
        return MS_ERR_NOMEM;
    memset(c + m->npages * MS_PAGE_SIZE, 0xAA, (m->s->npages - m->npages) * MS_PAGE_SIZE);
    m->copy = c;
    m->npages = m->s->npages;
    return MS_OK;
}

/* Start tracking and copy everything (round 0). */
static inline int mirror_start(mirror *m, ms_page_source *s)
{
    memset(m, 0, sizeof *m);
    m->s = s;
    m->bm = calloc(ms_bitmap_words(ms_source_max_pages(s)), 8);
    if (!m->bm)
        return MS_ERR_NOMEM;
    int rc = ms_source_start(s);
    if (!rc)
        rc = mirror_grow(m);
    uint64_t idx[256];
    for (uint64_t p = 0; !rc && p < m->npages;) {
        size_t n = 0;
        while (n < 256 && p < m->npages)
            idx[n++] = p++;
        rc = mirror_fetch(m, idx, n);
    }
    return rc;
}

/* One round: get-and-clear the dirty pages, then copy them. */
static inline int mirror_round(mirror *m)
{
    memset(m->bm, 0, ms_bitmap_words(ms_source_max_pages(m->s)) * 8);
    int rc = ms_source_dirty(m->s, m->bm);
    if (rc)
        return rc;
    if ((rc = mirror_grow(m)))
        return rc;
    m->last_dirty = ms_bitmap_count(m->bm, m->npages);
    m->total_dirty += m->last_dirty;
    m->rounds++;
    uint64_t idx[256];
    size_t n = 0;
    for (uint64_t p = 0; !rc && p < m->npages; p++) {
        if (!ms_bit_test(m->bm, p))
            continue;
        idx[n++] = p;
        if (n == 256) {
            rc = mirror_fetch(m, idx, n);
            n = 0;
        }
    }
    if (!rc && n)
        rc = mirror_fetch(m, idx, n);
    return rc;
}

/* Say where a page lives, for failure messages. */
static inline void report_page(ms_page_source *s, uint64_t page)
{
    ms_process_range *r;
    size_t n;
    fprintf(stderr, "page %llu differs", (unsigned long long)page);
    if (ms_process_source_pid(s) > 0 && ms_process_source_ranges(s, &r, &n) == MS_OK) {
        for (size_t i = 0; i < n; i++)
            if (page >= r[i].first_page && page < r[i].first_page + r[i].npages)
                fprintf(stderr, ": pid %d address 0x%llx (range 0x%llx, %llu pages, %s%s)", r[i].pid,
                        (unsigned long long)(r[i].addr + (page - r[i].first_page) * MS_PAGE_SIZE),
                        (unsigned long long)r[i].addr, (unsigned long long)r[i].npages,
                        r[i].shared ? "shared" : "private", r[i].tracked ? "" : ", untracked");
        free(r);
    }
    fprintf(stderr, "\n");
}

/* Pages whose copy differs from a fresh read (the source must be paused). */
static inline uint64_t mirror_diff(mirror *m, int *rc_out)
{
    uint64_t diff = 0;
    uint8_t *buf = malloc(256 * MS_PAGE_SIZE);
    uint64_t idx[256];
    int rc = buf ? MS_OK : MS_ERR_NOMEM;
    for (uint64_t p = 0; !rc && p < m->npages;) {
        size_t n = 0;
        while (n < 256 && p < m->npages)
            idx[n++] = p++;
        rc = ms_source_read(m->s, idx, n, buf);
        for (size_t i = 0; !rc && i < n; i++)
            if (memcmp(buf + i * MS_PAGE_SIZE, m->copy + idx[i] * MS_PAGE_SIZE, MS_PAGE_SIZE)) {
                if (diff < 5)
                    report_page(m->s, idx[i]);
                diff++;
            }
    }
    free(buf);
    *rc_out = rc;
    return diff;
}

static inline void mirror_free(mirror *m)
{
    free(m->copy);
    free(m->bm);
    m->copy = NULL;
    m->bm = NULL;
}

/* Stop-and-copy, then check the copy page for page. */
static inline void mirror_final_check(mirror *m)
{
    int rc = ms_source_pause(m->s);
    CU_ASSERT_EQUAL(rc, MS_OK);
    if (rc)
        fprintf(stderr, "pause: %s\n", ms_last_error());
    rc = mirror_round(m);
    CU_ASSERT_EQUAL(rc, MS_OK);
    if (rc)
        fprintf(stderr, "final round: %s\n", ms_last_error());
    uint64_t diff = mirror_diff(m, &rc);
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_EQUAL(diff, 0);
    printf("  %s: %d rounds, %llu pages dirty in total, final round %llu, %llu of %llu pages differ\n",
           m->s->desc, m->rounds, (unsigned long long)m->total_dirty, (unsigned long long)m->last_dirty,
           (unsigned long long)diff, (unsigned long long)m->npages);
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}



/* Register `cases`, or only those whose name contains $MS_TEST_ONLY. */
static inline void add_cases_filtered(const char *suite, const ms_test_case *cases)
{
    static ms_test_case picked[64];
    const char *only = getenv("MS_TEST_ONLY");
    size_t n = 0;
    for (; cases->name && n < 63; cases++)
        if (!only || strstr(cases->name, only))
            picked[n++] = *cases;
    picked[n] = (ms_test_case){NULL, NULL};
    ms_test_add_suite(suite, picked);
}
#endif
