/* libxc stream reader / writer / generator tests (no hypervisor needed). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/ms_test.h"
#include "tests/xen/verify_stream.h"
#include "xen/xen.h"


/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static ms_buf gen_stream(uint32_t type, uint32_t version, uint64_t pages, unsigned batch, bool all_types)
{
    ms_xc_gen_config cfg = {.dom_type = type, .version = version, .pages = pages, .rounds = 4,
                            .dirty = 0.1, .batch = batch, .seed = 42, .all_types = all_types};
    ms_buf b = {0};
    int rc = ms_xc_gen(&cfg, ms_xc_out_buf, &b);
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    return b;
}

/* Chunk sizes: half tiny (1..64), half up to 64 KiB. */
static size_t chunk_size(void)
{
    return (rnd() & 1) ? 1 + rnd() % 64 : 1 + rnd() % 65536;
}

/* Reader -> writer in random chunks; returns the writer's output. */
static int roundtrip(const uint8_t *in, size_t len, size_t batch_pages, ms_buf *out, size_t *used_total)
{
    ms_xc_writer *w = NULL;
    ms_xc_reader *r = NULL;
    int rc = ms_xc_writer_new(ms_xc_out_buf, out, &w);
    if (!rc)
        rc = ms_xc_reader_new(&ms_xc_reader_to_writer_cb, w, batch_pages, &r);
    size_t off = 0;
    while (!rc && off < len && !ms_xc_reader_done(r)) {
        size_t n = chunk_size(), used = 0;
        if (n > len - off)
            n = len - off;
        rc = ms_xc_reader_push(r, in + off, n, &used);
        off += used;
        if (!rc && used < n && !ms_xc_reader_done(r))
            rc = MS_ERR_INVAL; /* only END may leave input unused */
    }
    if (!rc)
        rc = ms_xc_reader_finish(r);
    if (!rc)
        rc = ms_xc_writer_finish(w);
    if (used_total)
        *used_total = off;
    ms_xc_reader_free(r);
    ms_xc_writer_free(w);
    return rc;
}

/* Independent walk of a well-formed stream: offset of record `index`. */
static size_t record_offset(const ms_buf *s, unsigned index, uint32_t *type)
{
    size_t off = MS_XC_HDRS_SIZE;
    for (unsigned i = 0; i < index; i++)
        off += 8 + ms_xc_padded(ms_get_le32(s->data + off + 4));
    if (type)
        *type = ms_get_le32(s->data + off);
    return off;
}

/* Index of the first record of a type. */
static unsigned find_record(const ms_buf *s, uint32_t want)
{
    for (unsigned i = 0;; i++) {
        uint32_t t;
        record_offset(s, i, &t);
        if (t == want)
            return i;
        CU_ASSERT_FATAL(t != MS_XC_REC_END || want == MS_XC_REC_END);
    }
}

static int scan_only(const uint8_t *data, size_t len)
{
    ms_xc_stats st;
    return ms_xc_scan(data, len, &st, NULL);
}

/* ---- round trips --------------------------------------------------------- */

static void check_roundtrip(uint32_t type, uint32_t version, uint64_t pages, unsigned batch, size_t rbatch)
{
    ms_buf s = gen_stream(type, version, pages, batch, true), out = {0};
    for (int rep = 0; rep < 3; rep++) {
        out.len = 0;
        size_t used = 0;
        int rc = roundtrip(s.data, s.len, rbatch, &out, &used);
        if (rc)
            fprintf(stderr, "\n  round trip failed: %s\n", ms_last_error());
        CU_ASSERT_EQUAL(rc, MS_OK);
        CU_ASSERT_EQUAL(used, s.len);
        CU_ASSERT_EQUAL(out.len, s.len);
        CU_ASSERT(out.len == s.len && memcmp(out.data, s.data, s.len) == 0);
    }
    ms_buf_free(&s);
    ms_buf_free(&out);
}

