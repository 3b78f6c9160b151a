/* model sources: the dirty sets they produce follow their laws, content is
 * deterministic and realistic, specs parse with clear errors. */
#include "sources/sources.h"
#include "tests/ms_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ms_page_source *make(int kind, uint64_t npages, double rate, uint64_t seed)
{
    ms_model_opts o = {.kind = kind, .npages = npages, .rate = rate, .seed = seed};
    ms_page_source *s = NULL;
    int rc = ms_model_source_create(&o, &s);
    CU_ASSERT_EQUAL(rc, MS_OK);
    if (!rc)
        CU_ASSERT_EQUAL(ms_source_start(s), MS_OK);
    return s;
}

/* Distinct pages dirtied after `steps` advances of `dt`. */
static uint64_t dirty_after(ms_page_source *s, int steps, double dt, uint64_t *bm)
{
    memset(bm, 0, ms_bitmap_words(s->npages) * 8);
    for (int i = 0; i < steps; i++)
        CU_ASSERT_EQUAL(s->ops->advance(s, dt), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, bm), MS_OK);
    return ms_bitmap_count(bm, s->npages);
}

static void check_close(const char *what, double got, double want, double tol)
{
    printf("  %s: %.0f distinct pages, expected %.1f\n", what, got, want);
    CU_ASSERT(fabs(got - want) <= tol * want);
}

/* E[distinct] for n writes with per-page probabilities: sum 1-(1-q)^n. */
static void test_uniform(void)
{
    uint64_t N = 1u << 20;
    uint64_t *bm = malloc(ms_bitmap_words(N) * 8);
    ms_page_source *s = make(MS_MODEL_UNIFORM, N, 50000, 1);
    double n = 5000;
    check_close("uniform, 5000 writes in 2^20 pages", (double)dirty_after(s, 10, 0.01, bm),
                (double)N * -expm1(n * log1p(-1.0 / (double)N)), 0.01);
    ms_source_destroy(s);
    /* Many writes per page: the bulk path. */
    N = 65536;
    s = make(MS_MODEL_UNIFORM, N, 1e6, 2);
    n = 100000;
    check_close("uniform, 100000 writes in 65536 pages", (double)dirty_after(s, 1, 0.1, bm),
                (double)N * -expm1(n * log1p(-1.0 / (double)N)), 0.01);
    ms_source_destroy(s);
    free(bm);
}

static void test_sweep(void)
{
    uint64_t N = 10000;
    uint64_t *bm = malloc(ms_bitmap_words(N) * 8);
    ms_page_source *s = make(MS_MODEL_SWEEP, N, 1000, 3);
    /* 1000 pages/s in steps of 10 ms: the fractions must carry over. */
    CU_ASSERT_EQUAL(dirty_after(s, 250, 0.01, bm), 2500);
    bool in_order = true;
    for (uint64_t p = 0; p < N; p++)
        in_order = in_order && ms_bit_test(bm, p) == (p < 2500);
    CU_ASSERT(in_order);
    CU_ASSERT_EQUAL(dirty_after(s, 1, 1.0, bm), 1000);
    CU_ASSERT(ms_bit_test(bm, 2500) && ms_bit_test(bm, 3499) && !ms_bit_test(bm, 3500));
    /* A long step wraps and covers everything once. */
    CU_ASSERT_EQUAL(dirty_after(s, 1, 30.0, bm), N);
    ms_source_destroy(s);
    free(bm);
}

