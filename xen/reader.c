/* Streaming reader of libxc migration streams (v2/v3).
 *
 * A state machine fed with arbitrary chunks: small structures (headers,
 * record headers, the PAGE_DATA head and pfn list) are gathered in `hold`
 * and checked before any of their bytes are passed on; record bodies and
 * page contents stream through without being buffered whole. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xen/xen_int.h"

/* libxc streams of x86 hosts are little-endian (big-endian ones are
 * refused), so pfn lists are used in place as uint64_t arrays. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host required");

enum rstate {
    ST_IHDR,      /* gathering the image header */
    ST_DHDR,      /* gathering the domain header */
    ST_RHDR,      /* gathering a record header */
    ST_BODY,      /* streaming a non-PAGE_DATA body and its padding */
    ST_PD_HEAD,   /* gathering PAGE_DATA count/reserved */
    ST_PD_PFNS,   /* gathering the pfn list */
    ST_PD_PAGES,  /* streaming page contents */
    ST_DONE,      /* libxc END consumed */
    ST_FAILED,
};

struct ms_xc_reader {
    ms_xc_reader_cb cb;
    void *ctx;
    size_t batch_pages;
    enum rstate st;
    uint64_t off;           /* bytes consumed */
    uint64_t rec_index;     /* index of the current record */
    ms_xc_header hdr;
    ms_xc_record rec;

    uint8_t head[MS_XC_HDRS_SIZE]; /* gathered headers / record head */
    size_t head_len;

    uint64_t *pfns;         /* current PAGE_DATA's entries */
    size_t pfns_cap;
    size_t pfn_bytes;       /* bytes of the pfn list gathered */
    uint64_t *data_entries; /* entries that carry pages, in order */
    size_t data_cap;
    uint32_t pages_done;    /* data pages delivered of the record */

    uint8_t stage[MS_XC_PAGE_SIZE]; /* a page split across pushes */
    size_t stage_bytes;

    uint32_t body_done;     /* bytes of the current body consumed */
};

/* ---- names and type tables -------------------------------------------- */

static const char *const rec_names[MS_XC_REC_TYPE_COUNT] = {
    "END", "PAGE_DATA", "X86_PV_INFO", "X86_PV_P2M_FRAMES", "X86_PV_VCPU_BASIC",
    "X86_PV_VCPU_EXTENDED", "X86_PV_VCPU_XSAVE", "SHARED_INFO", "X86_TSC_INFO",
    "HVM_CONTEXT", "HVM_PARAMS", "TOOLSTACK", "X86_PV_VCPU_MSRS", "VERIFY", "CHECKPOINT",
    "CHECKPOINT_DIRTY_PFN_LIST", "STATIC_DATA_END", "X86_CPUID_POLICY", "X86_MSR_POLICY",
};

const char *ms_xc_rec_name(uint32_t type)
{
    static __thread char buf[32];
    if (type < MS_XC_REC_TYPE_COUNT)
        return rec_names[type];
    snprintf(buf, sizeof(buf), "%s 0x%08x", (type & MS_XC_REC_OPTIONAL) ? "optional" : "unknown", type);
    return buf;
}

bool ms_xc_rec_type_known(uint32_t type)
{
    return type < MS_XC_REC_TYPE_COUNT || (type & MS_XC_REC_OPTIONAL);
}

bool ms_xc_page_type_valid(unsigned type)
{
    return type <= 0xf && !(type >= 0x5 && type <= 0x8);
}

bool ms_xc_page_type_has_data(unsigned type)
{
    return type <= 0x4 || (type >= 0x9 && type <= 0xc);
}

const char *ms_xc_page_type_name(unsigned type)
{
    static const char *const names[16] = {
        "NOTAB", "L1TAB", "L2TAB", "L3TAB", "L4TAB", "reserved-5", "reserved-6", "reserved-7",
        "reserved-8", "L1TAB_PIN", "L2TAB_PIN", "L3TAB_PIN", "L4TAB_PIN", "BROKEN", "XALLOC", "XTAB",
    };
    return type < 16 ? names[type] : "invalid";
}

