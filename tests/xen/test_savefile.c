/* `xl save` files and libxl streams: the container reader and writer
 * (xen/savefile.c) on generated files, their refusals, and Xen's own
 * checker on the generated and rebuilt files. No hypervisor needed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/ms_test.h"
#include "tests/xen/verify_stream.h"
#include "xen/xen.h"

#define CONFIG "{\"c_info\":{\"type\":\"hvm\",\"name\":\"guest\"},\"b_info\":{\"max_memkb\":8192}}"

static ms_xc_gen_config gen_cfg(uint32_t dom)
{
    ms_xc_gen_config cfg = {.dom_type = dom, .pages = 600, .rounds = 3, .dirty = 0.1, .batch = 256, .seed = 7,
                            .all_types = true};
    return cfg;
}

static ms_buf gen_xl(uint32_t dom, const char *config)
{
    ms_xc_gen_config cfg = gen_cfg(dom);
    ms_buf b = {0};
    CU_ASSERT_EQUAL_FATAL(ms_save_gen_xl(&cfg, config, ms_xc_out_buf, &b), MS_OK);
    return b;
}

/* Offset of the libxl header: after xl's header and optional data. */
static size_t libxl_start(const ms_buf *b) { return MS_XL_HDR_SIZE + ms_get_le32(b->data + 44); }

/* Offset of the libxc stream: after the LIBXC_CONTEXT record header. */
static size_t libxc_start(const ms_buf *b)
{
    size_t off = libxl_start(b) + MS_LIBXL_HDR_SIZE;
    while (ms_get_le32(b->data + off) != MS_LIBXL_REC_LIBXC_CONTEXT)
        off += MS_XC_RHDR_SIZE + ms_xc_padded(ms_get_le32(b->data + off + 4));
    return off + MS_XC_RHDR_SIZE;
}

typedef struct counts {
    ms_save_writer *w;
    unsigned xl_headers, libxl_headers, libxl_records, emulator_records, xc_records;
    uint64_t pages;
    ms_xl_header xl;
} counts;

static int c_xl(void *ctx, const ms_xl_header *h)
{
    counts *c = ctx;
    c->xl_headers++;
    c->xl = *h;
    return MS_OK;
}

static int c_libxl(void *ctx, const ms_libxl_header *h)
{
    (void)h;
    ((counts *)ctx)->libxl_headers++;
    return MS_OK;
}

static int c_rec(void *ctx, const ms_libxl_record *rec)
{
    counts *c = ctx;
    c->libxl_records++;
    if (rec->type == MS_LIBXL_REC_EMULATOR_CONTEXT || rec->type == MS_LIBXL_REC_EMULATOR_XENSTORE_DATA)
        c->emulator_records += rec->emulator_id == 2;
    return MS_OK;
}

static int c_xcrec(void *ctx, const ms_xc_record *rec)
{
    (void)rec;
    ((counts *)ctx)->xc_records++;
    return MS_OK;
}

static int c_opaque(void *ctx, const uint8_t *d, size_t n) { return ms_save_writer_opaque(((counts *)ctx)->w, d, n); }

static int c_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    counts *c = ctx;
    c->pages += n;
    return ms_save_writer_pages(c->w, e, d, n);
}

static const ms_save_reader_cb count_cb = {
    .xl_header = c_xl, .libxl_header = c_libxl, .libxl_record = c_rec,
    .xc = {.record = c_xcrec, .opaque = c_opaque, .pages = c_pages},
};

static int discard_opaque(void *ctx, const uint8_t *d, size_t n)
{
    (void)ctx, (void)d, (void)n;
    return MS_OK;
}

static int discard_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)ctx, (void)rec, (void)e, (void)d, (void)n;
    return MS_OK;
}

static const ms_save_reader_cb discard_cb = {.xc = {.opaque = discard_opaque, .pages = discard_pages}};

typedef struct find_ctx {
    uint32_t type;
    ms_libxl_record found;
    bool seen;
} find_ctx;

