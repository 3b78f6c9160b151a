/* Frame header, content hash and pfn list coding. */
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "stream/stream.h"
#include "tests/ms_test.h"

static ms_frame_hdr sample_hdr(void)
{
    return (ms_frame_hdr){
        .type = MS_FRAME_PAGES,
        .flags = MS_FRAME_F_SEALED,
        .channel = 0x0203,
        .seq = 0x1122334455667788ull,
        .round = 7,
        .fragment = 0xa1b2c3d4u,
        .page_count = 256,
        .codec = 0x00010101u,
        .raw_len = 256 * 4096,
        .enc_len = 300000,
        .stage_len = 700000,
        .hash = 0xfedcba9876543210ull,
    };
}

static void test_hdr_roundtrip(void)
{
    ms_frame_hdr h = sample_hdr(), g;
    uint8_t b[MS_FRAME_HDR_SIZE];

    ms_frame_hdr_pack(&h, b);
    CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_OK);
    CU_ASSERT_EQUAL(g.type, h.type);
    CU_ASSERT_EQUAL(g.flags, h.flags);
    CU_ASSERT_EQUAL(g.channel, h.channel);
    CU_ASSERT_EQUAL(g.seq, h.seq);
    CU_ASSERT_EQUAL(g.round, h.round);
    CU_ASSERT_EQUAL(g.fragment, h.fragment);
    CU_ASSERT_EQUAL(g.page_count, h.page_count);
    CU_ASSERT_EQUAL(g.codec, h.codec);
    CU_ASSERT_EQUAL(g.raw_len, h.raw_len);
    CU_ASSERT_EQUAL(g.enc_len, h.enc_len);
    CU_ASSERT_EQUAL(g.stage_len, h.stage_len);
    CU_ASSERT_EQUAL(g.hash, h.hash);
}

/* The byte offsets are the documented wire format; pin them. */
static void test_hdr_offsets(void)
{
    ms_frame_hdr h = sample_hdr();
    uint8_t b[MS_FRAME_HDR_SIZE];

    ms_frame_hdr_pack(&h, b);
    CU_ASSERT_EQUAL(memcmp(b, "MSF1", 4), 0);
    CU_ASSERT_EQUAL(b[4], MS_FRAME_PAGES);
    CU_ASSERT_EQUAL(b[5], MS_FRAME_F_SEALED);
    CU_ASSERT_EQUAL(b[6], 0x03);
    CU_ASSERT_EQUAL(b[7], 0x02);
    CU_ASSERT_EQUAL(b[8], 0x88);
    CU_ASSERT_EQUAL(b[15], 0x11);
    CU_ASSERT_EQUAL(ms_get_le32(b + 16), 7u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 20), 0xa1b2c3d4u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 24), 256u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 28), 0x00010101u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 32), 256u * 4096);
    CU_ASSERT_EQUAL(ms_get_le32(b + 36), 300000u);
    CU_ASSERT_EQUAL(ms_get_le64(b + 40), 0xfedcba9876543210ull);
    CU_ASSERT_EQUAL(ms_get_le32(b + 48), 700000u);
    CU_ASSERT_EQUAL(ms_get_le32(b + 52), XXH32(b, 52, 0));
}

/* Every byte, every possible corruption of it: all refused. */
static void test_hdr_every_flip(void)
{
    ms_frame_hdr h = sample_hdr(), g;
    uint8_t b[MS_FRAME_HDR_SIZE];
    unsigned accepted = 0;

    ms_frame_hdr_pack(&h, b);
    for (unsigned i = 0; i < MS_FRAME_HDR_SIZE; i++) {
        for (unsigned x = 1; x < 256; x++) {
            b[i] ^= (uint8_t)x;
            if (ms_frame_hdr_unpack(b, &g) != MS_ERR_CORRUPT)
                accepted++;
            b[i] ^= (uint8_t)x;
        }
    }
    CU_ASSERT_EQUAL(accepted, 0);
    CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_OK);
}

/* Pack (which does not validate) then unpack: expect `code` and a message
 * naming the field. */
static void expect_refused(const ms_frame_hdr *h, int code, const char *needle)
{
    uint8_t b[MS_FRAME_HDR_SIZE];
    ms_frame_hdr g;
    ms_frame_hdr_pack(h, b);
    int rc = ms_frame_hdr_unpack(b, &g);
    CU_ASSERT_EQUAL(rc, code);
    if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", ms_last_error(), needle);
        CU_FAIL("message does not name the field");
    }
}