/* ---- errors ------------------------------------------------------------ */

static int fail(ms_xc_reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ms_xc_reader *r, int code, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    r->st = ST_FAILED;
    return ms_error(code, "libxc stream: record %llu (%s) at offset %llu: %s",
                    (unsigned long long)r->rec.index, ms_xc_rec_name(r->rec.type),
                    (unsigned long long)r->rec.offset, what);
}

static int fail_hdr(ms_xc_reader *r, const char *which, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_hdr(ms_xc_reader *r, const char *which, uint64_t at, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    r->st = ST_FAILED;
    return ms_error(MS_ERR_CORRUPT, "libxc stream: %s at offset %llu: %s", which,
                    (unsigned long long)at, what);
}

/* A callback's failure keeps its own message, prefixed with where we are. */
static int cb_failed(ms_xc_reader *r, int rc)
{
    bool in_headers = r->st == ST_IHDR || r->st == ST_DHDR;
    r->st = ST_FAILED;
    if (rc > 0)
        rc = MS_ERR_INVAL;
    if (in_headers)
        return ms_error_wrap(rc, "libxc stream: headers");
    return ms_error_wrap(rc, "libxc stream: record %llu (%s) at offset %llu",
                         (unsigned long long)r->rec.index, ms_xc_rec_name(r->rec.type),
                         (unsigned long long)r->rec.offset);
}

/* ---- construction ------------------------------------------------------ */

int ms_xc_reader_new(const ms_xc_reader_cb *cb, void *ctx, size_t batch_pages, ms_xc_reader **out)
{
    if (!cb || !cb->opaque || !cb->pages)
        return ms_error(MS_ERR_INVAL, "libxc reader: opaque and pages callbacks are required");
    ms_xc_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return ms_error(MS_ERR_NOMEM, "libxc reader: out of memory");
    r->cb = *cb;
    r->ctx = ctx;
    r->batch_pages = batch_pages ? batch_pages : 1024;
    r->st = ST_IHDR;
    *out = r;
    return MS_OK;
}

void ms_xc_reader_free(ms_xc_reader *r)
{
    if (!r)
        return;
    free(r->pfns);
    free(r->data_entries);
    free(r);
}

bool ms_xc_reader_done(const ms_xc_reader *r) { return r->st == ST_DONE; }
uint64_t ms_xc_reader_offset(const ms_xc_reader *r) { return r->off; }

/* ---- helpers ------------------------------------------------------------ */

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Move up to `need - head_len` bytes into head; true once complete. */
static bool gather(ms_xc_reader *r, const uint8_t **p, size_t *n, size_t need)
{
    size_t take = need - r->head_len;
    if (take > *n)
        take = *n;
    memcpy(r->head + r->head_len, *p, take);
    r->head_len += take;
    *p += take;
    *n -= take;
    r->off += take;
    return r->head_len == need;
}

static int emit_opaque(ms_xc_reader *r, const uint8_t *p, size_t n)
{
    if (n == 0)
        return MS_OK;
    int rc = r->cb.opaque(r->ctx, p, n);
    return rc ? cb_failed(r, rc) : MS_OK;
}

/* ---- headers ------------------------------------------------------------ */

static int check_ihdr(ms_xc_reader *r)
{
    const uint8_t *h = r->head;
    uint64_t marker = get_be64(h);
    uint32_t id = get_be32(h + 8), version = get_be32(h + 12);
    uint16_t options = (uint16_t)((h[16] << 8) | h[17]);
    if (marker != MS_XC_MARKER)
        return fail_hdr(r, "image header", 0, "bad marker 0x%016llx (expected 0xffffffffffffffff)",
                        (unsigned long long)marker);
    if (id != MS_XC_ID)
        return fail_hdr(r, "image header", 8, "bad id 0x%08x (expected 0x%08x \"XENF\")", id, MS_XC_ID);
    if (version < 2 || version > 3)
        return fail_hdr(r, "image header", 12, "unknown version %u (this reader knows 2 and 3)", version);
    if (options & 1u)
        return fail_hdr(r, "image header", 16, "big-endian stream (options 0x%04x) is not supported", options);
    if (options & ~1u)
        return fail_hdr(r, "image header", 16, "reserved option bits set (options 0x%04x)", options);
    for (int i = 18; i < 24; i++)
        if (h[i])
            return fail_hdr(r, "image header", (uint64_t)i, "reserved byte is 0x%02x, not zero", h[i]);
    r->hdr.version = version;
    r->hdr.options = options;
    return MS_OK;
}

static int check_dhdr(ms_xc_reader *r)
{
    const uint8_t *d = r->head + MS_XC_IHDR_SIZE;
    uint32_t type = ms_get_le32(d);
    uint16_t shift = ms_get_le16(d + 4), res = ms_get_le16(d + 6);
    if (type < MS_XC_DOM_X86_PV || type > MS_XC_DOM_ARM)
        return fail_hdr(r, "domain header", 24, "unknown domain type %u", type);
    if (shift != MS_XC_PAGE_SHIFT)
        return fail_hdr(r, "domain header", 28, "page_shift %u (only 12 is supported)", shift);
    if (res)
        return fail_hdr(r, "domain header", 30, "reserved field is 0x%04x, not zero", res);
    r->hdr.dom_type = type;
    r->hdr.page_shift = shift;
    r->hdr.xen_major = ms_get_le32(d + 8);
    r->hdr.xen_minor = ms_get_le32(d + 12);
    if (r->cb.header) {
        int rc = r->cb.header(r->ctx, &r->hdr);
        if (rc)
            return cb_failed(r, rc);
    }
    return emit_opaque(r, r->head, MS_XC_HDRS_SIZE);
}

/* ---- records ------------------------------------------------------------ */

static void next_record(ms_xc_reader *r);

static int record_cb(ms_xc_reader *r)
{
    if (!r->cb.record)
        return MS_OK;
    int rc = r->cb.record(r->ctx, &r->rec);
    return rc ? cb_failed(r, rc) : MS_OK;
}

static int check_rhdr(ms_xc_reader *r)
{
    uint32_t type = ms_get_le32(r->head), len = ms_get_le32(r->head + 4);
    r->rec.type = type;
    r->rec.length = len;
    r->rec.count = r->rec.data_pages = 0;
    r->rec.entries = NULL;
    if (!ms_xc_rec_type_known(type))
        return fail(r, MS_ERR_CORRUPT, "unknown mandatory record type 0x%08x", type);
    if (len > MS_XC_REC_LENGTH_MAX)
        return fail(r, MS_ERR_CORRUPT, "length %u exceeds the maximum %u", len, MS_XC_REC_LENGTH_MAX);
    if ((type == MS_XC_REC_END || type == MS_XC_REC_STATIC_DATA_END) && len != 0)
        return fail(r, MS_ERR_CORRUPT, "length %u, must be 0", len);
    if (type == MS_XC_REC_PAGE_DATA) {
        if (len < 8)
            return fail(r, MS_ERR_CORRUPT, "length %u is shorter than the 8-byte count/reserved", len);
        r->st = ST_PD_HEAD;
        return MS_OK; /* its head is passed on once the pfn list is checked */
    }
    int rc = record_cb(r);
    if (rc)
        return rc;
    rc = emit_opaque(r, r->head, MS_XC_RHDR_SIZE);
    if (rc)
        return rc;
    if (type == MS_XC_REC_END) {
        r->st = ST_DONE;
        return MS_OK;
    }
    r->body_done = 0;
    r->st = ST_BODY;
    if (len == 0) /* nothing to stream: want() must never say 0 before END */
        next_record(r);
    return MS_OK;
}

static void next_record(ms_xc_reader *r)
{
    r->rec_index++;
    r->rec.index = r->rec_index;
    r->rec.offset = r->off;
    r->rec.type = 0xffffffffu; /* not known until the header is read */
    r->head_len = 0;
    r->st = ST_RHDR;
}

/* Stream a body through, checking the padding after `length`. */
static int body_step(ms_xc_reader *r, const uint8_t **p, size_t *n)
{
    uint32_t total = ms_xc_padded(r->rec.length);
    size_t take = total - r->body_done;
    if (take > *n)
        take = *n;
    /* Only the bytes past `length` are padding and must be zero. */
    uint32_t from = r->body_done > r->rec.length ? r->body_done : r->rec.length;
    for (uint32_t pos = from; pos < r->body_done + take; pos++) {
        uint8_t b = (*p)[pos - r->body_done];
        if (b)
            return fail(r, MS_ERR_CORRUPT, "padding byte %u after the %u-byte body is 0x%02x, not zero",
                        pos - r->rec.length, r->rec.length, b);
    }
    int rc = emit_opaque(r, *p, take);
    if (rc)
        return rc;
    r->off += take;
    r->body_done += (uint32_t)take;
    *p += take;
    *n -= take;
    if (r->body_done == total)
        next_record(r);
    return MS_OK;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return MS_OK;
    void *nb = realloc(*buf, need * elem);
    if (!nb)
        return ms_error(MS_ERR_NOMEM, "libxc reader: cannot hold %zu pfn entries", need);
    *buf = nb;
    *cap = need;
    return MS_OK;
}

static int check_pd_head(ms_xc_reader *r)
{
    uint32_t count = ms_get_le32(r->head + 8), res = ms_get_le32(r->head + 12);
    uint32_t len = r->rec.length;
    r->rec.count = count;
    if (res)
        return fail(r, MS_ERR_CORRUPT, "reserved field after count is 0x%08x, not zero", res);
    if (count == 0)
        return fail(r, MS_ERR_CORRUPT, "count is 0 (a PAGE_DATA record has at least one pfn)");
    if ((uint64_t)count * 8 > len - 8)
        return fail(r, MS_ERR_CORRUPT, "count %u needs %llu bytes of pfns but length is %u", count,
                    (unsigned long long)count * 8 + 8, len);
    uint32_t rest = len - 8 - count * 8;
    if (rest % MS_XC_PAGE_SIZE)
        return fail(r, MS_ERR_CORRUPT, "length %u is not 8 + %u*8 + a whole number of pages", len, count);
    if (rest / MS_XC_PAGE_SIZE > count)
        return fail(r, MS_ERR_CORRUPT, "length %u holds %u pages for only %u pfns", len,
                    rest / MS_XC_PAGE_SIZE, count);
    r->rec.data_pages = rest / MS_XC_PAGE_SIZE;
    if (grow((void **)&r->pfns, &r->pfns_cap, count, 8) ||
        grow((void **)&r->data_entries, &r->data_cap, count, 8)) {
        r->st = ST_FAILED;
        return MS_ERR_NOMEM;
    }
    r->pfn_bytes = 0;
    r->st = ST_PD_PFNS;
    return MS_OK;
}

static int check_pfns(ms_xc_reader *r)
{
    uint32_t count = r->rec.count, with_data = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t e = r->pfns[i];
        unsigned t = ms_xc_entry_type(e);
        if (e & MS_XC_PFN_RESERVED_MASK)
            return fail(r, MS_ERR_CORRUPT, "pfn[%u] = 0x%016llx has reserved bits 59-52 set", i,
                        (unsigned long long)e);
        if (!ms_xc_page_type_valid(t))
            return fail(r, MS_ERR_CORRUPT, "pfn[%u] = 0x%016llx has reserved page type 0x%x", i,
                        (unsigned long long)e, t);
        if (ms_xc_page_type_has_data(t))
            r->data_entries[with_data++] = e;
    }
    if (with_data != r->rec.data_pages)
        return fail(r, MS_ERR_CORRUPT,
                    "count %u with %u data-carrying types needs length %llu, but length is %u", count,
                    with_data, 8ull + count * 8ull + (unsigned long long)with_data * MS_XC_PAGE_SIZE,
                    r->rec.length);
    r->rec.entries = r->pfns;
    int rc = record_cb(r);
    if (rc)
        return rc;
    /* Head and pfn list stay in the opaque bytes so that the writer can
     * stream the pages out as they come, without holding a record. */
    rc = emit_opaque(r, r->head, MS_XC_PD_HEAD_SIZE);
    if (!rc)
        rc = emit_opaque(r, (const uint8_t *)r->pfns, (size_t)count * 8);
    if (rc)
        return rc;
    r->pages_done = 0;
    r->stage_bytes = 0;
    if (with_data == 0)
        next_record(r);
    else
        r->st = ST_PD_PAGES;
    return MS_OK;
}