static int find_rec(void *ctx, const ms_libxl_record *rec)
{
    find_ctx *f = ctx;
    if (rec->type == f->type && !f->seen) {
        f->found = *rec;
        f->seen = true;
    }
    return MS_OK;
}

/* The first libxl record of a type, as the reader reports it. */
static ms_libxl_record find_libxl(const ms_buf *b, uint32_t type)
{
    ms_save_reader_cb cb = discard_cb;
    find_ctx f = {.type = type};
    ms_save_reader *r = NULL;
    cb.libxl_record = find_rec;
    CU_ASSERT_EQUAL_FATAL(ms_save_reader_new(&cb, &f, 0, &r), MS_OK);
    CU_ASSERT_EQUAL(ms_save_reader_push(r, b->data, b->len, NULL), MS_OK);
    ms_save_reader_free(r);
    CU_ASSERT_FATAL(f.seen);
    return f.found;
}

/* Reader -> writer in random chunks (half 1..64 bytes); *used: input taken. */
static int roundtrip(const uint8_t *in, size_t len, counts *c, ms_buf *out, size_t *used_total)
{
    ms_save_reader *r = NULL;
    memset(c, 0, sizeof(*c));
    int rc = ms_save_writer_new(ms_xc_out_buf, out, &c->w);
    if (!rc)
        rc = ms_save_reader_new(&count_cb, c, 5, &r);
    size_t off = 0;
    while (!rc && off < len && !ms_save_reader_done(r)) {
        size_t n = (ms_test_rand() & 1) ? 1 + ms_test_rand() % 64 : 1 + ms_test_rand() % 65536, used = 0;
        if (n > len - off)
            n = len - off;
        rc = ms_save_reader_push(r, in + off, n, &used);
        off += used;
        if (!rc && used < n && !ms_save_reader_done(r))
            rc = MS_ERR_INVAL;
    }
    if (!rc)
        rc = ms_save_reader_finish(r);
    if (!rc)
        rc = ms_save_writer_finish(c->w);
    if (used_total)
        *used_total = off;
    ms_save_reader_free(r);
    ms_save_writer_free(c->w);
    c->w = NULL;
    return rc;
}

static void check_roundtrip(uint32_t dom, const char *config)
{
    ms_buf in = gen_xl(dom, config), out = {0};
    counts c;
    size_t used = 0;
    CU_ASSERT_EQUAL(ms_save_detect(in.data, in.len), MS_SAVE_XL);
    CU_ASSERT_EQUAL_FATAL(roundtrip(in.data, in.len, &c, &out, &used), MS_OK);
    CU_ASSERT_EQUAL(used, in.len);
    CU_ASSERT_EQUAL_FATAL(out.len, in.len);
    CU_ASSERT(memcmp(out.data, in.data, in.len) == 0);
    CU_ASSERT_EQUAL(c.xl_headers, 1);
    CU_ASSERT_EQUAL(c.xl.config_len, config ? strlen(config) + 1 : 0);
    CU_ASSERT_EQUAL(c.xl.mandatory_flags, MS_XL_FLAG_STREAMV2 | (config ? MS_XL_FLAG_JSON : 0));
    CU_ASSERT_EQUAL(c.libxl_headers, 1);
    bool hvm = dom == MS_XC_DOM_X86_HVM;
    CU_ASSERT_EQUAL(c.libxl_records, hvm ? 4 : 2); /* [XS data,] LIBXC_CONTEXT, [emulator ctx,] END */
    CU_ASSERT_EQUAL(c.emulator_records, hvm ? 2 : 0);
    CU_ASSERT(c.pages > 600);
    CU_ASSERT(c.xc_records > 5);
    ms_buf_free(&in);
    ms_buf_free(&out);
}

static void test_roundtrip_pv(void) { check_roundtrip(MS_XC_DOM_X86_PV, CONFIG); }
static void test_roundtrip_hvm(void) { check_roundtrip(MS_XC_DOM_X86_HVM, CONFIG); }
static void test_roundtrip_no_config(void) { check_roundtrip(MS_XC_DOM_X86_HVM, NULL); }

