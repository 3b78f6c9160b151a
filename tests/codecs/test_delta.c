/* Zero-page check and the page delta: exact encodings, round trips of every
 * change pattern, the output bound, and malformed deltas. */
#include <stdlib.h>
#include <string.h>

#include "codecs/codecs.h"
#include "pages.h"
#include "tests/ms_test.h"

static void test_zero_check(void)
{
    size_t lens[] = {1, 7, 8, 63, 64, 65, 127, 128, 129, 200, 4095, 4096, 4097, 8192};
    uint8_t *p = calloc(1, 8192 + 64);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        size_t len = lens[l];
        /* Unaligned starts too: pages in a section are not always aligned. */
        for (size_t off = 0; off < 3; off++) {
            CU_ASSERT_TRUE(ms_page_is_zero(p + off, len));
            for (size_t i = 0; i < len; i++) {
                p[off + i] = 0x10;
                if (ms_page_is_zero(p + off, len)) {
                    fprintf(stderr, "len %zu off %zu: byte %zu set but page seen as zero\n", len, off, i);
                    CU_FAIL("nonzero byte missed");
                }
                p[off + i] = 0;
            }
            /* A byte just past the end does not count. */
            p[off + len] = 1;
            CU_ASSERT_TRUE(ms_page_is_zero(p + off, len));
            p[off + len] = 0;
        }
    }
    CU_ASSERT_TRUE(ms_page_is_zero(p, 0));
    free(p);
}

/* Encode with canaries after max_out, check the bound, decode, compare. */
static size_t round_trip(const uint8_t *old, const uint8_t *cur, size_t len, size_t max_out)
{
    uint8_t *out = malloc(max_out + 64), *page = malloc(len ? len : 1);
    memset(out, 0xcc, max_out + 64);
    size_t n = ms_delta_encode(old, cur, len, out, max_out);
    for (size_t i = max_out; i < max_out + 64; i++)
        if (out[i] != 0xcc) {
            CU_FAIL("delta encoder wrote past max_out");
            break;
        }
    CU_ASSERT(n < max_out);
    if (n) {
        memcpy(page, old, len);
        int rc = ms_delta_decode(out, n, page, len);
        CU_ASSERT_EQUAL(rc, MS_OK);
        if (rc || memcmp(page, cur, len)) {
            fprintf(stderr, "delta round trip failed: len %zu max_out %zu n %zu: %s\n", len, max_out, n,
                    ms_last_error());
            CU_FAIL("delta round trip");
        }
    }
    free(out);
    free(page);
    return n;
}

static void test_exact_encodings(void)
{
    uint8_t old[4096] = {0}, cur[4096] = {0}, out[64];
    /* Unchanged page: one zero run over all of it, no literal. */
    size_t n = ms_delta_encode(old, cur, 4096, out, 64);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT(out[0] == 0x80 && out[1] == 0x20 && out[2] == 0);
    /* Changes at 10 and 12: the one-byte gap joins them in one literal. */
    cur[10] = 1;
    cur[12] = 3;
    n = ms_delta_encode(old, cur, 4096, out, 64);
    uint8_t want1[] = {10, 3, 1, 0, 3};
    CU_ASSERT_EQUAL(n, sizeof want1);
    CU_ASSERT(memcmp(out, want1, sizeof want1) == 0);
    /* A two-byte gap still joins (same cost); a three-byte gap splits. */
    cur[12] = 0;
    cur[13] = 4;
    n = ms_delta_encode(old, cur, 4096, out, 64);
    uint8_t want2[] = {10, 4, 1, 0, 0, 4};
    CU_ASSERT_EQUAL(n, sizeof want2);
    CU_ASSERT(memcmp(out, want2, sizeof want2) == 0);
    cur[13] = 0;
    cur[14] = 5;
    n = ms_delta_encode(old, cur, 4096, out, 64);
    uint8_t want3[] = {10, 1, 1, 3, 1, 5};
    CU_ASSERT_EQUAL(n, sizeof want3);
    CU_ASSERT(memcmp(out, want3, sizeof want3) == 0);
    /* Gaps across a 64-byte word boundary follow the same rule. */
    memset(cur, 0, sizeof cur);
    cur[63] = 7;
    cur[65] = 8;
    n = ms_delta_encode(old, cur, 4096, out, 64);
    uint8_t want4[] = {63, 3, 7, 0, 8};
    CU_ASSERT_EQUAL(n, sizeof want4);
    CU_ASSERT(memcmp(out, want4, sizeof want4) == 0);
    /* Last byte of the page, and long runs with two-byte lengths. */
    memset(cur, 0, sizeof cur);
    cur[4095] = 9;
    n = ms_delta_encode(old, cur, 4096, out, 64);
    uint8_t want5[] = {0xff, 0x1f, 1, 9};
    CU_ASSERT_EQUAL(n, sizeof want5);
    CU_ASSERT(memcmp(out, want5, sizeof want5) == 0);
    /* Not smaller than max_out: 0. */
    memset(cur, 0xff, 200);
    CU_ASSERT_EQUAL(ms_delta_encode(old, cur, 4096, out, 64), 0);
    CU_ASSERT_EQUAL(ms_delta_encode(old, old, 4096, out, 3), 0); /* needs 3 < max_out */
    CU_ASSERT_EQUAL(ms_delta_encode(old, old, 4096, out, 4), 3);
}