static int pfns_step(ms_xc_reader *r, const uint8_t **p, size_t *n)
{
    size_t need = (size_t)r->rec.count * 8 - r->pfn_bytes;
    size_t take = need < *n ? need : *n;
    memcpy((uint8_t *)r->pfns + r->pfn_bytes, *p, take);
    r->pfn_bytes += take;
    r->off += take;
    *p += take;
    *n -= take;
    return r->pfn_bytes == (size_t)r->rec.count * 8 ? check_pfns(r) : MS_OK;
}

static int deliver(ms_xc_reader *r, const uint8_t *data, size_t count)
{
    int rc = r->cb.pages(r->ctx, &r->rec, r->data_entries + r->pages_done, data, count);
    if (rc)
        return cb_failed(r, rc);
    r->pages_done += (uint32_t)count;
    if (r->pages_done == r->rec.data_pages)
        next_record(r);
    return MS_OK;
}

/* Whole pages go straight from the input. A page split across two pushes
 * is completed in a one-page staging buffer and delivered alone, so a
 * chunk boundary costs one 4 KiB copy, not a copy of the rest of the
 * record. */
static int pages_step(ms_xc_reader *r, const uint8_t **p, size_t *n)
{
    if (r->stage_bytes == 0 && *n >= MS_XC_PAGE_SIZE) {
        size_t k = *n / MS_XC_PAGE_SIZE, left = r->rec.data_pages - r->pages_done;
        if (k > left)
            k = left;
        if (k > r->batch_pages)
            k = r->batch_pages;
        const uint8_t *src = *p;
        *p += k * MS_XC_PAGE_SIZE;
        *n -= k * MS_XC_PAGE_SIZE;
        r->off += k * MS_XC_PAGE_SIZE;
        return deliver(r, src, k);
    }
    size_t take = MS_XC_PAGE_SIZE - r->stage_bytes;
    if (take > *n)
        take = *n;
    memcpy(r->stage + r->stage_bytes, *p, take);
    r->stage_bytes += take;
    *p += take;
    *n -= take;
    r->off += take;
    if (r->stage_bytes < MS_XC_PAGE_SIZE)
        return MS_OK;
    r->stage_bytes = 0;
    return deliver(r, r->stage, 1);
}