/* The same reader takes a bare libxl stream and a bare libxc stream. */
static void test_bare_streams(void)
{
    ms_buf in = gen_xl(MS_XC_DOM_X86_HVM, CONFIG), out = {0};
    counts c;
    size_t lx = libxl_start(&in), xc = libxc_start(&in);
    CU_ASSERT_EQUAL(ms_save_detect(in.data + lx, in.len - lx), MS_SAVE_LIBXL);
    CU_ASSERT_EQUAL(roundtrip(in.data + lx, in.len - lx, &c, &out, NULL), MS_OK);
    CU_ASSERT(out.len == in.len - lx && !memcmp(out.data, in.data + lx, out.len));
    CU_ASSERT_EQUAL(c.xl_headers, 0);
    CU_ASSERT_EQUAL(c.libxl_records, 4);
    out.len = 0;
    /* libxc alone: ends at libxc END, the libxl records after it stay unread. */
    size_t used = 0;
    CU_ASSERT_EQUAL(ms_save_detect(in.data + xc, in.len - xc), MS_SAVE_LIBXC);
    CU_ASSERT_EQUAL(roundtrip(in.data + xc, in.len - xc, &c, &out, &used), MS_OK);
    CU_ASSERT_EQUAL(used, out.len);
    ms_libxl_record emu = find_libxl(&in, MS_LIBXL_REC_EMULATOR_CONTEXT);
    CU_ASSERT_EQUAL(xc + used, emu.offset); /* EMULATOR_CONTEXT and END remain */
    CU_ASSERT(!memcmp(out.data, in.data + xc, out.len));
    CU_ASSERT_EQUAL(c.libxl_records, 0);
    ms_buf_free(&in);
    ms_buf_free(&out);
}

/* Stops at libxl END: what follows (xl's migration handshake) is left. */
static void test_stops_at_end(void)
{
    ms_buf in = gen_xl(MS_XC_DOM_X86_PV, CONFIG), out = {0};
    size_t len = in.len, used = 0;
    counts c;
    CU_ASSERT_EQUAL(ms_buf_append(&in, "domain received, ready to unpause", 33), MS_OK);
    CU_ASSERT_EQUAL(roundtrip(in.data, in.len, &c, &out, &used), MS_OK);
    CU_ASSERT_EQUAL(used, len);
    CU_ASSERT_EQUAL(out.len, len);
    /* The writer refuses bytes after END. */
    ms_save_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_save_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    out.len = 0;
    CU_ASSERT_EQUAL(ms_save_writer_opaque(w, in.data, in.len), MS_ERR_CORRUPT);
    ms_save_writer_free(w);
    ms_buf_free(&in);
    ms_buf_free(&out);
}

/* Read the whole buffer in one push; the status (finish's if the push passed). */
static int read_all(const uint8_t *d, size_t len)
{
    ms_save_reader *r = NULL;
    int rc = ms_save_reader_new(&discard_cb, NULL, 0, &r);
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    rc = ms_save_reader_push(r, d, len, NULL);
    if (!rc)
        rc = ms_save_reader_finish(r);
    ms_save_reader_free(r);
    return rc;
}

static void expect(const ms_buf *b, int code, const char *frag1, const char *frag2)
{
    int rc = read_all(b->data, b->len);
    const char *msg = ms_last_error();
    CU_ASSERT_EQUAL(rc, code);
    if (rc != code || !strstr(msg, frag1) || (frag2 && !strstr(msg, frag2)))
        printf("\n  got %d: %s (wanted %d with '%s' '%s')\n", rc, msg, code, frag1, frag2 ? frag2 : "");
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, frag1));
    if (frag2)
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, frag2));
}

/* A copy of the PV file with a u32 at `off` replaced (LE or BE). */
static ms_buf patched(size_t off, uint32_t v, bool big_endian)
{
    ms_buf b = gen_xl(MS_XC_DOM_X86_PV, CONFIG);
    if (big_endian) {
        uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        memcpy(b.data + off, be, 4);
    } else {
        ms_put_le32(b.data + off, v);
    }
    return b;
}