static void test_roundtrip_pv(void) { check_roundtrip(MS_XC_DOM_X86_PV, 3, 3000, 1024, 0); }
static void test_roundtrip_hvm(void) { check_roundtrip(MS_XC_DOM_X86_HVM, 3, 3000, 1024, 0); }
static void test_roundtrip_v2(void)
{
    check_roundtrip(MS_XC_DOM_X86_PV, 2, 700, 100, 0);
    check_roundtrip(MS_XC_DOM_X86_HVM, 2, 700, 100, 0);
}
/* Small reader batches split records across many pages() calls. */
static void test_roundtrip_small_batches(void)
{
    check_roundtrip(MS_XC_DOM_X86_PV, 3, 1500, 37, 3);
    check_roundtrip(MS_XC_DOM_X86_HVM, 3, 1500, 1, 1);
}

/* What the reader delivers, decoded by pfn, is what a restore would hold. */
typedef struct image_ctx {
    uint8_t *mem;
    uint64_t pages;
    bool bad;
} image_ctx;

static int img_opaque(void *ctx, const uint8_t *d, size_t n)
{
    (void)ctx;
    (void)d;
    (void)n;
    return MS_OK;
}

static int img_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    image_ctx *ic = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t pfn = ms_xc_entry_pfn(e[i]);
        if (pfn >= ic->pages) {
            ic->bad = true;
            continue;
        }
        memcpy(ic->mem + pfn * MS_XC_PAGE_SIZE, d + i * MS_XC_PAGE_SIZE, MS_XC_PAGE_SIZE);
    }
    return MS_OK;
}

static void test_final_image(void)
{
    static const uint32_t types[] = {MS_XC_DOM_X86_PV, MS_XC_DOM_X86_HVM};
    for (int t = 0; t < 2; t++) {
        ms_xc_gen_config cfg = {.dom_type = types[t], .pages = 1200, .rounds = 5, .dirty = 0.2, .seed = 9,
                                .all_types = true};
        ms_buf s = {0};
        CU_ASSERT_EQUAL_FATAL(ms_xc_gen(&cfg, ms_xc_out_buf, &s), MS_OK);
        uint8_t *want = malloc(1200 * MS_XC_PAGE_SIZE);
        image_ctx ic = {.mem = calloc(1200, MS_XC_PAGE_SIZE), .pages = 1200};
        CU_ASSERT_EQUAL(ms_xc_gen_final_image(&cfg, want, NULL), MS_OK);
        static const ms_xc_reader_cb cb = {.opaque = img_opaque, .pages = img_pages};
        ms_xc_reader *r;
        CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&cb, &ic, 0, &r), MS_OK);
        CU_ASSERT_EQUAL(ms_xc_reader_push(r, s.data, s.len, NULL), MS_OK);
        CU_ASSERT_EQUAL(ms_xc_reader_finish(r), MS_OK);
        CU_ASSERT_FALSE(ic.bad);
        CU_ASSERT(memcmp(ic.mem, want, 1200 * MS_XC_PAGE_SIZE) == 0);
        ms_xc_reader_free(r);
        free(ic.mem);
        free(want);
        ms_buf_free(&s);
    }
}

/* Statistics: several rounds resend pages; every page type appears. */
static void test_stats(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_PV, 3, 3000, 1024, true);
    ms_xc_stats st;
    size_t used;
    CU_ASSERT_EQUAL_FATAL(ms_xc_scan(s.data, s.len, &st, &used), MS_OK);
    CU_ASSERT_EQUAL(used, s.len);
    CU_ASSERT_EQUAL(st.hdr.version, 3);
    CU_ASSERT_EQUAL(st.hdr.dom_type, MS_XC_DOM_X86_PV);
    for (unsigned t = 0; t < 16; t++)
        if (ms_xc_page_type_valid(t))
            CU_ASSERT(st.page_type_count[t] > 0);
    CU_ASSERT(st.resent_pages > 0);
    CU_ASSERT(st.zero_pages > 0);
    CU_ASSERT_EQUAL(st.rec_count[MS_XC_REC_END], 1);
    CU_ASSERT_EQUAL(st.rec_count[MS_XC_REC_X86_PV_VCPU_BASIC], 2);
    CU_ASSERT_EQUAL(st.rec_count[MS_XC_REC_STATIC_DATA_END], 1);
    ms_buf_free(&s);
}

