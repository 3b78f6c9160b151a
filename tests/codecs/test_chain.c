/* Chain names, wire ids, the compressor registry and the compressors'
 * handling of good and corrupt blocks. */
#include <stdlib.h>
#include <string.h>

#include "codecs/codecs.h"
#include "pages.h"
#include "tests/ms_test.h"

static bool chain_eq(const ms_chain *a, const ms_chain *b)
{
    return a->stages == b->stages && a->comp == b->comp && a->level == b->level &&
           a->is_auto == b->is_auto;
}

static void expect_chain(const char *text, uint32_t stages, int comp, int level, bool is_auto,
                         const char *canonical)
{
    ms_chain c;
    char buf[64];
    int rc = ms_chain_parse(text, &c);
    if (rc)
        fprintf(stderr, "parse \"%s\": %s\n", text, ms_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    CU_ASSERT_EQUAL(c.stages, stages);
    CU_ASSERT_EQUAL(c.comp, comp);
    CU_ASSERT_EQUAL(c.level, level);
    CU_ASSERT_EQUAL(c.is_auto, is_auto);
    ms_chain_format(&c, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, canonical);
    /* The canonical text parses back to the same chain. */
    ms_chain again;
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(buf, &again), MS_OK);
    CU_ASSERT(chain_eq(&again, &c));
}

static void test_parse_good(void)
{
    expect_chain("none", 0, MS_COMP_NONE, 0, false, "none");
    expect_chain("lz4", 0, MS_COMP_LZ4, 1, false, "lz4:1");
    expect_chain("lz4:8", 0, MS_COMP_LZ4, 8, false, "lz4:8");
    expect_chain("LZ4:8", 0, MS_COMP_LZ4, 8, false, "lz4:8");
    expect_chain("lz4:65537", 0, MS_COMP_LZ4, 127, false, "lz4:127");
    expect_chain("zero,delta,lz4", MS_STAGE_ZERO | MS_STAGE_DELTA, MS_COMP_LZ4, 1, false,
                 "zero,delta,lz4:1");
    expect_chain("delta,zero,lz4", MS_STAGE_ZERO | MS_STAGE_DELTA, MS_COMP_LZ4, 1, false,
                 "zero,delta,lz4:1");
    expect_chain(" zero , zstd:3 ", MS_STAGE_ZERO, MS_COMP_ZSTD, 3, false, "zero,zstd:3");
    expect_chain("zstd", 0, MS_COMP_ZSTD, 3, false, "zstd:3");
    expect_chain("zstd:1", 0, MS_COMP_ZSTD, 1, false, "zstd:1");
    expect_chain("zstd:19", 0, MS_COMP_ZSTD, 19, false, "zstd:19");
    expect_chain("zero", MS_STAGE_ZERO, MS_COMP_NONE, 0, false, "zero,none");
    expect_chain("zero,dedup,delta,auto", MS_STAGE_ZERO | MS_STAGE_DEDUP | MS_STAGE_DELTA,
                 MS_COMP_NONE, 0, true, "zero,dedup,delta,auto");
    expect_chain("auto", 0, MS_COMP_NONE, 0, true, "auto");
}

static void expect_bad(const char *text, const char *needle)
{
    ms_chain c = {.stages = 0x55};
    ms_clear_error();
    int rc = ms_chain_parse(text, &c);
    CU_ASSERT_EQUAL(rc, MS_ERR_INVAL);
    CU_ASSERT_EQUAL(c.stages, 0x55); /* output untouched on failure */
    if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "chain \"%s\": message \"%s\" lacks \"%s\"\n", text ? text : "(null)",
                ms_last_error(), needle);
        CU_FAIL("message does not name the problem");
    }
}