int ms_xc_reader_push(ms_xc_reader *r, const uint8_t *data, size_t len, size_t *used)
{
    const uint8_t *p = data;
    size_t n = len;
    int rc = MS_OK;
    if (r->st == ST_FAILED) {
        rc = ms_error(MS_ERR_INVAL, "libxc reader: input after an error");
        goto out;
    }
    while (n > 0 && rc == MS_OK && r->st != ST_DONE) {
        switch (r->st) {
        case ST_IHDR:
            if (gather(r, &p, &n, MS_XC_IHDR_SIZE)) {
                rc = check_ihdr(r);
                r->st = rc ? ST_FAILED : ST_DHDR;
            }
            break;
        case ST_DHDR:
            if (gather(r, &p, &n, MS_XC_HDRS_SIZE)) {
                rc = check_dhdr(r);
                if (!rc) {
                    r->rec_index = (uint64_t)-1;
                    next_record(r);
                }
            }
            break;
        case ST_RHDR:
            if (gather(r, &p, &n, MS_XC_RHDR_SIZE))
                rc = check_rhdr(r);
            break;
        case ST_BODY:
            rc = body_step(r, &p, &n);
            break;
        case ST_PD_HEAD:
            if (gather(r, &p, &n, MS_XC_PD_HEAD_SIZE))
                rc = check_pd_head(r);
            break;
        case ST_PD_PFNS:
            rc = pfns_step(r, &p, &n);
            break;
        case ST_PD_PAGES:
            rc = pages_step(r, &p, &n);
            break;
        default:
            rc = ms_error(MS_ERR_INVAL, "libxc reader: bad state");
            break;
        }
    }
out:
    if (used)
        *used = (size_t)(p - data);
    return rc;
}