/* ---- stops exactly at END ---------------------------------------------------- */

static const char trailer[] = "libxl records and xl handshake follow here";

static void test_trailing_bytes(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_HVM, 3, 600, 1024, false), out = {0};
    size_t slen = s.len;
    CU_ASSERT_EQUAL_FATAL(ms_buf_append(&s, trailer, sizeof(trailer)), MS_OK);
    for (int rep = 0; rep < 5; rep++) {
        size_t used = 0;
        out.len = 0;
        CU_ASSERT_EQUAL(roundtrip(s.data, s.len, 0, &out, &used), MS_OK);
        CU_ASSERT_EQUAL(used, slen);
        CU_ASSERT(out.len == slen && memcmp(out.data, s.data, slen) == 0);
    }
    /* One push of everything: *used stops at END. */
    ms_xc_stats st;
    size_t used = 0;
    CU_ASSERT_EQUAL(ms_xc_scan(s.data, s.len, &st, &used), MS_OK);
    CU_ASSERT_EQUAL(used, slen);
    ms_buf_free(&s);
    ms_buf_free(&out);
}

typedef struct feeder {
    int fd;
    const uint8_t *data;
    size_t len;
} feeder;

static void *feed(void *arg)
{
    feeder *f = arg;
    size_t off = 0;
    while (off < f->len) {
        size_t n = chunk_size();
        if (n > f->len - off)
            n = f->len - off;
        ssize_t w = write(f->fd, f->data + off, n);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(f->fd);
    return NULL;
}

/* A pump reading a pipe leaves every byte after END in the pipe. */
static void test_pump_pipe_stops_at_end(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_PV, 3, 800, 1024, true), out = {0};
    size_t slen = s.len;
    CU_ASSERT_EQUAL_FATAL(ms_buf_append(&s, trailer, sizeof(trailer)), MS_OK);
    int p[2];
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    feeder f = {p[1], s.data, s.len};
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, feed, &f), 0);
    ms_xc_writer *w;
    ms_xc_reader *r;
    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&ms_xc_reader_to_writer_cb, w, 0, &r), MS_OK);
    int rc = ms_xc_reader_pump_fd(r, p[0]);
    if (rc)
        fprintf(stderr, "\n  pump: %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT_EQUAL(ms_xc_reader_offset(r), slen);
    CU_ASSERT_EQUAL(ms_xc_writer_finish(w), MS_OK);
    /* Drain to EOF whatever happened, so the feeder never blocks. */
    char rest[sizeof(trailer)], scratch[4096];
    size_t got = 0;
    ssize_t n;
    while ((n = read(p[0], scratch, sizeof(scratch))) > 0) {
        if (got + (size_t)n <= sizeof(rest))
            memcpy(rest + got, scratch, (size_t)n);
        got += (size_t)n;
    }
    CU_ASSERT_EQUAL(got, sizeof(trailer));
    CU_ASSERT(memcmp(rest, trailer, sizeof(trailer)) == 0);
    CU_ASSERT(out.len == slen && memcmp(out.data, s.data, slen) == 0);
    pthread_join(th, NULL);
    close(p[0]);
    ms_xc_reader_free(r);
    ms_xc_writer_free(w);
    ms_buf_free(&s);
    ms_buf_free(&out);
}