static void test_parse_bad(void)
{
    expect_bad(NULL, "missing");
    expect_bad("", "empty name at offset 0");
    expect_bad("  ", "empty name");
    expect_bad("zero,,lz4", "empty name at offset 5");
    expect_bad("zero,", "empty name at offset 5");
    expect_bad("lz5", "unknown codec \"lz5\"");
    expect_bad("zero,delta,lzma", "unknown codec \"lzma\"");
    expect_bad("zero,zero,lz4", "stage \"zero\" given twice");
    expect_bad("lz4,zstd:1", "second compressor \"zstd:1\"");
    expect_bad("none,auto", "second compressor \"auto\"");
    expect_bad("zstd:0", "bad level in \"zstd:0\" (zstd takes 1..19)");
    expect_bad("zstd:20", "bad level in \"zstd:20\"");
    expect_bad("zstd:3x", "bad level in \"zstd:3x\"");
    expect_bad("zstd:+3", "bad level in \"zstd:+3\"");
    expect_bad("zstd:-1", "bad level");
    expect_bad("lz4:0", "bad level in \"lz4:0\"");
    expect_bad("lz4:65538", "bad level in \"lz4:65538\"");
    expect_bad("zstd:99999999999999999999", "bad level");
    expect_bad("zstd:", "\"zstd:\" has an empty level after ':'");
    expect_bad("none:1", "\"none:1\" takes no level");
    expect_bad("auto:2", "\"auto:2\" takes no level");
    expect_bad("zero:1", "unknown codec \"zero:1\"");
    expect_bad("averyveryveryveryverylongcodecname", "unknown codec");
    char longtok[200];
    memset(longtok, 'a', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = 0;
    expect_bad(longtok, "too long");
}

static void test_ids(void)
{
    const char *chains[] = {"none", "lz4", "lz4:127", "zstd:1", "zstd:19", "zero,delta,lz4:3",
                            "zero,dedup,delta,zstd:5", "zero", "delta"};
    for (size_t i = 0; i < sizeof chains / sizeof chains[0]; i++) {
        ms_chain c, back;
        CU_ASSERT_EQUAL_FATAL(ms_chain_parse(chains[i], &c), MS_OK);
        uint32_t id = ms_chain_to_id(&c);
        CU_ASSERT_EQUAL(id >> 24, 0);
        CU_ASSERT_EQUAL_FATAL(ms_chain_from_id(id, &back), MS_OK);
        CU_ASSERT(chain_eq(&c, &back));
    }
    ms_chain c;
    CU_ASSERT_EQUAL(ms_chain_parse("zero,delta,lz4:3", &c), MS_OK);
    CU_ASSERT_EQUAL(ms_chain_to_id(&c), 0x00030301u); /* byte order as documented */

    struct { uint32_t id; const char *needle; } bad[] = {
        {0x01000001u, "reserved byte 3"},
        {0x00080001u, "unknown stage bits 0x08"},
        {0x00000003u, "unknown compressor 3"},
        {0x000000ffu, "auto is not a concrete chain"},
        {0x00000002u, "level 0 out of range for zstd"},
        {0x00001402u, "level 20 out of range for zstd"},
        {0x00000001u, "level 0 out of range for lz4"},
        {0x00008001u, "level 128 out of range for lz4"},
        {0x00000100u, "level 1 out of range for none"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms_chain out;
        CU_ASSERT_EQUAL(ms_chain_from_id(bad[i].id, &out), MS_ERR_CORRUPT);
        if (!strstr(ms_last_error(), bad[i].needle)) {
            fprintf(stderr, "id 0x%08x: \"%s\" lacks \"%s\"\n", bad[i].id, ms_last_error(), bad[i].needle);
            CU_FAIL("id message");
        }
    }
    ms_chain a;
    CU_ASSERT_EQUAL(ms_chain_parse("zero,auto", &a), MS_OK);
    CU_ASSERT_EQUAL(ms_chain_to_id(&a) & 0xff, MS_CHAIN_ID_AUTO);
}

static void test_registry(void)
{
    CU_ASSERT_PTR_NOT_NULL(ms_compressor_by_name("lz4"));
    CU_ASSERT_PTR_NOT_NULL(ms_compressor_by_name("ZSTD"));
    CU_ASSERT_PTR_NULL(ms_compressor_by_name("lzma"));
    CU_ASSERT_PTR_NULL(ms_compressor_by_id(MS_COMP_COUNT));
    CU_ASSERT_PTR_NULL(ms_compressor_by_id(255));
    for (unsigned i = 0; i < MS_COMP_COUNT; i++) {
        const ms_compressor_ops *ops = ms_compressor_by_id(i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
        CU_ASSERT_EQUAL(ops->id, i);
        CU_ASSERT_PTR_EQUAL(ms_compressor_by_name(ops->name), ops);
        CU_ASSERT(ops->bound(4096) >= 4096);
    }
}

/* Mixed test data: a few pages of every kind. */
static uint8_t *mixed(size_t pages, size_t ps, uint64_t seed)
{
    uint8_t *p = malloc(pages * ps);
    uint64_t rs = seed;
    for (size_t i = 0; i < pages; i++)
        t_fill(p + i * ps, ps, (enum test_kind)(i % TK_COUNT), &rs);
    return p;
}

static const char *const comp_chains[] = {"none", "lz4", "lz4:9", "zstd:1", "zstd:3", "zstd:19"};
#define NCOMP (sizeof comp_chains / sizeof comp_chains[0])

static void test_compress_round_trip(void)
{
    ms_codec_ctx *ctx = ms_codec_ctx_new();
    size_t sizes[] = {0, 1, 100, 4096, 5 * 4096 + 17, 1 << 20};
    uint8_t *src = mixed(257, 4096, 7);
    uint8_t *dst = malloc((1 << 20) * 2), *back = malloc((1 << 20) + 1);
    for (size_t c = 0; c < NCOMP; c++) {
        ms_chain ch;
        CU_ASSERT_EQUAL_FATAL(ms_chain_parse(comp_chains[c], &ch), MS_OK);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s], out = 0, bound = ms_compress_bound(&ch, n);
            CU_ASSERT(bound >= n);
            CU_ASSERT_EQUAL_FATAL(ms_compress(ctx, &ch, src, n, dst, bound, &out), MS_OK);
            CU_ASSERT(out <= bound);
            memset(back, 0xa5, n);
            int rc = ms_decompress(ctx, &ch, dst, out, back, n);
            CU_ASSERT_EQUAL(rc, MS_OK);
            CU_ASSERT(memcmp(back, src, n) == 0);
            if (n > 0) {
                /* The exact size is enforced both ways. */
                CU_ASSERT_EQUAL(ms_decompress(ctx, &ch, dst, out, back, n - 1), MS_ERR_CORRUPT);
                CU_ASSERT_EQUAL(ms_decompress(ctx, &ch, dst, out, back, n + 1), MS_ERR_CORRUPT);
            }
        }
    }
    /* Compression never writes past a short destination. */
    for (size_t c = 0; c < NCOMP; c++) {
        ms_chain ch;
        size_t out;
        ms_chain_parse(comp_chains[c], &ch);
        memset(dst, 0xee, 2000);
        uint8_t *rnd = src + 3 * 4096; /* page 3 is random: does not compress */
        CU_ASSERT_EQUAL(ms_compress(ctx, &ch, rnd, 4096, dst, 1000, &out), MS_ERR_LIMIT);
        for (size_t i = 1000; i < 2000; i++)
            if (dst[i] != 0xee) {
                CU_FAIL("compressor wrote past dst_cap");
                break;
            }
    }
    ms_chain a = {.is_auto = true};
    size_t out;
    CU_ASSERT_EQUAL(ms_compress(ctx, &a, src, 10, dst, 100, &out), MS_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "auto"));
    CU_ASSERT(ms_compress_bound(&a, 4096) >= ms_compressor_by_id(MS_COMP_LZ4)->bound(4096));
    free(src);
    free(dst);
    free(back);
    ms_codec_ctx_free(ctx);
}