static void expect_patch(size_t off, uint32_t v, bool be, const char *frag1, const char *frag2)
{
    ms_buf b = patched(off, v, be);
    expect(&b, MS_ERR_CORRUPT, frag1, frag2);
    ms_buf_free(&b);
}

static void test_bad_xl_header(void)
{
    ms_buf b = gen_xl(MS_XC_DOM_X86_PV, CONFIG);
    size_t opt = ms_get_le32(b.data + 44);
    b.data[20] ^= 1;
    expect(&b, MS_ERR_CORRUPT, "xl header at offset 0: bad magic", NULL);
    b.data[20] ^= 1;
    b.data[0] = 'Y';
    expect(&b, MS_ERR_CORRUPT, "not an xl save file, libxl stream or libxc stream", NULL);
    ms_buf_free(&b);
    expect_patch(32, 0x04030201u, false, "offset 32", "big-endian host");
    expect_patch(32, 0x01020305u, false, "offset 32", "bad byte order mark 0x01020305");
    expect_patch(36, 0x7u, false, "offset 36", "unknown mandatory flags 0x00000007");
    expect_patch(36, MS_XL_FLAG_JSON, false, "offset 36", "legacy (pre-Xen 4.6) stream");
    expect_patch(44, MS_XL_OPTDATA_MAX + 1, false, "offset 44", "exceeds the limit");
    expect_patch(44, 3, false, "offset 44", "cannot hold the config length");
    expect_patch(48, (uint32_t)opt - 3, false, "config length", "exceeds the");
}

static void test_bad_libxl(void)
{
    ms_buf b = gen_xl(MS_XC_DOM_X86_PV, CONFIG);
    size_t lx = libxl_start(&b), xc = libxc_start(&b);
    size_t rec0 = lx + MS_LIBXL_HDR_SIZE, end = b.len - 8;
    char at[64];
    ms_buf_free(&b);
    snprintf(at, sizeof at, "libxl header at offset %zu", lx);
    expect_patch(lx + 4, 0x12345678u, true, at, "bad ident");
    expect_patch(lx + 8, 3, true, at, "unknown version 3");
    expect_patch(lx + 12, MS_LIBXL_OPT_BIG_ENDIAN, true, at, "big-endian stream");
    expect_patch(lx + 12, 0x10, true, at, "reserved option bits 0x00000010");
    snprintf(at, sizeof at, "libxl record 0 (unknown 0x00000009) at offset %zu", rec0);
    expect_patch(rec0, 9, false, at, "unknown mandatory record type");
    snprintf(at, sizeof at, "libxl record 0 (LIBXC_CONTEXT) at offset %zu", rec0);
    expect_patch(rec0 + 4, 8, false, at, "this record has no body");
    expect_patch(rec0 + 4, MS_LIBXL_REC_LENGTH_MAX + 1, false, at, "exceeds the maximum");
    snprintf(at, sizeof at, "libxl record 0 (END) at offset %zu", rec0);
    expect_patch(rec0, MS_LIBXL_REC_END, false, at, "END before any LIBXC_CONTEXT");
    snprintf(at, sizeof at, "libxl record 0 (EMULATOR_CONTEXT) at offset %zu", rec0);
    expect_patch(rec0, MS_LIBXL_REC_EMULATOR_CONTEXT, false, at, "cannot hold the emulator header");
    snprintf(at, sizeof at, "libxl record 1 (LIBXC_CONTEXT) at offset %zu", end);
    expect_patch(end, MS_LIBXL_REC_LIBXC_CONTEXT, false, at, "a second LIBXC_CONTEXT");
    snprintf(at, sizeof at, "libxl record 1 (CHECKPOINT_STATE) at offset %zu", end);
    expect_patch(end, MS_LIBXL_REC_CHECKPOINT_STATE, false, at, "length 0, not 4");
    /* Inside the libxc stream: the libxc reader's message, placed in the file. */
    snprintf(at, sizeof at, "xl save file: libxc stream at offset %zu", xc);
    expect_patch(xc + 12, 4, true, at, "unknown version 4");
    /* An optional record with a body passes; nonzero padding does not. */
    ms_buf o = gen_xl(MS_XC_DOM_X86_HVM, CONFIG);
    ms_libxl_record emu = find_libxl(&o, MS_LIBXL_REC_EMULATOR_CONTEXT);
    CU_ASSERT_EQUAL(emu.index, 2);
    CU_ASSERT_EQUAL(emu.emulator_id, 2);
    CU_ASSERT_FATAL(emu.length % 8 != 0);
    ms_put_le32(o.data + emu.offset, 0x80000123u);
    CU_ASSERT_EQUAL(read_all(o.data, o.len), MS_OK);
    o.data[emu.offset + 8 + emu.length] = 0x5a;
    char why[80];
    snprintf(at, sizeof at, "libxl record 2 (optional 0x80000123) at offset %llu", (unsigned long long)emu.offset);
    snprintf(why, sizeof why, "padding byte 0 after the %u-byte body is 0x5a", emu.length);
    expect(&o, MS_ERR_CORRUPT, at, why);
    ms_buf_free(&o);
}