static void test_pump_truncated_pipe(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_HVM, 3, 300, 1024, false);
    int p[2];
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    feeder f = {p[1], s.data, s.len - 4100};
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, feed, &f), 0);
    ms_xc_reader *r;
    static const ms_xc_reader_cb discard = {.opaque = img_opaque, .pages = img_pages};
    image_ctx ic = {.mem = calloc(300, MS_XC_PAGE_SIZE), .pages = 300};
    CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&discard, &ic, 0, &r), MS_OK);
    int rc = ms_xc_reader_pump_fd(r, p[0]);
    CU_ASSERT_EQUAL(rc, MS_ERR_TRUNCATED);
    CU_ASSERT(strstr(ms_last_error(), "stream ends") != NULL);
    pthread_join(th, NULL);
    close(p[0]);
    ms_xc_reader_free(r);
    free(ic.mem);
    ms_buf_free(&s);
}

/* ---- corrupt streams ---------------------------------------------------- */

/* Expect `code` and a message containing every given fragment. */
static void expect_refused(const ms_buf *s, int code, const char *const *frags)
{
    int rc = scan_only(s->data, s->len);
    CU_ASSERT_EQUAL(rc, code);
    for (; *frags; frags++) {
        bool has = strstr(ms_last_error(), *frags) != NULL;
        if (!has)
            fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", ms_last_error(), *frags);
        CU_ASSERT(has);
    }
}

static void test_bad_headers(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_HVM, 3, 64, 1024, false);
    ms_buf c = {0};
    ms_buf_append(&c, s.data, s.len);

    c.data[3] = 0xfe;
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"image header", "marker", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[8] = 'Y';
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"image header", "offset 8", "bad id", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[15] = 4;
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"unknown version 4", NULL});
    c.data[15] = 1;
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"unknown version 1", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[17] = 1;
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"big-endian", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[20] = 1;
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"reserved", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[28] = 13; /* page_shift */
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"domain header", "page_shift 13", NULL});
    memcpy(c.data, s.data, s.len);
    c.data[24] = 9; /* domain type */
    expect_refused(&c, MS_ERR_CORRUPT, (const char *const[]){"domain header", "domain type 9", NULL});
    ms_buf_free(&s);
    ms_buf_free(&c);
}

/* Corrupt one record of a fresh copy and expect its index, name, offset. */
static void corrupt_record(uint32_t dom, uint32_t rec_type, size_t field, uint64_t value, int width,
                           const char *what)
{
    ms_buf s = gen_stream(dom, 3, 300, 1024, true);
    unsigned idx = find_record(&s, rec_type);
    size_t off = record_offset(&s, idx, NULL);
    uint8_t *p = s.data + off + field;
    if (width == 4)
        ms_put_le32(p, (uint32_t)value);
    else if (width == 8)
        ms_put_le64(p, value);
    else
        *p = (uint8_t)value;
    char where[96];
    snprintf(where, sizeof(where), "record %u (", idx);
    char at[64];
    snprintf(at, sizeof(at), "at offset %zu", off);
    const char *name = rec_type == 0x55 ? "unknown" : ms_xc_rec_name(rec_type);
    if (field == 0) /* the type itself was changed */
        name = ms_xc_rec_name((uint32_t)value);
    expect_refused(&s, MS_ERR_CORRUPT, (const char *const[]){where, name, at, what, NULL});
    ms_buf_free(&s);
}