static void test_hdr_errors(void)
{
    ms_frame_hdr h;
    uint8_t b[MS_FRAME_HDR_SIZE];
    ms_frame_hdr g;

    h = sample_hdr();
    ms_frame_hdr_pack(&h, b);
    b[0] ^= 1;
    CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "magic"));
    b[0] ^= 1;
    b[20] ^= 1;
    CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "header check"));

    h = sample_hdr(); h.type = 0;
    expect_refused(&h, MS_ERR_CORRUPT, "frame type 0");
    h = sample_hdr(); h.type = MS_FRAME_TYPE_MAX + 1;
    expect_refused(&h, MS_ERR_CORRUPT, "frame type 8");
    h = sample_hdr(); h.flags = 0x81;
    expect_refused(&h, MS_ERR_CORRUPT, "flag bits 0x80");
    h = sample_hdr(); h.page_count = MS_MAX_FRAME_PAGES + 1;
    expect_refused(&h, MS_ERR_CORRUPT, "page count 1025 exceeds limit 1024");
    h = sample_hdr(); h.page_count = 0;
    expect_refused(&h, MS_ERR_CORRUPT, "PAGES frame with page count 0");
    h = sample_hdr(); h.type = MS_FRAME_OPAQUE; h.page_count = 3;
    expect_refused(&h, MS_ERR_CORRUPT, "carries page count 3");
    h = sample_hdr(); h.raw_len = MS_MAX_FRAME_BODY + 1;
    expect_refused(&h, MS_ERR_CORRUPT, "raw length 8454145 exceeds limit 8454144");
    h = sample_hdr(); h.enc_len = 9000000;
    expect_refused(&h, MS_ERR_CORRUPT, "encoded length 9000000 exceeds limit 8454144");
    h = sample_hdr(); h.stage_len = 0xffffffffu;
    expect_refused(&h, MS_ERR_CORRUPT, "stage length 4294967295 exceeds");
    h = sample_hdr(); h.enc_len = MS_SEAL_TAG_SIZE - 1;
    expect_refused(&h, MS_ERR_CORRUPT, "below the 16-byte tag");
    /* Messages name the frame once the header is known to be intact. */
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "frame 1234605616436508552"));

    /* Limits themselves are allowed; so are control frames without pages. */
    h = sample_hdr();
    h.raw_len = h.enc_len = h.stage_len = MS_MAX_FRAME_BODY;
    h.page_count = MS_MAX_FRAME_PAGES;
    ms_frame_hdr_pack(&h, b);
    CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_OK);
    for (unsigned t = MS_FRAME_OPAQUE; t <= MS_FRAME_TYPE_MAX; t++) {
        h = sample_hdr();
        h.type = (uint8_t)t;
        h.page_count = 0;
        h.flags = 0;
        h.enc_len = 0;
        ms_frame_hdr_pack(&h, b);
        CU_ASSERT_EQUAL(ms_frame_hdr_unpack(b, &g), MS_OK);
    }
}

static void test_content_hash(void)
{
    enum { N = 600 };
    static uint64_t pfns[N];
    static uint8_t le[N * 8 + 100];
    uint8_t data[100];

    for (size_t i = 0; i < N; i++)
        pfns[i] = 0x0123456789abull * (i + 1) % MS_PFN_LIMIT;
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < N; i++)
        ms_put_le64(le + 8 * i, pfns[i]);
    memcpy(le + N * 8, data, sizeof data);

    /* More pfns than one conversion chunk: the streaming must not show. */
    CU_ASSERT_EQUAL(ms_content_hash(pfns, N, data, sizeof data), XXH3_64bits(le, sizeof le));
    CU_ASSERT_EQUAL(ms_content_hash(NULL, 0, data, sizeof data), XXH3_64bits(data, sizeof data));
    CU_ASSERT_EQUAL(ms_content_hash(NULL, 0, NULL, 0), XXH3_64bits("", 0));
    uint64_t h0 = ms_content_hash(pfns, N, data, sizeof data);
    pfns[300] ^= 1;
    CU_ASSERT_NOT_EQUAL(ms_content_hash(pfns, N, data, sizeof data), h0);
    pfns[300] ^= 1;
    data[99] ^= 1;
    CU_ASSERT_NOT_EQUAL(ms_content_hash(pfns, N, data, sizeof data), h0);
}

static void pfn_roundtrip(const uint64_t *pfns, size_t n, size_t expect_bytes)
{
    ms_buf b = {0};
    uint64_t out[64];

    CU_ASSERT_FATAL(n <= 64);
    CU_ASSERT_EQUAL_FATAL(ms_pfns_encode(pfns, n, &b), MS_OK);
    if (expect_bytes)
        CU_ASSERT_EQUAL(b.len, expect_bytes);
    /* Trailing bytes belong to the page section and are not consumed. */
    CU_ASSERT_EQUAL(ms_buf_append(&b, "\xff\xff", 2), MS_OK);
    CU_ASSERT_EQUAL(ms_pfns_decode(b.data, b.len, out, n), (long)(b.len - 2));
    CU_ASSERT_EQUAL(memcmp(out, pfns, n * sizeof *pfns), 0);
    ms_buf_free(&b);
}