static void test_hotspot(void)
{
    uint64_t N = 65536;
    uint64_t *bm = malloc(ms_bitmap_words(N) * 8);
    double sum = 0;
    for (uint64_t k = N; k >= 1; k--)
        sum += pow((double)k, -1.0);
    for (int bulk = 0; bulk < 2; bulk++) {
        double n = bulk ? 200000 : 10000;
        ms_page_source *s = make(MS_MODEL_HOTSPOT, N, n, 4);
        double want = 0;
        for (uint64_t k = 1; k <= N; k++)
            want += -expm1(n * log1p(-pow((double)k, -1.0) / sum));
        check_close(bulk ? "zipf(1.0), 200000 writes" : "zipf(1.0), 10000 writes", (double)dirty_after(s, 1, 1.0, bm),
                    want, 0.02);
        ms_source_destroy(s);
    }
    /* Steeper: s = 1.5 concentrates writes. The hottest ranks sit in one
     * 2 MiB run of pages. */
    ms_model_opts o = {.kind = MS_MODEL_HOTSPOT, .npages = N, .rate = 10000, .seed = 5, .zipf_s = 1.5};
    ms_page_source *s = NULL;
    CU_ASSERT_FATAL(ms_model_source_create(&o, &s) == MS_OK);
    double sum15 = 0, want = 0;
    for (uint64_t k = N; k >= 1; k--)
        sum15 += pow((double)k, -1.5);
    for (uint64_t k = 1; k <= N; k++)
        want += -expm1(10000 * log1p(-pow((double)k, -1.5) / sum15));
    uint64_t got = dirty_after(s, 1, 1.0, bm);
    check_close("zipf(1.5), 10000 writes", (double)got, want, 0.03);
    uint64_t best = 0;
    for (uint64_t c = 0; c < N / 512; c++) {
        uint64_t in = 0;
        for (uint64_t p = c * 512; p < (c + 1) * 512; p++)
            in += ms_bit_test(bm, p);
        best = in > best ? in : best;
    }
    double first_run = 0;
    for (uint64_t k = 1; k <= 512; k++)
        first_run += -expm1(10000 * log1p(-pow((double)k, -1.5) / sum15));
    printf("  zipf(1.5): densest 2 MiB run holds %llu of %llu dirty pages (ranks 1-512 expect %.1f)\n",
           (unsigned long long)best, (unsigned long long)got, first_run);
    CU_ASSERT(best >= 0.9 * first_run);
    ms_source_destroy(s);
    free(bm);
}

static void test_wws(void)
{
    uint64_t N = 100000;
    uint64_t *bm = malloc(ms_bitmap_words(N) * 8);
    ms_page_source *s = make(MS_MODEL_WWS, N, 100000, 6);
    double W = ceil(0.1 * (double)N), n = 5000;
    double qh = 0.9 / W + 0.1 / (double)N, qc = 0.1 / (double)N;
    double want = W * -expm1(n * log1p(-qh)) + ((double)N - W) * -expm1(n * log1p(-qc));
    check_close("wws 10%/90%, 5000 writes", (double)dirty_after(s, 5, 0.01, bm), want, 0.02);
    /* Over 10 s (10^6 writes) the working set is entirely dirty, and the
     * cold rest follows its own, much lower rate. */
    n = 1e6;
    want = W * -expm1(n * log1p(-qh)) + ((double)N - W) * -expm1(n * log1p(-qc));
    check_close("wws 10%/90%, 10^6 writes", (double)dirty_after(s, 10, 1.0, bm), want, 0.02);
    ms_source_destroy(s);
    free(bm);
}

static void test_idle_pause_determinism(void)
{
    uint64_t N = 4096;
    uint64_t *a = malloc(ms_bitmap_words(N) * 8), *b = malloc(ms_bitmap_words(N) * 8);
    ms_page_source *s = make(MS_MODEL_UNIFORM, N, 0, 1);
    CU_ASSERT_EQUAL(dirty_after(s, 10, 1.0, a), 0);
    ms_source_destroy(s);
    s = make(MS_MODEL_UNIFORM, N, 1000, 1);
    CU_ASSERT_EQUAL(ms_source_pause(s), MS_OK);
    CU_ASSERT_EQUAL(dirty_after(s, 10, 1.0, a), 0);
    CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    CU_ASSERT(dirty_after(s, 1, 1.0, a) > 800);
    ms_source_destroy(s);
    ms_page_source *x = make(MS_MODEL_HOTSPOT, N, 500, 42), *y = make(MS_MODEL_HOTSPOT, N, 500, 42),
                   *z = make(MS_MODEL_HOTSPOT, N, 500, 43);
    dirty_after(x, 3, 0.5, a);
    dirty_after(y, 3, 0.5, b);
    CU_ASSERT(memcmp(a, b, ms_bitmap_words(N) * 8) == 0);
    dirty_after(z, 3, 0.5, b);
    CU_ASSERT(memcmp(a, b, ms_bitmap_words(N) * 8) != 0);
    CU_ASSERT_EQUAL(x->ops->advance(x, -1), MS_ERR_INVAL);
    ms_source_destroy(x);
    ms_source_destroy(y);
    ms_source_destroy(z);
    free(a);
    free(b);
}