static void test_bad_records(void)
{
    /* count does not match the length (one more pfn than the record holds) */
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_PAGE_DATA, 8, 1025, 4, "length");
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_PAGE_DATA, 8, 1023, 4, "length");
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_PAGE_DATA, 8, 0, 4, "count is 0");
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_PAGE_DATA, 12, 7, 4, "reserved field");
    /* oversized length */
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_SHARED_INFO, 4, (128u << 20) + 8, 4, "exceeds the maximum");
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_PAGE_DATA, 4, 0xfffffff8u, 4, "exceeds the maximum");
    /* nonzero padding: HVM_CONTEXT is 1283 bytes, so 5 bytes of padding */
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_HVM_CONTEXT, 8 + 1283 + 2, 0x5a, 1, "padding byte 2");
    /* bad pfn types and reserved bits */
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_PAGE_DATA, 16 + 8 * 3, ms_xc_entry(5, 3), 8,
                   "pfn[3] = 0x5000000000000003 has reserved page type 0x5");
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_PAGE_DATA, 16 + 8 * 9, ms_xc_entry(8, 9), 8, "reserved page type 0x8");
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_PAGE_DATA, 16 + 8 * 2, (1ull << 55) | 2, 8, "reserved bits");
    /* a data type turned data-less: count and length disagree */
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_PAGE_DATA, 16, ms_xc_entry(MS_XC_PT_XTAB, 0), 8,
                   "data-carrying types");
    /* unknown mandatory record type; END with a body */
    corrupt_record(MS_XC_DOM_X86_PV, MS_XC_REC_X86_TSC_INFO, 0, 0x55, 4, "unknown mandatory record type");
    corrupt_record(MS_XC_DOM_X86_HVM, MS_XC_REC_END, 4, 8, 4, "must be 0");
}

/* Every truncation point of a small stream is refused as truncated, with
 * the incomplete structure named; the full stream is accepted. */
static int count_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    (void)e;
    (void)d;
    *(size_t *)ctx += n;
    return MS_OK;
}

static void check_truncations(uint32_t dom, uint64_t pages)
{
    ms_buf s = gen_stream(dom, 3, pages, 1024, true);
    static const ms_xc_reader_cb cb = {.opaque = img_opaque, .pages = count_pages};
    size_t delivered = 0;
    size_t bad = 0;
    for (size_t len = 0; len <= s.len; len++) {
        ms_xc_reader *r;
        CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&cb, &delivered, 0, &r), MS_OK);
        int rc = ms_xc_reader_push(r, s.data, len, NULL);
        if (!rc)
            rc = ms_xc_reader_finish(r);
        int want = len == s.len ? MS_OK : MS_ERR_TRUNCATED;
        bool named = want == MS_OK || (len < MS_XC_HDRS_SIZE ? strstr(ms_last_error(), "header") != NULL
                                                             : strstr(ms_last_error(), "record ") != NULL);
        if (rc != want || !named) {
            if (bad++ < 3)
                fprintf(stderr, "\n  truncated at %zu: rc %d: %s\n", len, rc, ms_last_error());
        }
        ms_xc_reader_free(r);
    }
    CU_ASSERT_EQUAL(bad, 0);
    ms_buf_free(&s);
}

static void test_truncations(void)
{
    check_truncations(MS_XC_DOM_X86_HVM, 8);
    check_truncations(MS_XC_DOM_X86_PV, 20);
}

/* Optional records (bit 31) pass through; unknown mandatory ones do not. */
static void test_optional_record(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_HVM, 3, 100, 1024, false), t = {0}, out = {0};
    size_t end_off = record_offset(&s, find_record(&s, MS_XC_REC_END), NULL);
    uint8_t opt[8 + 8] = {0};
    ms_put_le32(opt, 0x80000123u);
    ms_put_le32(opt + 4, 5);
    memcpy(opt + 8, "hello", 5);
    ms_buf_append(&t, s.data, end_off);
    ms_buf_append(&t, opt, sizeof(opt));
    ms_buf_append(&t, s.data + end_off, s.len - end_off);
    CU_ASSERT_EQUAL(roundtrip(t.data, t.len, 0, &out, NULL), MS_OK);
    CU_ASSERT(out.len == t.len && memcmp(out.data, t.data, t.len) == 0);
    ms_xc_stats st;
    CU_ASSERT_EQUAL(ms_xc_scan(t.data, t.len, &st, NULL), MS_OK);
    CU_ASSERT_EQUAL(st.optional_records, 1);
    ms_buf_free(&s);
    ms_buf_free(&t);
    ms_buf_free(&out);
}

/* ---- writer refusals --------------------------------------------------------- */

