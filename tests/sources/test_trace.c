/* trace: writer -> reader round trip, playback in virtual time, and
 * refusal of every corrupt or truncated file with a clear error. */
#include "sources/sources.h"
#include "tests/ms_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define NP 2000u
#define NREC 20

typedef struct sample {
    char path[64];
    uint64_t *bms[NREC]; /* what each record holds */
    uint64_t t[NREC];    /* its timestamp, ns */
    uint8_t *bytes;      /* the file */
    size_t len;
} sample;

static sample g;

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b && fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

/* Records: empty, one page, sparse, dense, full, a repeat of the same
 * time (dt = 0), and the last page of the space. */
static int write_sample(void)
{
    snprintf(g.path, sizeof g.path, "/tmp/ms-trace-test-%d.trace", (int)getpid());
    ms_trace_writer *w;
    int rc = ms_trace_writer_open(g.path, NP, MS_PAGE_SIZE, "test workload", &w);
    if (rc)
        return rc;
    uint64_t rng = 7, t = 0;
    for (int r = 0; r < NREC && !rc; r++) {
        g.bms[r] = calloc(ms_bitmap_words(NP), 8);
        double density = r == 0 ? 0 : r == 4 ? 1.0 : r % 3 == 0 ? 0.5 : 0.02;
        for (uint64_t p = 0; p < NP; p++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            if ((double)(rng >> 11) * 0x1.0p-53 < density)
                ms_bit_set(g.bms[r], p);
        }
        if (r == 1) {
            memset(g.bms[r], 0, ms_bitmap_words(NP) * 8);
            ms_bit_set(g.bms[r], NP - 1);
        }
        t += r == 7 ? 0 : 100000000ull + (uint64_t)r * 1000000;
        g.t[r] = t;
        rc = ms_trace_writer_add(w, t, g.bms[r], NP);
    }
    int crc = ms_trace_writer_close(w);
    if (!rc)
        rc = crc;
    if (!rc)
        g.bytes = slurp(g.path, &g.len);
    return rc ? rc : g.bytes ? MS_OK : MS_ERR_IO;
}

static int suite_init(void) { return write_sample() == MS_OK ? 0 : 1; }

static int suite_clean(void)
{
    unlink(g.path);
    for (int r = 0; r < NREC; r++)
        free(g.bms[r]);
    free(g.bytes);
    return 0;
}

