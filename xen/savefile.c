/* `xl save` files and libxl streams around a libxc stream (see xen.h).
 *
 * One container parser serves both directions: the reader feeds it the
 * file and hands the libxc part to an ms_xc_reader; the writer feeds it the
 * reader's opaque bytes and hands the libxc part to an ms_xc_writer. So the
 * receiving side checks the container exactly as the sending side did, and
 * finds the end of the libxc part (libxc END) the same way. Small
 * structures are gathered and checked before any of their bytes move on;
 * record bodies stream through. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xen/xen_int.h"

enum cstate {
    C_DETECT,     /* gathering the first 12 bytes */
    C_XL_HDR,     /* gathering xl's 48-byte header */
    C_XL_CFGLEN,  /* gathering the u32 config length of the optional data */
    C_XL_OPT,     /* passing the rest of the optional data (the config) */
    C_LIBXL_HDR,  /* gathering libxl's 16-byte header */
    C_RHDR,       /* gathering a libxl record header */
    C_EMU_HDR,    /* gathering an emulator record's id/index */
    C_BODY,       /* passing a record body and its padding */
    C_LIBXC,      /* inside the libxc stream */
    C_DONE,
    C_FAILED,
};

/* Enough to tell the kinds apart: libxc's marker and "XENF" id, libxl's
 * ident, the start of xl's magic. */
#define DETECT_SIZE 12u

/* What the container does with the bytes it has checked, and with the
 * libxc part: reader and writer differ only here. */
typedef struct ctr_ops {
    int (*bytes)(void *ctx, const uint8_t *p, size_t n);
    int (*libxc)(void *ctx, const uint8_t *p, size_t n, size_t *used, bool *done);
    size_t (*libxc_want)(void *ctx);
    int (*libxc_finish)(void *ctx);
} ctr_ops;

typedef struct ctr {
    const ctr_ops *ops;
    void *ops_ctx;
    const ms_save_reader_cb *cb; /* reporting callbacks (reader only) */
    void *cb_ctx;
    const char *role;            /* "" or "rebuilding " in messages */
    enum cstate st;
    enum ms_save_kind kind;
    uint64_t off;
    uint8_t head[MS_XL_HDR_SIZE];
    size_t head_len;
    ms_xl_header xl;
    uint32_t opt_left;
    ms_libxl_record rec;
    uint64_t next_index;
    uint32_t body_done;
    bool libxc_seen;
    uint64_t libxc_off;
} ctr;

static const char *const libxl_names[MS_LIBXL_REC_TYPE_COUNT] = {
    "END", "LIBXC_CONTEXT", "EMULATOR_XENSTORE_DATA", "EMULATOR_CONTEXT", "CHECKPOINT_END", "CHECKPOINT_STATE",
};