/* Every truncation point of a small file: MS_ERR_TRUNCATED, never a pass
 * and never a crash; a few messages checked. */
static void test_truncations(void)
{
    ms_xc_gen_config cfg = {.dom_type = MS_XC_DOM_X86_HVM, .pages = 40, .rounds = 2, .batch = 16, .seed = 3};
    ms_buf b = {0};
    CU_ASSERT_EQUAL_FATAL(ms_save_gen_xl(&cfg, CONFIG, ms_xc_out_buf, &b), MS_OK);
    unsigned bad = 0;
    for (size_t cut = 0; cut < b.len; cut += (cut < 400 || cut > b.len - 400) ? 1 : 97) {
        int rc = read_all(b.data, cut);
        bad += rc != MS_ERR_TRUNCATED;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(read_all(b.data, 20), MS_ERR_TRUNCATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "ends inside the xl header (20 of 48 bytes)"));
    CU_ASSERT_EQUAL(read_all(b.data, 60), MS_ERR_TRUNCATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "ends inside xl's optional data (12 of"));
    CU_ASSERT_EQUAL(read_all(b.data, b.len - 8), MS_ERR_TRUNCATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "before libxl END"));
    CU_ASSERT_EQUAL(read_all(b.data, libxc_start(&b) + 100), MS_ERR_TRUNCATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "libxc stream at offset"));
    CU_ASSERT_EQUAL(read_all(b.data, b.len), MS_OK);
    ms_buf_free(&b);
}

/* Stats from an fd, as `migstream inspect` shows them. */
static void test_scan_fd(void)
{
    ms_buf b = gen_xl(MS_XC_DOM_X86_HVM, CONFIG);
    char path[] = "/tmp/ms-savefile-XXXXXX";
    int fd = mkstemp(path), fdc = fd;
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(ms_xc_out_fd(&fdc, b.data, b.len), MS_OK);
    lseek(fd, 0, SEEK_SET);
    ms_save_stats st;
    CU_ASSERT_EQUAL(ms_save_scan_fd(fd, &st), MS_OK);
    close(fd);
    unlink(path);
    ms_xc_stats xs;
    size_t xc = libxc_start(&b);
    CU_ASSERT_EQUAL(ms_xc_scan(b.data + xc, b.len - xc, &xs, NULL), MS_OK);
    CU_ASSERT_EQUAL(st.kind, MS_SAVE_XL);
    CU_ASSERT_EQUAL(st.bytes, b.len);
    CU_ASSERT(st.has_xl && st.has_libxl);
    CU_ASSERT_EQUAL(st.xl.config_len, strlen(CONFIG) + 1);
    CU_ASSERT_EQUAL(st.libxl_records, 4);
    CU_ASSERT_EQUAL(st.libxl_count[MS_LIBXL_REC_EMULATOR_CONTEXT], 1);
    CU_ASSERT_EQUAL(st.libxc_offset, xc);
    CU_ASSERT_EQUAL(st.xc.bytes, xs.bytes);
    CU_ASSERT_EQUAL(st.xc.records, xs.records);
    CU_ASSERT_EQUAL(st.xc.data_pages, xs.data_pages);
    CU_ASSERT_EQUAL(st.xc.zero_pages, xs.zero_pages);
    CU_ASSERT_EQUAL(st.xc.resent_pages, xs.resent_pages);
    ms_buf_free(&b);
}