static void test_writer_refusals(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_PV, 3, 100, 1024, true), out = {0};
    uint8_t page[MS_XC_PAGE_SIZE] = {0};
    uint64_t e = ms_xc_entry(0, 5);
    ms_xc_writer *w;

    /* pages before any PAGE_DATA head */
    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_opaque(w, s.data, MS_XC_HDRS_SIZE), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_pages(w, &e, page, 1), MS_ERR_CORRUPT);
    CU_ASSERT(strstr(ms_last_error(), "outside a PAGE_DATA record") != NULL);
    CU_ASSERT_EQUAL(ms_xc_writer_finish(w), MS_ERR_TRUNCATED);
    ms_xc_writer_free(w);

    /* opaque bytes where pages are due, and a page with the wrong entry */
    unsigned idx = find_record(&s, MS_XC_REC_PAGE_DATA);
    size_t off = record_offset(&s, idx, NULL);
    size_t head_list = MS_XC_PD_HEAD_SIZE + 8 * (size_t)ms_get_le32(s.data + off + 8);
    out.len = 0;
    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_opaque(w, s.data, off + head_list), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_opaque(w, s.data + off + head_list, 8), MS_ERR_CORRUPT);
    CU_ASSERT(strstr(ms_last_error(), "pages are still due") != NULL);
    ms_xc_writer_free(w);

    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_opaque(w, s.data, off + head_list), MS_OK);
    e = ms_get_le64(s.data + off + 16) ^ 1; /* the first entry's pfn, off by one */
    CU_ASSERT_EQUAL(ms_xc_writer_pages(w, &e, page, 1), MS_ERR_CORRUPT);
    CU_ASSERT(strstr(ms_last_error(), "the pfn list says") != NULL);
    ms_xc_writer_free(w);

    /* bytes after END */
    out.len = 0;
    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    ms_xc_reader *r;
    CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&ms_xc_reader_to_writer_cb, w, 0, &r), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_reader_push(r, s.data, s.len, NULL), MS_OK);
    CU_ASSERT_TRUE(ms_xc_writer_done(w));
    CU_ASSERT_EQUAL(ms_xc_writer_opaque(w, (const uint8_t *)"x", 1), MS_ERR_CORRUPT);
    CU_ASSERT(strstr(ms_last_error(), "after libxc END") != NULL);
    ms_xc_reader_free(r);
    ms_xc_writer_free(w);
    ms_buf_free(&s);
    ms_buf_free(&out);
}

/* The sink interface, driven the way the receiver does: pages in frames of
 * at most 256 that ignore record boundaries, round barriers in between. */
typedef struct frame_ctx {
    ms_xc_writer *w;
    uint64_t ent[256];
    uint8_t *pages;
    size_t n;
    int rc;
} frame_ctx;

static int fr_flush(frame_ctx *fc)
{
    if (fc->n && !fc->rc)
        fc->rc = ms_xc_writer_sink_ops.pages(fc->w, 0, 0, fc->ent, fc->pages, fc->n, MS_XC_PAGE_SIZE);
    fc->n = 0;
    return fc->rc;
}

static int fr_opaque(void *ctx, const uint8_t *d, size_t n)
{
    frame_ctx *fc = ctx;
    if (fr_flush(fc))
        return fc->rc;
    return ms_xc_writer_sink_ops.opaque(fc->w, d, n);
}

static int fr_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    frame_ctx *fc = ctx;
    for (size_t i = 0; i < n && !fc->rc; i++) {
        fc->ent[fc->n] = e[i];
        memcpy(fc->pages + fc->n * MS_XC_PAGE_SIZE, d + i * MS_XC_PAGE_SIZE, MS_XC_PAGE_SIZE);
        if (++fc->n == 256)
            fr_flush(fc);
    }
    return fc->rc;
}