static void test_pfns_roundtrip(void)
{
    const uint64_t top = MS_PFN_LIMIT - 1;
    uint64_t asc[64], desc[64], mixed[] = {5, 0, top, 0, top, top - 1, 1ull << 40, 3, 3};

    for (unsigned i = 0; i < 64; i++) {
        asc[i] = 1000 + i;
        desc[i] = top - 3 * i;
    }
    pfn_roundtrip(asc, 64, 2 + 63);  /* 1000 takes 2 bytes, each +1 step 1 byte */
    pfn_roundtrip(desc, 64, 8 + 63); /* 2^52-1 zigzags to 53 bits: 8 bytes; -3 steps 1 byte */
    pfn_roundtrip(mixed, sizeof mixed / sizeof *mixed, 0);
    pfn_roundtrip(asc, 0, 0);
}

static void test_pfns_limits(void)
{
    uint64_t bad[] = {1, MS_PFN_LIMIT};
    uint64_t out[4];
    uint8_t in[16];
    ms_buf b = {0};
    size_t n;

    CU_ASSERT_EQUAL(ms_pfns_encode(bad, 2, &b), MS_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "index 1"));
    ms_buf_free(&b);

    /* A delta that lands exactly on 2^52, one that goes below 0, and one
     * that would overflow int64: all refused. */
    n = ms_uleb_put(in, ms_zigzag((int64_t)MS_PFN_LIMIT));
    CU_ASSERT_EQUAL(ms_pfns_decode(in, n, out, 1), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "outside [0, 2^52)"));
    n = ms_uleb_put(in, ms_zigzag((int64_t)MS_PFN_LIMIT - 1));
    CU_ASSERT_EQUAL(ms_pfns_decode(in, n, out, 1), (long)n);
    CU_ASSERT_EQUAL(out[0], MS_PFN_LIMIT - 1);
    n = ms_uleb_put(in, ms_zigzag(5));
    n += ms_uleb_put(in + n, ms_zigzag(-6));
    CU_ASSERT_EQUAL(ms_pfns_decode(in, n, out, 2), MS_ERR_CORRUPT);
    n = ms_uleb_put(in, ms_zigzag(5));
    n += ms_uleb_put(in + n, ms_zigzag(INT64_MAX));
    CU_ASSERT_EQUAL(ms_pfns_decode(in, n, out, 2), MS_ERR_CORRUPT);

    /* An 11-byte varint and a 10-byte one overflowing 64 bits. */
    memset(in, 0x80, 11);
    in[10] = 0x01;
    CU_ASSERT_EQUAL(ms_pfns_decode(in, 11, out, 1), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "overlong"));
    memset(in, 0xff, 9);
    in[9] = 0x02;
    CU_ASSERT_EQUAL(ms_pfns_decode(in, 10, out, 1), MS_ERR_CORRUPT);
}

/* Every proper prefix of an encoded list is reported as truncated. */
static void test_page_store_sizes(void)
{
    uint64_t v = 0;
    CU_ASSERT_EQUAL(ms_page_store_parse("1M", &v), MS_OK);
    CU_ASSERT_EQUAL(v, 1ull << 20);
    CU_ASSERT_EQUAL(ms_page_store_parse("16G", &v), MS_OK);
    CU_ASSERT_EQUAL(v, MS_MAX_PAGE_STORE);
    v = 7;
    CU_ASSERT_EQUAL(ms_page_store_parse("1023K", &v), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_page_store_parse("17G", &v), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_page_store_parse("lots", &v), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_page_store_parse(NULL, &v), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(v, 7); /* untouched on error */
    CU_ASSERT(strstr(ms_last_error(), "from 1M to 16G") != NULL);
}

static void test_pfns_truncation(void)
{
    uint64_t pfns[] = {7, MS_PFN_LIMIT - 1, 0, 123456789, 123456790};
    uint64_t out[5];
    ms_buf b = {0};

    CU_ASSERT_EQUAL_FATAL(ms_pfns_encode(pfns, 5, &b), MS_OK);
    for (size_t len = 0; len < b.len; len++) {
        long rc = ms_pfns_decode(b.data, len, out, 5);
        CU_ASSERT_EQUAL(rc, MS_ERR_TRUNCATED);
        if (rc != MS_ERR_TRUNCATED)
            fprintf(stderr, "\n  prefix %zu: %ld %s\n", len, rc, ms_last_error());
    }
    CU_ASSERT_EQUAL(ms_pfns_decode(b.data, b.len, out, 5), (long)b.len);
    CU_ASSERT_EQUAL(ms_pfns_decode(b.data, 0, out, 0), 0);
    ms_buf_free(&b);
}

static const ms_test_case wire_tests[] = {
    {"frame header round trip", test_hdr_roundtrip},
    {"frame header byte offsets", test_hdr_offsets},
    {"frame header: every byte corruption refused", test_hdr_every_flip},
    {"frame header: each field error named", test_hdr_errors},
    {"content hash is XXH3-64 of LE pfns + data", test_content_hash},
    {"pfn list round trip (asc, desc, 2^52-1)", test_pfns_roundtrip},
    {"pfn list range and overflow refused", test_pfns_limits},
    {"pfn list truncation at every length", test_pfns_truncation},
    {"page-store sizes: 1M..16G, others refused", test_page_store_sizes},
    {NULL, NULL},
};

MS_TEST_MAIN(ms_test_add_suite("stream", wire_tests))