static void test_content(void)
{
    uint64_t N = 8192;
    ms_page_source *s = make(MS_MODEL_UNIFORM, N, 2000, 9);
    uint64_t *idx = malloc(N * sizeof *idx);
    uint8_t *v0 = malloc(N * MS_PAGE_SIZE), *v1 = malloc(N * MS_PAGE_SIZE);
    for (uint64_t i = 0; i < N; i++)
        idx[i] = i;
    CU_ASSERT_FATAL(ms_source_read(s, idx, N, v0) == MS_OK);
    uint64_t zero = 0, text = 0;
    for (uint64_t i = 0; i < N; i++) {
        const uint8_t *p = v0 + i * MS_PAGE_SIZE;
        size_t printable = 0, nonzero = 0;
        for (size_t j = 0; j < MS_PAGE_SIZE; j++) {
            nonzero += p[j] != 0;
            printable += (p[j] >= 32 && p[j] < 127) || p[j] == '\n';
        }
        zero += nonzero == 0;
        text += printable == MS_PAGE_SIZE;
    }
    printf("  %llu zero pages, %llu text pages of %llu\n", (unsigned long long)zero, (unsigned long long)text,
           (unsigned long long)N);
    CU_ASSERT(zero > N / 5 && zero < N * 2 / 5);
    CU_ASSERT(text > N / 6 && text < N / 3);
    uint64_t *bm = calloc(ms_bitmap_words(N), 8);
    CU_ASSERT_EQUAL(s->ops->advance(s, 1.0), MS_OK);
    CU_ASSERT_EQUAL(ms_source_dirty(s, bm), MS_OK);
    CU_ASSERT_FATAL(ms_source_read(s, idx, N, v1) == MS_OK);
    uint64_t wrong = 0, changed_bytes = 0, ndirty = 0;
    for (uint64_t i = 0; i < N; i++) {
        const uint8_t *a = v0 + i * MS_PAGE_SIZE, *b = v1 + i * MS_PAGE_SIZE;
        bool same = memcmp(a, b, MS_PAGE_SIZE) == 0;
        wrong += same == ms_bit_test(bm, i); /* dirty pages change, clean ones do not */
        if (!same) {
            ndirty++;
            for (size_t j = 0; j < MS_PAGE_SIZE; j++)
                changed_bytes += a[j] != b[j];
        }
    }
    CU_ASSERT_EQUAL(wrong, 0);
    printf("  a write changes %.1f bytes of a page on average\n", ndirty ? (double)changed_bytes / (double)ndirty : 0.0);
    CU_ASSERT(ndirty && changed_bytes / ndirty < 100); /* a few words: delta-friendly */
    /* Reading again gives the same bytes. */
    CU_ASSERT_FATAL(ms_source_read(s, idx, N, v0) == MS_OK);
    CU_ASSERT(memcmp(v0, v1, N * MS_PAGE_SIZE) == 0);
    uint64_t bad = N;
    CU_ASSERT_EQUAL(ms_source_read(s, &bad, 1, v0), MS_ERR_INVAL);
    ms_source_destroy(s);
    free(bm);
    free(idx);
    free(v0);
    free(v1);
}

static void test_parse(void)
{
    ms_model_opts o;
    CU_ASSERT_EQUAL(ms_model_parse("hotspot,size=64M,rate=5k,zipf=1.2,seed=3", &o), MS_OK);
    CU_ASSERT_EQUAL(o.kind, MS_MODEL_HOTSPOT);
    CU_ASSERT_EQUAL(o.npages, (64u << 20) / MS_PAGE_SIZE);
    CU_ASSERT_DOUBLE_EQUAL(o.rate, 5000, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(o.zipf_s, 1.2, 1e-9);
    CU_ASSERT_EQUAL(o.seed, 3);
    CU_ASSERT_EQUAL(ms_model_parse("wws,npages=1000,hot=0.2,share=0.8", &o), MS_OK);
    CU_ASSERT_EQUAL(o.npages, 1000);
    CU_ASSERT_EQUAL(ms_model_parse("sweep", &o), MS_OK);
    const char *bad[] = {"", "zipfy", "uniform,rate", "uniform,rate=fast", "uniform,colour=red",
                         "hotspot,zipf=-1", "wws,hot=2", "uniform,size=12", "uniform,rate=-5", NULL};
    for (int i = 0; bad[i]; i++) {
        CU_ASSERT_EQUAL(ms_model_parse(bad[i], &o), MS_ERR_INVAL);
        printf("  '%s': %s\n", bad[i], ms_last_error());
    }
    ms_page_source *s;
    ms_model_opts zero = {.kind = MS_MODEL_UNIFORM, .npages = 0};
    CU_ASSERT_EQUAL(ms_model_source_create(&zero, &s), MS_ERR_INVAL);
}

MS_TEST_MAIN(ms_test_add_suite("sources/model", (const ms_test_case[]){
                                                    {"uniform dirty rate", test_uniform},
                                                    {"sequential sweep", test_sweep},
                                                    {"hot-spot (Zipf)", test_hotspot},
                                                    {"writable working set", test_wws},
                                                    {"idle, pause and determinism", test_idle_pause_determinism},
                                                    {"synthetic content", test_content},
                                                    {"spec parsing", test_parse},
                                                    {NULL, NULL},
                                                }))