static void test_round_trips(void)
{
    uint64_t rs = 3;
    size_t lens[] = {1, 2, 15, 63, 64, 65, 100, 127, 128, 129, 1000, 4095, 4096, 8192};
    uint8_t *old = malloc(8192), *cur = malloc(8192);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        size_t len = lens[l];
        for (int kind = 0; kind < TK_COUNT; kind++) {
            for (int pattern = 0; pattern < 7; pattern++) {
                t_fill(old, len, (enum test_kind)kind, &rs);
                memcpy(cur, old, len);
                switch (pattern) {
                case 0: break;                                      /* unchanged */
                case 1: cur[0] ^= 1; break;                         /* first byte */
                case 2: cur[len - 1] ^= 0x80; break;                /* last byte */
                case 3: t_mutate(cur, len, 0.05, &rs); break;       /* 5%, clustered */
                case 4:                                             /* 5%, scattered */
                    for (size_t k = 0; k < len / 20 + 1; k++)
                        cur[t_rand(&rs) % len] ^= (uint8_t)(1 + t_rand(&rs) % 255);
                    break;
                case 5: t_mutate(cur, len, 0.5, &rs); break;        /* half */
                case 6:                                             /* all */
                    for (size_t k = 0; k < len; k++)
                        cur[k] = (uint8_t)~old[k];
                    break;
                }
                size_t n = round_trip(old, cur, len, len + 32);
                CU_ASSERT(n > 0); /* with room beyond len, every delta fits */
                if (pattern == 0)
                    CU_ASSERT_EQUAL(n, ms_uleb_size(len) + 1);
                /* The whole range of bounds: 0 or a correct, smaller delta. */
                for (size_t max_out = 1; max_out < n + 3; max_out += max_out < 80 ? 1 : 37)
                    round_trip(old, cur, len, max_out);
                for (size_t max_out = n > 2 ? n - 2 : 1; max_out < n + 3; max_out++)
                    round_trip(old, cur, len, max_out);
            }
        }
    }
    free(old);
    free(cur);
}

static void expect_decode_error(const uint8_t *in, size_t in_len, size_t len, const char *needle)
{
    uint8_t page[256] = {0};
    CU_ASSERT_FATAL(len <= sizeof page);
    ms_clear_error();
    CU_ASSERT_EQUAL(ms_delta_decode(in, in_len, page, len), MS_ERR_CORRUPT);
    if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "delta decode: \"%s\" lacks \"%s\"\n", ms_last_error(), needle);
        CU_FAIL("delta error message");
    }
}

static void test_decode_errors(void)
{
    expect_decode_error((const uint8_t *)"", 0, 64, "empty");
    uint8_t zcross[] = {65, 0};
    expect_decode_error(zcross, 2, 64, "zero run of 65 at page offset 0 crosses the page end (64)");
    uint8_t lcross[] = {60, 5, 1, 2, 3, 4, 5};
    expect_decode_error(lcross, sizeof lcross, 64, "literal run of 5 at page offset 60 crosses the page end");
    uint8_t lshort[] = {0, 4, 1, 2};
    expect_decode_error(lshort, sizeof lshort, 64, "literal run of 4 at offset 2 runs past the input end (4)");
    uint8_t zonly[] = {3};
    expect_decode_error(zonly, 1, 64, "truncated literal-run length at offset 1");
    uint8_t trunc_uleb[] = {0x80};
    expect_decode_error(trunc_uleb, 1, 64, "truncated zero-run length at offset 0");
    uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0};
    expect_decode_error(huge, sizeof huge, 64, "crosses the page end");
    uint8_t overflow[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0};
    expect_decode_error(overflow, sizeof overflow, 64, "bad or truncated zero-run length");
    uint8_t second_bad[] = {1, 1, 9, 70, 0};
    expect_decode_error(second_bad, sizeof second_bad, 64, "zero run of 70 at page offset 2");
    /* Well-formed groups that are not canonical (empty literals, zero-length
     * zero runs) are harmless and accepted. */
    uint8_t page[64] = {0};
    uint8_t odd[] = {0, 0, 0, 0, 5, 1, 7};
    CU_ASSERT_EQUAL(ms_delta_decode(odd, sizeof odd, page, 64), MS_OK);
    CU_ASSERT_EQUAL(page[5], 7);
}

/* Every byte of real deltas flipped and every truncation: an error or a
 * decoded page, never an access outside the page or the input. */
static void test_decode_fuzzed(void)
{
    uint64_t rs = 99;
    uint8_t old[512], cur[512], out[600], page[512];
    for (int round = 0; round < 20; round++) {
        t_fill(old, sizeof old, (enum test_kind)(round % TK_COUNT), &rs);
        memcpy(cur, old, sizeof cur);
        t_mutate(cur, sizeof cur, 0.08, &rs);
        size_t n = ms_delta_encode(old, cur, sizeof cur, out, sizeof out);
        CU_ASSERT_FATAL(n > 0);
        uint8_t *exact = malloc(n); /* exact-size copy: ASan sees any overread */
        for (size_t i = 0; i < n; i++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(exact, out, n);
                exact[i] ^= (uint8_t)(1 << bit);
                memcpy(page, old, sizeof page);
                int rc = ms_delta_decode(exact, n, page, sizeof page);
                CU_ASSERT(rc == MS_OK || rc == MS_ERR_CORRUPT);
            }
        }
        for (size_t len = 0; len < n; len++) {
            uint8_t *t = malloc(len ? len : 1);
            memcpy(t, out, len);
            memcpy(page, old, sizeof page);
            int rc = ms_delta_decode(t, len, page, sizeof page);
            CU_ASSERT(rc == MS_OK || rc == MS_ERR_CORRUPT);
            free(t);
        }
        free(exact);
    }
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"zero check: every position, lengths, alignment", test_zero_check},
        {"delta: exact encodings and gap rule", test_exact_encodings},
        {"delta: round trips of every pattern and bound", test_round_trips},
        {"delta: malformed input refused with its cause", test_decode_errors},
        {"delta: flipped and truncated deltas", test_decode_fuzzed},
        {NULL, NULL},
    };
    ms_test_add_suite("codecs", cases);
})