static void test_round_trip(void)
{
    ms_page_source *s = NULL;
    int rc = ms_trace_source_open(g.path, NULL, &s);
    if (rc)
        fprintf(stderr, "%s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    CU_ASSERT_EQUAL(s->npages, NP);
    CU_ASSERT_EQUAL(s->page_size, MS_PAGE_SIZE);
    ms_trace_info info;
    CU_ASSERT_EQUAL(ms_trace_source_info(s, &info), MS_OK);
    CU_ASSERT_EQUAL(info.records, NREC);
    CU_ASSERT_EQUAL(info.duration_ns, g.t[NREC - 1]);
    CU_ASSERT_STRING_EQUAL(info.desc, "test workload");
    printf("  %s (%zu bytes)\n", s->desc, g.len);
    CU_ASSERT_EQUAL(ms_source_start(s), MS_OK);
    uint64_t *bm = calloc(ms_bitmap_words(NP), 8);
    uint64_t now = 0, total = 0;
    int exact = 0;
    for (int r = 0; r < NREC; r++) {
        if (r == 7)
            continue; /* same instant as record 6: played with it */
        CU_ASSERT_EQUAL(s->ops->advance(s, (double)(g.t[r] - now) / 1e9), MS_OK);
        now = g.t[r];
        memset(bm, 0, ms_bitmap_words(NP) * 8);
        CU_ASSERT_EQUAL(ms_source_dirty(s, bm), MS_OK);
        uint64_t *want = g.bms[r];
        uint64_t merged[ms_bitmap_words(NP)];
        if (r == 6) {
            for (size_t i = 0; i < ms_bitmap_words(NP); i++)
                merged[i] = g.bms[6][i] | g.bms[7][i];
            want = merged;
        }
        exact += memcmp(bm, want, ms_bitmap_words(NP) * 8) == 0;
        total += ms_bitmap_count(bm, NP);
    }
    CU_ASSERT_EQUAL(exact, NREC - 1);
    CU_ASSERT(total > 0);
    /* Past the end (no loop): idle. */
    CU_ASSERT_EQUAL(s->ops->advance(s, 100.0), MS_OK);
    memset(bm, 0, ms_bitmap_words(NP) * 8);
    CU_ASSERT_EQUAL(ms_source_dirty(s, bm), MS_OK);
    CU_ASSERT_EQUAL(ms_bitmap_count(bm, NP), 0);
    free(bm);
    ms_source_destroy(s);
}

static void test_partial_and_loop(void)
{
    ms_trace_opts o = {.loop = true, .seed = 5};
    ms_page_source *s = NULL;
    CU_ASSERT_FATAL(ms_trace_source_open_mem(g.bytes, g.len, &o, &s) == MS_OK);
    uint64_t *a = calloc(ms_bitmap_words(NP), 8), *b = calloc(ms_bitmap_words(NP), 8);
    /* Record 3 (dense) in two halves: a spread-out half, then the rest. */
    double t2 = (double)g.t[2] / 1e9, t3 = (double)g.t[3] / 1e9;
    CU_ASSERT_EQUAL(s->ops->advance(s, t2), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    memset(a, 0, ms_bitmap_words(NP) * 8);
    CU_ASSERT_EQUAL(s->ops->advance(s, (t3 - t2) / 2), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    CU_ASSERT_EQUAL(s->ops->advance(s, (t3 - t2) / 2 + 1e-9), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, b), MS_OK);
    uint64_t na = ms_bitmap_count(a, NP), nb = ms_bitmap_count(b, NP), n3 = ms_bitmap_count(g.bms[3], NP);
    printf("  record 3 (%llu pages) played as %llu + %llu\n", (unsigned long long)n3, (unsigned long long)na,
           (unsigned long long)nb);
    CU_ASSERT(na >= n3 / 2 - 1 && na <= n3 / 2 + 1);
    bool disjoint_union = true;
    uint64_t lo_half = 0;
    for (uint64_t p = 0; p < NP; p++) {
        disjoint_union = disjoint_union && !(ms_bit_test(a, p) && ms_bit_test(b, p)) &&
                         (ms_bit_test(a, p) || ms_bit_test(b, p)) == ms_bit_test(g.bms[3], p);
        lo_half += p < NP / 2 && ms_bit_test(a, p);
    }
    CU_ASSERT(disjoint_union);
    CU_ASSERT(lo_half > na / 3 && lo_half < na * 2 / 3); /* spread, not the lowest pages first */
    /* Paused: nothing plays. */
    CU_ASSERT_EQUAL(ms_source_pause(s), MS_OK);
    memset(a, 0, ms_bitmap_words(NP) * 8);
    CU_ASSERT_EQUAL(s->ops->advance(s, 1000.0), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    CU_ASSERT_EQUAL(ms_bitmap_count(a, NP), 0);
    CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    /* Loop: once past the end, record 1 (the last page alone) comes again. */
    double dur = (double)g.t[NREC - 1] / 1e9;
    CU_ASSERT_EQUAL(s->ops->advance(s, dur - t3 + 1e-9), MS_OK); /* to the end */
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    CU_ASSERT_EQUAL(s->ops->advance(s, (double)g.t[0] / 1e9), MS_OK);
    memset(a, 0, ms_bitmap_words(NP) * 8);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    CU_ASSERT_EQUAL(ms_bitmap_count(a, NP), 0); /* record 0 is empty */
    CU_ASSERT_EQUAL(s->ops->advance(s, (double)(g.t[1] - g.t[0]) / 1e9), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    CU_ASSERT(memcmp(a, g.bms[1], ms_bitmap_words(NP) * 8) == 0);
    /* A step of many whole loops dirties every recorded page, at once. */
    uint64_t t0 = ms_now_ns();
    CU_ASSERT_EQUAL(s->ops->advance(s, 1e7), MS_OK);
    memset(a, 0, ms_bitmap_words(NP) * 8);
    CU_ASSERT_EQUAL(ms_source_dirty(s, a), MS_OK);
    uint64_t uni[ms_bitmap_words(NP)];
    memset(uni, 0, sizeof uni);
    for (int r = 0; r < NREC; r++)
        for (size_t i = 0; i < ms_bitmap_words(NP); i++)
            uni[i] |= g.bms[r][i];
    CU_ASSERT(memcmp(a, uni, sizeof uni) == 0);
    CU_ASSERT(ms_now_ns() - t0 < 1000000000ull);
    /* Content: stable until a page is dirtied again. */
    uint8_t p1[MS_PAGE_SIZE], p2[MS_PAGE_SIZE];
    uint64_t idx = NP - 1;
    CU_ASSERT_EQUAL(ms_source_read(s, &idx, 1, p1), MS_OK);
    CU_ASSERT_EQUAL(ms_source_read(s, &idx, 1, p2), MS_OK);
    CU_ASSERT(memcmp(p1, p2, MS_PAGE_SIZE) == 0);
    free(a);
    free(b);
    ms_source_destroy(s);
}

static bool refused(const uint8_t *data, size_t len, int *code)
{
    ms_page_source *s = NULL;
    int rc = ms_trace_source_open_mem(data, len, NULL, &s);
    if (rc == MS_OK) {
        ms_source_destroy(s);
        return false;
    }
    *code = rc;
    return s == NULL && ms_last_error()[0] != 0;
}

static void test_corruption(void)
{
    uint8_t *copy = malloc(g.len + 16);
    int code;
    size_t accepted = 0, by_code[32] = {0};
    /* Every byte, three different corruptions each. */
    const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < g.len; i++)
        for (size_t f = 0; f < 3; f++) {
            memcpy(copy, g.bytes, g.len);
            copy[i] ^= flips[f];
            if (!refused(copy, g.len, &code))
                accepted++;
            else
                by_code[-code]++;
        }
    printf("  %zu corrupted files: %zu accepted; corrupt %zu, truncated %zu, version %zu\n", g.len * 3, accepted,
           by_code[-MS_ERR_CORRUPT], by_code[-MS_ERR_TRUNCATED], by_code[-MS_ERR_VERSION]);
    CU_ASSERT_EQUAL(accepted, 0);
    /* Every truncation. */
    size_t trunc_ok = 0;
    for (size_t len = 0; len < g.len; len++)
        trunc_ok += refused(g.bytes, len, &code) && (code == MS_ERR_TRUNCATED || code == MS_ERR_CORRUPT);
    CU_ASSERT_EQUAL(trunc_ok, g.len);
    refused(g.bytes, g.len - 1, &code);
    printf("  cut by one byte: %s\n", ms_last_error());
    refused(g.bytes, g.len / 2, &code);
    printf("  cut in half: %s\n", ms_last_error());
    /* Trailing garbage, a wrong magic. */
    memcpy(copy, g.bytes, g.len);
    memset(copy + g.len, 0, 16);
    CU_ASSERT(refused(copy, g.len + 16, &code) && code == MS_ERR_CORRUPT);
    printf("  extra bytes: %s\n", ms_last_error());
    /* A well-sealed header asking for a page larger than the stream layer
     * carries (fuzzer find: a 2 GiB page buffer). */
    memcpy(copy, g.bytes, g.len);
    ms_put_le32(copy + 12, 0x80000000u);
    size_t hlen = 34 + ms_get_le16(copy + 32);
    ms_put_le32(copy + hlen, XXH32(copy, hlen, 0));
    CU_ASSERT(refused(copy, g.len, &code) && code == MS_ERR_CORRUPT);
    CU_ASSERT(strstr(ms_last_error(), "page size 2147483648") != NULL);
    printf("  huge page size: %s\n", ms_last_error());
    memcpy(copy, "NOTATRACE", 9);
    CU_ASSERT(refused(copy, g.len, &code) && code == MS_ERR_CORRUPT);
    printf("  magic: %s\n", ms_last_error());
    free(copy);
}

static void test_writer_errors(void)
{
    ms_trace_writer *w;
    CU_ASSERT_EQUAL(ms_trace_writer_open("/nonexistent-dir/x.trace", 10, 4096, NULL, &w), MS_ERR_IO);
    printf("  %s\n", ms_last_error());
    CU_ASSERT_EQUAL(ms_trace_writer_open(g.path, 0, 4096, NULL, &w), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_trace_writer_open(g.path, 10, 1000, NULL, &w), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_trace_writer_open(g.path, 10, 1u << 17, NULL, &w), MS_ERR_INVAL);
    char path[80];
    snprintf(path, sizeof path, "%s.2", g.path);
    CU_ASSERT_FATAL(ms_trace_writer_open(path, 100, 4096, NULL, &w) == MS_OK);
    uint64_t bm[2] = {5, 0};
    CU_ASSERT_EQUAL(ms_trace_writer_add(w, 100, bm, 100), MS_OK);
    CU_ASSERT_EQUAL(ms_trace_writer_add(w, 50, bm, 100), MS_ERR_INVAL);
    printf("  %s\n", ms_last_error());
    CU_ASSERT_EQUAL(ms_trace_writer_add(w, 200, bm, 101), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_trace_writer_close(w), MS_OK);
    ms_page_source *s;
    CU_ASSERT_EQUAL(ms_trace_source_open(path, NULL, &s), MS_OK);
    ms_source_destroy(s);
    unlink(path);
    CU_ASSERT_EQUAL(ms_trace_source_open(path, NULL, &s), MS_ERR_IO);
    printf("  %s\n", ms_last_error());
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("sources/trace", suite_init, suite_clean);
    CU_add_test(su, "write then replay, record by record", test_round_trip);
    CU_add_test(su, "partial intervals, pause and loop", test_partial_and_loop);
    CU_add_test(su, "corrupt and truncated traces refused", test_corruption);
    CU_add_test(su, "writer errors", test_writer_errors);
    return ms_test_run_all();
}