static void test_sink_ops(void)
{
    ms_buf s = gen_stream(MS_XC_DOM_X86_HVM, 3, 2500, 1024, true), out = {0};
    frame_ctx fc = {.pages = malloc(256 * MS_XC_PAGE_SIZE)};
    CU_ASSERT_EQUAL_FATAL(ms_xc_writer_new(ms_xc_out_buf, &out, &fc.w), MS_OK);
    static const ms_xc_reader_cb cb = {.opaque = fr_opaque, .pages = fr_pages};
    ms_xc_reader *r;
    CU_ASSERT_EQUAL_FATAL(ms_xc_reader_new(&cb, &fc, 100, &r), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_reader_push(r, s.data, s.len, NULL), MS_OK);
    CU_ASSERT_EQUAL(fr_flush(&fc), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_sink_ops.round_end(fc.w, 1), MS_OK);
    CU_ASSERT_EQUAL(ms_xc_writer_sink_ops.end(fc.w), MS_OK);
    CU_ASSERT(out.len == s.len && memcmp(out.data, s.data, s.len) == 0);
    CU_ASSERT_EQUAL(ms_xc_writer_sink_ops.pages(fc.w, 0, 0, fc.ent, fc.pages, 1, 8192), MS_ERR_MISMATCH);
    ms_xc_reader_free(r);
    ms_xc_writer_free(fc.w);
    free(fc.pages);
    ms_buf_free(&s);
    ms_buf_free(&out);
}

/* ---- Xen's own checker --------------------------------------------------- */

static int verify_buf(const ms_buf *b)
{
    char path[] = "/tmp/ms-xc-verify-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    int fdc = fd;
    int rc = ms_xc_out_fd(&fdc, b->data, b->len);
    close(fd);
    int st = rc ? -1 : verify_stream_file(path, "libxc");
    unlink(path);
    return st;
}

static void test_verify_stream_v2(void)
{
    if (!verify_stream_available("libxc"))
        return;
    static const uint32_t doms[] = {MS_XC_DOM_X86_PV, MS_XC_DOM_X86_HVM};
    for (int d = 0; d < 2; d++) {
        for (uint32_t v = 2; v <= 3; v++) {
            ms_buf s = gen_stream(doms[d], v, 2000, 1024, true), out = {0};
            CU_ASSERT_EQUAL(verify_buf(&s), 0);
            CU_ASSERT_EQUAL(roundtrip(s.data, s.len, 7, &out, NULL), MS_OK);
            CU_ASSERT_EQUAL(verify_buf(&out), 0); /* the reconstruction */
            ms_buf_free(&s);
            ms_buf_free(&out);
        }
    }
    /* ... and the checker is not a rubber stamp: it refuses a bad type. */
    ms_buf s = gen_stream(MS_XC_DOM_X86_PV, 3, 200, 1024, false);
    size_t off = record_offset(&s, find_record(&s, MS_XC_REC_PAGE_DATA), NULL);
    ms_put_le64(s.data + off + 16, ms_xc_entry(6, 0));
    CU_ASSERT_NOT_EQUAL(verify_buf(&s), 0);
    ms_buf_free(&s);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"round trip PV, random chunks", test_roundtrip_pv},
        {"round trip HVM, random chunks", test_roundtrip_hvm},
        {"round trip v2 streams", test_roundtrip_v2},
        {"round trip with small batches", test_roundtrip_small_batches},
        {"reader delivers the final memory", test_final_image},
        {"stream statistics", test_stats},
        {"stops at END, trailing bytes unread", test_trailing_bytes},
        {"pump on a pipe leaves libxl bytes", test_pump_pipe_stops_at_end},
        {"pump on a truncated pipe", test_pump_truncated_pipe},
        {"bad image/domain headers", test_bad_headers},
        {"bad records named by index/type/offset", test_bad_records},
        {"every truncation point", test_truncations},
        {"optional records pass through", test_optional_record},
        {"writer refusals", test_writer_refusals},
        {"sink ops with 256-page frames", test_sink_ops},
        {"verify-stream-v2 accepts generated and rebuilt streams", test_verify_stream_v2},
        {NULL, NULL},
    };
    ms_test_add_suite("xen", cases);
})