const char *ms_libxl_rec_name(uint32_t type)
{
    static __thread char buf[32];
    if (type < MS_LIBXL_REC_TYPE_COUNT)
        return libxl_names[type];
    snprintf(buf, sizeof(buf), "%s 0x%08x", (type & MS_XC_REC_OPTIONAL) ? "optional" : "unknown", type);
    return buf;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t be64(const uint8_t *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

enum ms_save_kind ms_save_detect(const uint8_t *p, size_t n)
{
    /* The id too: a memory image may well start with eight 0xff bytes. */
    if (n >= 12 && ms_get_le64(p) == MS_XC_MARKER && be32(p + 8) == MS_XC_ID)
        return MS_SAVE_LIBXC;
    if (n >= 8 && be64(p) == MS_LIBXL_IDENT)
        return MS_SAVE_LIBXL;
    if (n >= MS_XL_MAGIC_SIZE && !memcmp(p, MS_XL_MAGIC, MS_XL_MAGIC_SIZE))
        return MS_SAVE_XL;
    return MS_SAVE_UNKNOWN;
}

const char *ms_save_kind_name(enum ms_save_kind k)
{
    static const char *const names[] = {"unknown", "libxc", "libxl", "xl"};
    return (unsigned)k < 4 ? names[k] : "unknown";
}

static const char *ctr_what(const ctr *c)
{
    return c->kind == MS_SAVE_LIBXL ? "libxl stream" : "xl save file";
}

/* ---- errors --------------------------------------------------------------- */

static int cfail(ctr *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(ctr *c, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    enum cstate st = c->st;
    c->st = C_FAILED;
    if (st == C_RHDR || st == C_EMU_HDR || st == C_BODY)
        return ms_error(MS_ERR_CORRUPT, "%s%s: libxl record %llu (%s) at offset %llu: %s", c->role, ctr_what(c),
                        (unsigned long long)c->rec.index, ms_libxl_rec_name(c->rec.type),
                        (unsigned long long)c->rec.offset, what);
    return ms_error(MS_ERR_CORRUPT, "%s%s: %s", c->role, ctr_what(c), what);
}

static int cwrap(ctr *c, int rc)
{
    c->st = C_FAILED;
    if (rc > 0)
        rc = MS_ERR_INVAL;
    if (c->kind == MS_SAVE_LIBXC)
        return rc;
    return ms_error_wrap(rc, "%s%s: libxc stream at offset %llu", c->role, ctr_what(c),
                         (unsigned long long)c->libxc_off);
}

/* ---- the state machine ------------------------------------------------------ */

static void ctr_init(ctr *c, const ctr_ops *ops, void *ops_ctx, const char *role)
{
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->ops_ctx = ops_ctx;
    c->role = role;
    c->st = C_DETECT;
}

static bool cgather(ctr *c, const uint8_t **p, size_t *n, size_t need)
{
    size_t take = need - c->head_len;
    if (take > *n)
        take = *n;
    memcpy(c->head + c->head_len, *p, take);
    c->head_len += take;
    *p += take;
    *n -= take;
    return c->head_len == need;
}

/* Checked bytes move on. */
static int cemit(ctr *c, const uint8_t *p, size_t n)
{
    if (n == 0)
        return MS_OK;
    int rc = c->ops->bytes(c->ops_ctx, p, n);
    if (rc) {
        c->st = C_FAILED;
        return rc > 0 ? MS_ERR_INVAL : rc;
    }
    c->off += n;
    return MS_OK;
}

static int cnotify(ctr *c, int rc)
{
    if (rc == MS_OK)
        return MS_OK;
    c->st = C_FAILED;
    return ms_error_wrap(rc > 0 ? MS_ERR_INVAL : rc, "%s at offset %llu", ctr_what(c), (unsigned long long)c->off);
}

static void next_rec(ctr *c)
{
    c->rec = (ms_libxl_record){.index = c->next_index++, .offset = c->off, .type = UINT32_MAX};
    c->head_len = 0;
    c->st = C_RHDR;
}

static int enter_libxc(ctr *c, const uint8_t *p, size_t n, size_t *used)
{
    bool done = false;
    int rc = c->ops->libxc(c->ops_ctx, p, n, used, &done);
    c->off += *used;
    if (rc)
        return cwrap(c, rc);
    if (done) {
        if (c->kind == MS_SAVE_LIBXC)
            c->st = C_DONE;
        else
            next_rec(c);
    }
    return MS_OK;
}

static int on_detect(ctr *c)
{
    c->kind = ms_save_detect(c->head, DETECT_SIZE);
    if (c->kind == MS_SAVE_UNKNOWN && !memcmp(c->head, MS_XL_MAGIC, DETECT_SIZE))
        c->kind = MS_SAVE_XL; /* the rest of the magic is checked with the header */
    switch (c->kind) {
    case MS_SAVE_XL: c->st = C_XL_HDR; return MS_OK;
    case MS_SAVE_LIBXL: c->st = C_LIBXL_HDR; return MS_OK;
    case MS_SAVE_LIBXC: {
        size_t used = 0;
        c->st = C_LIBXC;
        c->head_len = 0;
        return enter_libxc(c, c->head, DETECT_SIZE, &used);
    }
    default:
        c->st = C_FAILED;
        return ms_error(MS_ERR_CORRUPT, "%snot an xl save file, libxl stream or libxc stream (first bytes "
                                        "%02x%02x%02x%02x %02x%02x%02x%02x %02x%02x%02x%02x)", c->role, c->head[0],
                        c->head[1], c->head[2], c->head[3], c->head[4], c->head[5], c->head[6], c->head[7],
                        c->head[8], c->head[9], c->head[10], c->head[11]);
    }
}

static int check_xl_hdr(ctr *c)
{
    const uint8_t *h = c->head;
    uint32_t order = ms_get_le32(h + 32);
    if (memcmp(h, MS_XL_MAGIC, MS_XL_MAGIC_SIZE))
        return cfail(c, "xl header at offset 0: bad magic");
    if (order == 0x04030201u)
        return cfail(c, "xl header at offset 32: byte order 0x%08x: written by a big-endian host", order);
    if (order != MS_XL_BYTEORDER)
        return cfail(c, "xl header at offset 32: bad byte order mark 0x%08x", order);
    c->xl.mandatory_flags = ms_get_le32(h + 36);
    c->xl.optional_flags = ms_get_le32(h + 40);
    c->xl.optional_data_len = ms_get_le32(h + 44);
    if (c->xl.mandatory_flags & ~MS_XL_FLAGS_KNOWN)
        return cfail(c, "xl header at offset 36: unknown mandatory flags 0x%08x", c->xl.mandatory_flags);
    if (!(c->xl.mandatory_flags & MS_XL_FLAG_STREAMV2))
        return cfail(c, "xl header at offset 36: mandatory flags 0x%08x: a legacy (pre-Xen 4.6) stream, "
                        "not supported", c->xl.mandatory_flags);
    if (c->xl.optional_data_len > MS_XL_OPTDATA_MAX)
        return cfail(c, "xl header at offset 44: optional data length %u exceeds the limit %u",
                     c->xl.optional_data_len, MS_XL_OPTDATA_MAX);
    if (c->xl.optional_data_len && c->xl.optional_data_len < 4)
        return cfail(c, "xl header at offset 44: optional data length %u cannot hold the config length",
                     c->xl.optional_data_len);
    int rc = cemit(c, h, MS_XL_HDR_SIZE);
    if (rc)
        return rc;
    c->head_len = 0;
    if (c->xl.optional_data_len) {
        c->st = C_XL_CFGLEN;
        return MS_OK;
    }
    c->st = C_LIBXL_HDR;
    return cnotify(c, c->cb && c->cb->xl_header ? c->cb->xl_header(c->cb_ctx, &c->xl) : 0);
}

static int check_cfglen(ctr *c)
{
    c->xl.config_len = ms_get_le32(c->head);
    if (c->xl.config_len > c->xl.optional_data_len - 4)
        return cfail(c, "xl optional data at offset %u: config length %u exceeds the %u bytes of optional data "
                        "after it", MS_XL_HDR_SIZE, c->xl.config_len, c->xl.optional_data_len - 4);
    int rc = cemit(c, c->head, 4);
    if (rc)
        return rc;
    c->head_len = 0;
    c->opt_left = c->xl.optional_data_len - 4;
    c->st = c->opt_left ? C_XL_OPT : C_LIBXL_HDR;
    return cnotify(c, c->cb && c->cb->xl_header ? c->cb->xl_header(c->cb_ctx, &c->xl) : 0);
}

static int check_libxl_hdr(ctr *c)
{
    ms_libxl_header h = {.version = be32(c->head + 8), .options = be32(c->head + 12)};
    uint64_t at = c->off;
    if (be64(c->head) != MS_LIBXL_IDENT)
        return cfail(c, "libxl header at offset %llu: bad ident 0x%016llx", (unsigned long long)at,
                     (unsigned long long)be64(c->head));
    if (h.version != MS_LIBXL_VERSION)
        return cfail(c, "libxl header at offset %llu: unknown version %u", (unsigned long long)at, h.version);
    if (h.options & MS_LIBXL_OPT_BIG_ENDIAN)
        return cfail(c, "libxl header at offset %llu: big-endian stream, not supported", (unsigned long long)at);
    if (h.options & ~(MS_LIBXL_OPT_BIG_ENDIAN | MS_LIBXL_OPT_LEGACY))
        return cfail(c, "libxl header at offset %llu: reserved option bits 0x%08x", (unsigned long long)at,
                     h.options);
    int rc = cemit(c, c->head, MS_LIBXL_HDR_SIZE);
    if (rc)
        return rc;
    next_rec(c);
    return cnotify(c, c->cb && c->cb->libxl_header ? c->cb->libxl_header(c->cb_ctx, &h) : 0);
}

static bool is_emulator(uint32_t type)
{
    return type == MS_LIBXL_REC_EMULATOR_XENSTORE_DATA || type == MS_LIBXL_REC_EMULATOR_CONTEXT;
}

static int check_rhdr_fields(ctr *c)
{
    uint32_t t = c->rec.type, len = c->rec.length;
    if (t >= MS_LIBXL_REC_TYPE_COUNT && !(t & MS_XC_REC_OPTIONAL))
        return cfail(c, "unknown mandatory record type");
    if (len > MS_LIBXL_REC_LENGTH_MAX)
        return cfail(c, "length %u exceeds the maximum %u", len, MS_LIBXL_REC_LENGTH_MAX);
    if ((t == MS_LIBXL_REC_END || t == MS_LIBXL_REC_LIBXC_CONTEXT || t == MS_LIBXL_REC_CHECKPOINT_END) && len)
        return cfail(c, "length %u, this record has no body", len);
    if (is_emulator(t) && len < MS_LIBXL_EMU_HDR_SIZE)
        return cfail(c, "length %u cannot hold the emulator header", len);
    if (t == MS_LIBXL_REC_CHECKPOINT_STATE && len != 4)
        return cfail(c, "length %u, not 4", len);
    if (t == MS_LIBXL_REC_LIBXC_CONTEXT && c->libxc_seen)
        return cfail(c, "a second LIBXC_CONTEXT (checkpointed streams are not supported)");
    if (t == MS_LIBXL_REC_END && !c->libxc_seen)
        return cfail(c, "END before any LIBXC_CONTEXT: the file holds no domain memory");
    return MS_OK;
}

/* The record's header (and emulator header) is checked: report, pass on,
 * and go where its body leads. */
static int start_body(ctr *c)
{
    int rc = cnotify(c, c->cb && c->cb->libxl_record ? c->cb->libxl_record(c->cb_ctx, &c->rec) : 0);
    if (!rc)
        rc = cemit(c, c->head, c->head_len);
    if (rc)
        return rc;
    c->body_done = is_emulator(c->rec.type) ? MS_LIBXL_EMU_HDR_SIZE : 0;
    switch (c->rec.type) {
    case MS_LIBXL_REC_END:
        c->st = C_DONE;
        return MS_OK;
    case MS_LIBXL_REC_LIBXC_CONTEXT:
        c->libxc_seen = true;
        c->libxc_off = c->off;
        c->st = C_LIBXC;
        return MS_OK;
    default:
        c->st = C_BODY;
        if (ms_xc_padded(c->rec.length) == c->body_done)
            next_rec(c);
        return MS_OK;
    }
}

static int check_rhdr(ctr *c)
{
    c->rec.type = ms_get_le32(c->head);
    c->rec.length = ms_get_le32(c->head + 4);
    int rc = check_rhdr_fields(c);
    if (rc)
        return rc;
    if (is_emulator(c->rec.type)) {
        c->st = C_EMU_HDR;
        return MS_OK;
    }
    return start_body(c);
}

static int check_emu_hdr(ctr *c)
{
    c->rec.emulator_id = ms_get_le32(c->head + MS_XC_RHDR_SIZE);
    c->rec.emulator_index = ms_get_le32(c->head + MS_XC_RHDR_SIZE + 4);
    return start_body(c);
}

static int body_step(ctr *c, const uint8_t **p, size_t *n)
{
    uint32_t total = ms_xc_padded(c->rec.length);
    size_t take = total - c->body_done;
    if (take > *n)
        take = *n;
    uint32_t from = c->body_done > c->rec.length ? c->body_done : c->rec.length;
    for (uint32_t pos = from; pos < c->body_done + take; pos++)
        if ((*p)[pos - c->body_done])
            return cfail(c, "padding byte %u after the %u-byte body is 0x%02x, not zero", pos - c->rec.length,
                         c->rec.length, (*p)[pos - c->body_done]);
    int rc = cemit(c, *p, take);
    if (rc)
        return rc;
    c->body_done += (uint32_t)take;
    *p += take;
    *n -= take;
    if (c->body_done == total)
        next_rec(c);
    return MS_OK;
}

static int opt_step(ctr *c, const uint8_t **p, size_t *n)
{
    size_t take = c->opt_left < *n ? c->opt_left : *n;
    int rc = cemit(c, *p, take);
    if (rc)
        return rc;
    c->opt_left -= (uint32_t)take;
    *p += take;
    *n -= take;
    if (c->opt_left == 0) {
        c->head_len = 0;
        c->st = C_LIBXL_HDR;
    }
    return MS_OK;
}

static int ctr_step(ctr *c, const uint8_t **p, size_t *n)
{
    switch (c->st) {
    case C_DETECT:
        return cgather(c, p, n, DETECT_SIZE) ? on_detect(c) : MS_OK;
    case C_XL_HDR:
        return cgather(c, p, n, MS_XL_HDR_SIZE) ? check_xl_hdr(c) : MS_OK;
    case C_XL_CFGLEN:
        return cgather(c, p, n, 4) ? check_cfglen(c) : MS_OK;
    case C_XL_OPT:
        return opt_step(c, p, n);
    case C_LIBXL_HDR:
        return cgather(c, p, n, MS_LIBXL_HDR_SIZE) ? check_libxl_hdr(c) : MS_OK;
    case C_RHDR:
        return cgather(c, p, n, MS_XC_RHDR_SIZE) ? check_rhdr(c) : MS_OK;
    case C_EMU_HDR:
        return cgather(c, p, n, MS_XC_RHDR_SIZE + MS_LIBXL_EMU_HDR_SIZE) ? check_emu_hdr(c) : MS_OK;
    case C_BODY:
        return body_step(c, p, n);
    case C_LIBXC: {
        size_t used = 0;
        int rc = enter_libxc(c, *p, *n, &used);
        *p += used;
        *n -= used;
        return rc;
    }
    default:
        return ms_error(MS_ERR_INVAL, "%s%s: input after an error", c->role, ctr_what(c));
    }
}

static int ctr_push(ctr *c, const uint8_t *data, size_t len, size_t *used)
{
    const uint8_t *p = data;
    size_t n = len;
    int rc = MS_OK;
    if (c->st == C_FAILED)
        rc = ms_error(MS_ERR_INVAL, "%s%s: input after an error", c->role, ctr_what(c));
    while (rc == MS_OK && n > 0 && c->st != C_DONE)
        rc = ctr_step(c, &p, &n);
    if (used)
        *used = (size_t)(p - data);
    return rc;
}

static size_t ctr_want(const ctr *c)
{
    switch (c->st) {
    case C_DETECT: return DETECT_SIZE - c->head_len;
    case C_XL_HDR: return MS_XL_HDR_SIZE - c->head_len;
    case C_XL_CFGLEN: return 4 - c->head_len;
    case C_XL_OPT: return c->opt_left;
    case C_LIBXL_HDR: return MS_LIBXL_HDR_SIZE - c->head_len;
    case C_RHDR: return MS_XC_RHDR_SIZE - c->head_len;
    case C_EMU_HDR: return MS_XC_RHDR_SIZE + MS_LIBXL_EMU_HDR_SIZE - c->head_len;
    case C_BODY: return ms_xc_padded(c->rec.length) - c->body_done;
    case C_LIBXC: return c->ops->libxc_want(c->ops_ctx);
    default: return 0;
    }
}

static int ctr_finish(ctr *c)
{
    const char *what = ctr_what(c);
    switch (c->st) {
    case C_DONE:
        return MS_OK;
    case C_FAILED:
        return ms_last_code() ? ms_last_code() : MS_ERR_CORRUPT;
    case C_DETECT:
        return ms_error(MS_ERR_TRUNCATED, "%sinput ends after %zu bytes, before its kind is known", c->role,
                        c->head_len);
    case C_XL_HDR:
        return ms_error(MS_ERR_TRUNCATED, "%s%s: ends inside the xl header (%zu of %u bytes)", c->role, what,
                        c->head_len, MS_XL_HDR_SIZE);
    case C_XL_CFGLEN:
    case C_XL_OPT:
        return ms_error(MS_ERR_TRUNCATED, "%s%s: ends inside xl's optional data (%llu of %u bytes)", c->role, what,
                        (unsigned long long)(c->off - MS_XL_HDR_SIZE + c->head_len), c->xl.optional_data_len);
    case C_LIBXL_HDR:
        return ms_error(MS_ERR_TRUNCATED, "%s%s: ends inside the libxl header at offset %llu (%zu of %u bytes)",
                        c->role, what, (unsigned long long)c->off, c->head_len, MS_LIBXL_HDR_SIZE);
    case C_LIBXC: {
        int rc = c->ops->libxc_finish(c->ops_ctx);
        return rc == MS_OK ? MS_OK : cwrap(c, rc);
    }
    case C_RHDR:
        if (c->head_len == 0)
            return ms_error(MS_ERR_TRUNCATED, "%s%s: ends at offset %llu, before libxl END", c->role, what,
                            (unsigned long long)c->off);
        /* fall through */
    default:
        return ms_error(MS_ERR_TRUNCATED, "%s%s: libxl record %llu (%s) at offset %llu: ends after %llu of %llu bytes",
                        c->role, what, (unsigned long long)c->rec.index,
                        c->st == C_RHDR ? "header" : ms_libxl_rec_name(c->rec.type),
                        (unsigned long long)c->rec.offset,
                        (unsigned long long)(c->off - c->rec.offset + (c->st == C_BODY ? 0 : c->head_len)),
                        c->st == C_RHDR ? (unsigned long long)MS_XC_RHDR_SIZE
                                        : (unsigned long long)(MS_XC_RHDR_SIZE + ms_xc_padded(c->rec.length)));
    }
}

/* ---- reader ------------------------------------------------------------------ */

struct ms_save_reader {
    ctr c;
    ms_save_reader_cb cb;
    void *ctx;
    ms_xc_reader *xc;
};

static int rd_bytes(void *ctx, const uint8_t *p, size_t n)
{
    ms_save_reader *r = ctx;
    return r->cb.xc.opaque(r->ctx, p, n);
}

static int rd_libxc(void *ctx, const uint8_t *p, size_t n, size_t *used, bool *done)
{
    ms_save_reader *r = ctx;
    int rc = ms_xc_reader_push(r->xc, p, n, used);
    *done = ms_xc_reader_done(r->xc);
    return rc;
}

static size_t rd_libxc_want(void *ctx) { return ms_xc_reader_want(((ms_save_reader *)ctx)->xc); }
static int rd_libxc_finish(void *ctx) { return ms_xc_reader_finish(((ms_save_reader *)ctx)->xc); }

static const ctr_ops reader_ops = {rd_bytes, rd_libxc, rd_libxc_want, rd_libxc_finish};

int ms_save_reader_new(const ms_save_reader_cb *cb, void *ctx, size_t batch_pages, ms_save_reader **out)
{
    if (!cb || !cb->xc.opaque || !cb->xc.pages)
        return ms_error(MS_ERR_INVAL, "save reader: opaque and pages callbacks are required");
    ms_save_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return ms_error(MS_ERR_NOMEM, "save reader: out of memory");
    r->cb = *cb;
    r->ctx = ctx;
    int rc = ms_xc_reader_new(&r->cb.xc, ctx, batch_pages, &r->xc);
    if (rc) {
        free(r);
        return rc;
    }
    ctr_init(&r->c, &reader_ops, r, "");
    r->c.cb = &r->cb;
    r->c.cb_ctx = ctx;
    *out = r;
    return MS_OK;
}

void ms_save_reader_free(ms_save_reader *r)
{
    if (!r)
        return;
    ms_xc_reader_free(r->xc);
    free(r);
}

int ms_save_reader_push(ms_save_reader *r, const uint8_t *data, size_t len, size_t *used)
{
    return ctr_push(&r->c, data, len, used);
}

size_t ms_save_reader_want(const ms_save_reader *r) { return ctr_want(&r->c); }
bool ms_save_reader_done(const ms_save_reader *r) { return r->c.st == C_DONE; }
int ms_save_reader_finish(ms_save_reader *r) { return ctr_finish(&r->c); }
uint64_t ms_save_reader_offset(const ms_save_reader *r) { return r->c.off; }
enum ms_save_kind ms_save_reader_kind(const ms_save_reader *r) { return r->c.kind; }

static size_t sr_want(void *r) { return ms_save_reader_want(r); }
static int sr_push(void *r, const uint8_t *p, size_t n) { return ms_save_reader_push(r, p, n, NULL); }
static bool sr_done(void *r) { return ms_save_reader_done(r); }
static int sr_finish(void *r) { return ms_save_reader_finish(r); }

int ms_save_reader_pump_fd(ms_save_reader *r, int fd)
{
    static const ms_xc_feed_ops ops = {sr_want, sr_push, sr_done, sr_finish};
    return ms_xc_pump_fd(fd, "save reader", &ops, r);
}

/* ---- writer ------------------------------------------------------------------ */

struct ms_save_writer {
    ctr c;
    ms_xc_out_fn out;
    void *out_ctx;
    ms_xc_writer *xc;
};

static int wr_bytes(void *ctx, const uint8_t *p, size_t n)
{
    ms_save_writer *w = ctx;
    return w->out(w->out_ctx, p, n);
}

static int wr_libxc(void *ctx, const uint8_t *p, size_t n, size_t *used, bool *done)
{
    ms_save_writer *w = ctx;
    int rc = ms_xc_writer_opaque_part(w->xc, p, n, used);
    *done = ms_xc_writer_done(w->xc);
    return rc;
}

/* The writer is fed, not read from: any amount may come. */
static size_t wr_libxc_want(void *ctx)
{
    (void)ctx;
    return SIZE_MAX;
}

static int wr_libxc_finish(void *ctx) { return ms_xc_writer_finish(((ms_save_writer *)ctx)->xc); }

static const ctr_ops writer_ops = {wr_bytes, wr_libxc, wr_libxc_want, wr_libxc_finish};

int ms_save_writer_new(ms_xc_out_fn out, void *out_ctx, ms_save_writer **wp)
{
    ms_save_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return ms_error(MS_ERR_NOMEM, "save writer: out of memory");
    w->out = out;
    w->out_ctx = out_ctx;
    int rc = ms_xc_writer_new(out, out_ctx, &w->xc);
    if (rc) {
        free(w);
        return rc;
    }
    ctr_init(&w->c, &writer_ops, w, "rebuilding ");
    *wp = w;
    return MS_OK;
}

void ms_save_writer_free(ms_save_writer *w)
{
    if (!w)
        return;
    ms_xc_writer_free(w->xc);
    free(w);
}

int ms_save_writer_opaque(ms_save_writer *w, const uint8_t *data, size_t len)
{
    size_t used = 0;
    int rc = ctr_push(&w->c, data, len, &used);
    if (rc == MS_OK && used < len)
        return ms_error(MS_ERR_CORRUPT, "rebuilding %s: %zu bytes after its final END at offset %llu",
                        w->c.kind == MS_SAVE_LIBXC ? "libxc stream" : ctr_what(&w->c), len - used,
                        (unsigned long long)w->c.off);
    return rc;
}

int ms_save_writer_pages(ms_save_writer *w, const uint64_t *entries, const uint8_t *pages, size_t count)
{
    if (w->c.st != C_LIBXC)
        return ms_error(MS_ERR_CORRUPT, "rebuilding %s: %zu pages arrived outside the libxc stream (offset %llu)",
                        ctr_what(&w->c), count, (unsigned long long)w->c.off);
    uint64_t before = ms_xc_writer_offset(w->xc);
    int rc = ms_xc_writer_pages(w->xc, entries, pages, count);
    w->c.off += ms_xc_writer_offset(w->xc) - before;
    return rc ? cwrap(&w->c, rc) : MS_OK;
}

int ms_save_writer_finish(ms_save_writer *w) { return ctr_finish(&w->c); }
bool ms_save_writer_done(const ms_save_writer *w) { return w->c.st == C_DONE; }
uint64_t ms_save_writer_offset(const ms_save_writer *w) { return w->c.off; }

static int sw_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns, const uint8_t *pages,
                    size_t count, size_t page_size)
{
    (void)round;
    (void)fragment;
    if (page_size != MS_XC_PAGE_SIZE)
        return ms_error(MS_ERR_MISMATCH, "save writer: page size %zu, libxc streams use 4096", page_size);
    return ms_save_writer_pages(ctx, pfns, pages, count);
}

static int sw_opaque(void *ctx, const uint8_t *data, size_t len) { return ms_save_writer_opaque(ctx, data, len); }

static int sw_round_end(void *ctx, uint32_t round)
{
    (void)ctx;
    (void)round;
    return MS_OK;
}

static int sw_end(void *ctx) { return ms_save_writer_finish(ctx); }

const ms_sink_ops ms_save_writer_sink_ops = {
    .pages = sw_pages,
    .opaque = sw_opaque,
    .round_end = sw_round_end,
    .end = sw_end,
};

/* ---- test data ------------------------------------------------------------------ */

static int put_record(ms_xc_out_fn out, void *ctx, uint32_t type, const void *body, uint32_t len)
{
    static const uint8_t zero[8];
    uint8_t h[8];
    ms_put_le32(h, type);
    ms_put_le32(h + 4, len);
    int rc = out(ctx, h, sizeof h);
    if (!rc && len)
        rc = out(ctx, body, len);
    if (!rc && ms_xc_padded(len) != len)
        rc = out(ctx, zero, ms_xc_padded(len) - len);
    return rc;
}

/* An emulator record: id 2 (QEMU upstream), index 0, then `data`. */
static int put_emulator(ms_xc_out_fn out, void *ctx, uint32_t type, const char *data, uint32_t len)
{
    uint8_t body[256];
    if (len > sizeof body - 8)
        return ms_error(MS_ERR_INVAL, "save gen: emulator data too long");
    ms_put_le32(body, 2);
    ms_put_le32(body + 4, 0);
    memcpy(body + 8, data, len);
    return put_record(out, ctx, type, body, len + 8);
}

int ms_save_gen_xl(const ms_xc_gen_config *cfg, const char *config, ms_xc_out_fn out, void *out_ctx)
{
    static const char xs_data[] = "physmap/1/start_addr\0f0000000\0physmap/1/size\0800000\0";
    static const char qemu_ctx[] = "QEVM\0\0\0\3 device state of the emulator (opaque to libxl)";
    uint8_t h[MS_XL_HDR_SIZE + 4], lh[MS_LIBXL_HDR_SIZE];
    uint32_t clen = config ? (uint32_t)strlen(config) + 1 : 0;
    bool hvm = cfg->dom_type == MS_XC_DOM_X86_HVM;
    memcpy(h, MS_XL_MAGIC, MS_XL_MAGIC_SIZE);
    ms_put_le32(h + 32, MS_XL_BYTEORDER);
    ms_put_le32(h + 36, MS_XL_FLAG_STREAMV2 | (clen ? MS_XL_FLAG_JSON : 0));
    ms_put_le32(h + 40, 0);
    ms_put_le32(h + 44, 4 + clen); /* xl always writes the config length */
    ms_put_le32(h + 48, clen);
    static const uint8_t ident[8] = {'L', 'i', 'b', 'x', 'l', 'F', 'm', 't'};
    memcpy(lh, ident, 8);
    memset(lh + 8, 0, 8);
    lh[11] = MS_LIBXL_VERSION;
    int rc = out(out_ctx, h, sizeof h);
    if (!rc && clen)
        rc = out(out_ctx, config, clen);
    if (!rc)
        rc = out(out_ctx, lh, sizeof lh);
    if (!rc && hvm)
        rc = put_emulator(out, out_ctx, MS_LIBXL_REC_EMULATOR_XENSTORE_DATA, xs_data, sizeof xs_data - 1);
    if (!rc)
        rc = put_record(out, out_ctx, MS_LIBXL_REC_LIBXC_CONTEXT, NULL, 0);
    if (!rc)
        rc = ms_xc_gen(cfg, out, out_ctx);
    if (!rc && hvm)
        rc = put_emulator(out, out_ctx, MS_LIBXL_REC_EMULATOR_CONTEXT, qemu_ctx, sizeof qemu_ctx - 1);
    if (!rc)
        rc = put_record(out, out_ctx, MS_LIBXL_REC_END, NULL, 0);
    return rc;
}