/* Every byte of a compressed block flipped, and every truncation: refused,
 * or (when a flip still makes a valid block) exactly n bytes decoded; the
 * sanitizer build proves no access outside the buffers. */
static void test_compress_corrupt(void)
{
    ms_codec_ctx *ctx = ms_codec_ctx_new();
    size_t n = 3 * 1024;
    uint8_t *src = mixed(3, 1024, 11), *dst = malloc(2 * n + 1024), *back = malloc(n);
    memcpy(src + 1024, "the same words the same words the same words", 44);
    for (size_t c = 0; c < NCOMP; c++) {
        ms_chain ch;
        size_t out, refused = 0, accepted = 0;
        ms_chain_parse(comp_chains[c], &ch);
        CU_ASSERT_EQUAL_FATAL(ms_compress(ctx, &ch, src, n, dst, 2 * n + 1024, &out), MS_OK);
        for (size_t i = 0; i < out; i++) {
            for (int bit = 0; bit < 8; bit += 3) {
                dst[i] ^= (uint8_t)(1 << bit);
                int rc = ms_decompress(ctx, &ch, dst, out, back, n);
                dst[i] ^= (uint8_t)(1 << bit);
                CU_ASSERT(rc == MS_OK || rc == MS_ERR_CORRUPT);
                if (rc)
                    refused++;
                else
                    accepted++;
            }
        }
        for (size_t len = 0; len < out; len++) {
            int rc = ms_decompress(ctx, &ch, dst, len, back, n);
            CU_ASSERT_EQUAL(rc, MS_ERR_CORRUPT);
        }
        /* Trailing garbage after a valid block is refused too. */
        dst[out] = 0x42;
        CU_ASSERT_EQUAL(ms_decompress(ctx, &ch, dst, out + 1, back, n), MS_ERR_CORRUPT);
        if (ch.comp != MS_COMP_NONE)
            CU_ASSERT(refused > 0);
        (void)accepted;
    }
    free(src);
    free(dst);
    free(back);
    ms_codec_ctx_free(ctx);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"chain parse: good strings and canonical text", test_parse_good},
        {"chain parse: bad strings name the token", test_parse_bad},
        {"chain wire ids", test_ids},
        {"compressor registry", test_registry},
        {"compressors: round trip, exact size, short dst", test_compress_round_trip},
        {"compressors: flipped bytes and truncations", test_compress_corrupt},
        {NULL, NULL},
    };
    ms_test_add_suite("codecs", cases);
})