/* The writer as a sink refuses pages outside the libxc stream and an early end. */
static void test_writer_refusals(void)
{
    ms_buf out = {0};
    ms_save_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_save_writer_new(ms_xc_out_buf, &out, &w), MS_OK);
    /* Pages outside the libxc stream are refused, naming where. */
    uint64_t pfn = 0;
    static uint8_t page[MS_XC_PAGE_SIZE];
    CU_ASSERT_EQUAL(ms_save_writer_sink_ops.pages(w, 0, 0, &pfn, page, 1, MS_XC_PAGE_SIZE), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "outside the libxc stream"));
    CU_ASSERT_EQUAL(ms_save_writer_sink_ops.end(w), MS_ERR_TRUNCATED);
    ms_save_writer_free(w);
    ms_buf_free(&out);
}

/* A buffer through verify-stream-v2 as `format`. */
static int verify_buf(const ms_buf *b, const char *format)
{
    char path[] = "/tmp/ms-xl-verify-XXXXXX";
    int fd = mkstemp(path), fdc = fd;
    if (fd < 0)
        return -1;
    int rc = ms_xc_out_fd(&fdc, b->data, b->len);
    close(fd);
    int st = rc ? -1 : verify_stream_file(path, format);
    unlink(path);
    return st;
}

/* Xen's checker on the generated PV file and its reconstruction (format
 * xl). HVM files carry EMULATOR_XENSTORE_DATA, which 4.17's checker under
 * Python 3 refuses whatever its content (it compares a byte with a str:
 * "Data not NUL terminated"), so for HVM it checks the embedded libxc
 * stream. */
static void test_verify_stream_v2(void)
{
    if (!verify_stream_available("xl"))
        return;
    ms_buf in = gen_xl(MS_XC_DOM_X86_PV, CONFIG), out = {0};
    counts c;
    CU_ASSERT_EQUAL(verify_buf(&in, "xl"), 0);
    CU_ASSERT_EQUAL(roundtrip(in.data, in.len, &c, &out, NULL), MS_OK);
    CU_ASSERT_EQUAL(verify_buf(&out, "xl"), 0);
    in.data[36] = 0; /* no STREAMv2 flag: the checker refuses it too */
    CU_ASSERT_NOT_EQUAL(verify_buf(&in, "xl"), 0);
    ms_buf_free(&in);
    ms_buf_free(&out);
    ms_buf h = gen_xl(MS_XC_DOM_X86_HVM, CONFIG), hx = {0};
    size_t xc = libxc_start(&h);
    ms_libxl_record emu = find_libxl(&h, MS_LIBXL_REC_EMULATOR_CONTEXT);
    CU_ASSERT_EQUAL(ms_buf_append(&hx, h.data + xc, emu.offset - xc), MS_OK);
    CU_ASSERT_EQUAL(verify_buf(&hx, "libxc"), 0);
    ms_buf_free(&h);
    ms_buf_free(&hx);
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"xl save file round trip, PV, random chunks", test_roundtrip_pv},
        {"xl save file round trip, HVM with emulator records", test_roundtrip_hvm},
        {"xl save file without a config", test_roundtrip_no_config},
        {"bare libxl and libxc streams", test_bare_streams},
        {"stops at libxl END", test_stops_at_end},
        {"bad xl headers named by offset", test_bad_xl_header},
        {"bad libxl headers and records named by index/type/offset", test_bad_libxl},
        {"every truncation point", test_truncations},
        {"statistics from an fd", test_scan_fd},
        {"writer refusals", test_writer_refusals},
        {"verify-stream-v2 -f xl accepts generated and rebuilt files", test_verify_stream_v2},
        {NULL, NULL},
    };
    ms_test_add_suite("xen", cases);
})