size_t ms_xc_reader_want(const ms_xc_reader *r)
{
    switch (r->st) {
    case ST_IHDR: return MS_XC_IHDR_SIZE - r->head_len;
    case ST_DHDR: return MS_XC_HDRS_SIZE - r->head_len;
    case ST_RHDR: return MS_XC_RHDR_SIZE - r->head_len;
    case ST_BODY: return ms_xc_padded(r->rec.length) - r->body_done;
    case ST_PD_HEAD: return MS_XC_PD_HEAD_SIZE - r->head_len;
    case ST_PD_PFNS: return (size_t)r->rec.count * 8 - r->pfn_bytes;
    case ST_PD_PAGES:
        return (size_t)(r->rec.data_pages - r->pages_done) * MS_XC_PAGE_SIZE - r->stage_bytes;
    default: return 0;
    }
}

int ms_xc_reader_finish(ms_xc_reader *r)
{
    switch (r->st) {
    case ST_DONE:
        return MS_OK;
    case ST_FAILED:
        return ms_last_code() ? ms_last_code() : MS_ERR_CORRUPT;
    case ST_IHDR:
        return ms_error(MS_ERR_TRUNCATED, "libxc stream: ends inside the image header (%zu of %u bytes)",
                        r->head_len, MS_XC_IHDR_SIZE);
    case ST_DHDR:
        return ms_error(MS_ERR_TRUNCATED, "libxc stream: ends inside the domain header (%zu of %u bytes)",
                        r->head_len - MS_XC_IHDR_SIZE, MS_XC_DHDR_SIZE);
    case ST_RHDR:
        return ms_error(MS_ERR_TRUNCATED,
                        "libxc stream: record %llu at offset %llu: stream ends %s (%zu of %u header bytes)",
                        (unsigned long long)r->rec.index, (unsigned long long)r->rec.offset,
                        r->head_len ? "inside the record header" : "before libxc END", r->head_len,
                        MS_XC_RHDR_SIZE);
    default: {
        uint64_t got = r->off - r->rec.offset;
        uint64_t want = MS_XC_RHDR_SIZE + (uint64_t)ms_xc_padded(r->rec.length);
        return ms_error(MS_ERR_TRUNCATED,
                        "libxc stream: record %llu (%s) at offset %llu: stream ends after %llu of %llu bytes",
                        (unsigned long long)r->rec.index, ms_xc_rec_name(r->rec.type),
                        (unsigned long long)r->rec.offset, (unsigned long long)got,
                        (unsigned long long)want);
    }
    }
}

int ms_xc_pump_fd(int fd, const char *who, const ms_xc_feed_ops *ops, void *r)
{
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    int rc = MS_OK;
    if (!buf)
        return ms_error(MS_ERR_NOMEM, "%s: no read buffer", who);
    while (!ops->done(r)) {
        size_t want = ops->want(r);
        ssize_t got = read(fd, buf, want > CHUNK ? CHUNK : want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = ms_error(MS_ERR_IO, "%s: read: %s", who, strerror(errno));
            break;
        }
        if (got == 0) {
            rc = ops->finish(r);
            break;
        }
        if ((rc = ops->push(r, buf, (size_t)got)) != MS_OK)
            break;
    }
    free(buf);
    return rc;
}

static size_t xc_want(void *r) { return ms_xc_reader_want(r); }
static int xc_push(void *r, const uint8_t *p, size_t n) { return ms_xc_reader_push(r, p, n, NULL); }
static bool xc_done(void *r) { return ms_xc_reader_done(r); }
static int xc_finish(void *r) { return ms_xc_reader_finish(r); }

int ms_xc_reader_pump_fd(ms_xc_reader *r, int fd)
{
    static const ms_xc_feed_ops ops = {xc_want, xc_push, xc_done, xc_finish};
    return ms_xc_pump_fd(fd, "libxc reader", &ops, r);
}
