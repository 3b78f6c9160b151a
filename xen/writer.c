/* Rebuilds a libxc stream from the reader's two halves: opaque bytes (the
 * stream without page contents) and page batches (see xen.h, docs/xen.md).
 *
 * The writer follows the structure of the stream it writes: once a
 * PAGE_DATA record's head and pfn list have passed, it knows how many
 * pages, with which entries, must follow before the next opaque byte, and
 * writes each batch straight out. Anything that does not fit is refused:
 * the output is either byte-identical or an error. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xen/xen.h"

enum wstate {
    W_HDRS,     /* gathering image + domain headers */
    W_RHDR,     /* gathering a record header */
    W_BODY,     /* passing a non-PAGE_DATA body through */
    W_PD_HEAD,  /* gathering PAGE_DATA count/reserved */
    W_PD_LIST,  /* gathering the pfn list */
    W_PD_PAGES, /* waiting for the record's pages */
    W_DONE,
    W_FAILED,
};

struct ms_xc_writer {
    ms_xc_out_fn out;
    void *out_ctx;
    enum wstate st;
    uint64_t off;              /* bytes written (offset of the next byte) */
    uint64_t rec_index, rec_off;
    uint32_t rec_type, rec_len, body_left;
    uint8_t head[MS_XC_HDRS_SIZE];
    size_t head_len;
    size_t list_got;           /* bytes of the pfn list gathered */
    uint32_t count, data_pages, pages_got;
    uint8_t *list_le;          /* the pfn list as written (little-endian) */
    size_t list_cap;
    uint64_t *want;            /* the data-carrying entries, in order */
    size_t want_cap;
};

int ms_xc_out_fd(void *fdp, const void *data, size_t len)
{
    int fd = *(int *)fdp;
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ms_error(MS_ERR_IO, "libxc writer: write to fd %d: %s", fd, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return MS_OK;
}

int ms_xc_out_buf(void *bufp, const void *data, size_t len)
{
    return ms_buf_append((ms_buf *)bufp, data, len);
}

int ms_xc_writer_new(ms_xc_out_fn out, void *out_ctx, ms_xc_writer **wp)
{
    ms_xc_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return ms_error(MS_ERR_NOMEM, "libxc writer: out of memory");
    w->out = out;
    w->out_ctx = out_ctx;
    w->st = W_HDRS;
    *wp = w;
    return MS_OK;
}

void ms_xc_writer_free(ms_xc_writer *w)
{
    if (!w)
        return;
    free(w->list_le);
    free(w->want);
    free(w);
}

bool ms_xc_writer_done(const ms_xc_writer *w) { return w->st == W_DONE; }
uint64_t ms_xc_writer_offset(const ms_xc_writer *w) { return w->off; }

static int wfail(ms_xc_writer *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int wfail(ms_xc_writer *w, int code, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    enum wstate st = w->st;
    w->st = W_FAILED;
    if (st == W_HDRS)
        return ms_error(code, "libxc writer: headers: %s", what);
    return ms_error(code, "libxc writer: record %llu (%s) at offset %llu: %s",
                    (unsigned long long)w->rec_index, ms_xc_rec_name(w->rec_type),
                    (unsigned long long)w->rec_off, what);
}

static int emit(ms_xc_writer *w, const void *p, size_t n)
{
    if (n == 0)
        return MS_OK;
    int rc = w->out(w->out_ctx, p, n);
    if (rc) {
        w->st = W_FAILED;
        return rc;
    }
    w->off += n;
    return MS_OK;
}

static bool wgather(ms_xc_writer *w, const uint8_t **p, size_t *n, size_t need)
{
    size_t take = need - w->head_len;
    if (take > *n)
        take = *n;
    memcpy(w->head + w->head_len, *p, take);
    w->head_len += take;
    *p += take;
    *n -= take;
    return w->head_len == need;
}

static void next_record(ms_xc_writer *w)
{
    w->rec_index++;
    w->rec_off = w->off;
    w->rec_type = 0xffffffffu;
    w->head_len = 0;
    w->st = W_RHDR;
}

static int check_hdrs(ms_xc_writer *w)
{
    const uint8_t *h = w->head;
    uint32_t version = ((uint32_t)h[12] << 24) | ((uint32_t)h[13] << 16) | ((uint32_t)h[14] << 8) | h[15];
    for (int i = 0; i < 8; i++)
        if (h[i] != 0xff)
            return wfail(w, MS_ERR_CORRUPT, "bad image marker");
    if (memcmp(h + 8, "XENF", 4) != 0)
        return wfail(w, MS_ERR_CORRUPT, "bad image id");
    if (version < 2 || version > 3)
        return wfail(w, MS_ERR_CORRUPT, "unknown version %u", version);
    if (ms_get_le16(h + MS_XC_IHDR_SIZE + 4) != MS_XC_PAGE_SHIFT)
        return wfail(w, MS_ERR_CORRUPT, "page_shift is not 12");
    int rc = emit(w, h, MS_XC_HDRS_SIZE);
    if (rc)
        return rc;
    w->rec_index = (uint64_t)-1;
    next_record(w);
    return MS_OK;
}

static int check_rhdr(ms_xc_writer *w)
{
    w->rec_type = ms_get_le32(w->head);
    w->rec_len = ms_get_le32(w->head + 4);
    if (!ms_xc_rec_type_known(w->rec_type))
        return wfail(w, MS_ERR_CORRUPT, "unknown mandatory record type");
    if (w->rec_len > MS_XC_REC_LENGTH_MAX)
        return wfail(w, MS_ERR_CORRUPT, "length %u exceeds the maximum %u", w->rec_len, MS_XC_REC_LENGTH_MAX);
    if (w->rec_type == MS_XC_REC_PAGE_DATA) {
        if (w->rec_len < 8)
            return wfail(w, MS_ERR_CORRUPT, "length %u is too short", w->rec_len);
        w->st = W_PD_HEAD;
        return MS_OK;
    }
    if (w->rec_type == MS_XC_REC_END && w->rec_len != 0)
        return wfail(w, MS_ERR_CORRUPT, "END with length %u", w->rec_len);
    int rc = emit(w, w->head, MS_XC_RHDR_SIZE);
    if (rc)
        return rc;
    if (w->rec_type == MS_XC_REC_END) {
        w->st = W_DONE;
        return MS_OK;
    }
    w->body_left = ms_xc_padded(w->rec_len);
    w->st = W_BODY;
    if (w->body_left == 0)
        next_record(w);
    return MS_OK;
}

static int grow(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return MS_OK;
    void *nb = realloc(*buf, need);
    if (!nb)
        return ms_error(MS_ERR_NOMEM, "libxc writer: cannot hold %zu bytes of a PAGE_DATA record", need);
    *buf = nb;
    *cap = need;
    return MS_OK;
}

static int check_pd_head(ms_xc_writer *w)
{
    uint32_t count = ms_get_le32(w->head + 8), res = ms_get_le32(w->head + 12);
    uint32_t len = w->rec_len;
    if (res || count == 0 || (uint64_t)count * 8 > len - 8 || (len - 8 - count * 8) % MS_XC_PAGE_SIZE ||
        (len - 8 - count * 8) / MS_XC_PAGE_SIZE > count)
        return wfail(w, MS_ERR_CORRUPT, "inconsistent head: count %u, reserved %u, length %u", count, res, len);
    w->count = count;
    w->data_pages = (len - 8 - count * 8) / MS_XC_PAGE_SIZE;
    w->pages_got = 0;
    w->list_got = 0;
    size_t list_bytes = (size_t)count * 8;
    if (grow((void **)&w->list_le, &w->list_cap, list_bytes) || grow((void **)&w->want, &w->want_cap, list_bytes)) {
        w->st = W_FAILED;
        return MS_ERR_NOMEM;
    }
    w->st = W_PD_LIST;
    return MS_OK;
}

static int list_step(ms_xc_writer *w, const uint8_t **p, size_t *n)
{
    size_t need = (size_t)w->count * 8 - w->list_got;
    size_t take = need < *n ? need : *n;
    memcpy(w->list_le + w->list_got, *p, take);
    w->list_got += take;
    *p += take;
    *n -= take;
    if (w->list_got < (size_t)w->count * 8)
        return MS_OK;
    uint32_t k = 0;
    for (uint32_t i = 0; i < w->count; i++) {
        uint64_t e = ms_get_le64(w->list_le + (size_t)i * 8);
        unsigned t = ms_xc_entry_type(e);
        if (!ms_xc_page_type_valid(t) || (e & MS_XC_PFN_RESERVED_MASK))
            return wfail(w, MS_ERR_CORRUPT, "pfn[%u] = 0x%016llx is not a valid entry", i, (unsigned long long)e);
        if (ms_xc_page_type_has_data(t))
            w->want[k++] = e;
    }
    if (k != w->data_pages)
        return wfail(w, MS_ERR_CORRUPT, "pfn list has %u data entries, length says %u", k, w->data_pages);
    int rc = emit(w, w->head, MS_XC_PD_HEAD_SIZE);
    if (!rc)
        rc = emit(w, w->list_le, (size_t)w->count * 8);
    if (rc)
        return rc;
    if (k == 0)
        next_record(w);
    else
        w->st = W_PD_PAGES;
    return MS_OK;
}

int ms_xc_writer_opaque(ms_xc_writer *w, const uint8_t *data, size_t len)
{
    size_t used = 0;
    int rc = ms_xc_writer_opaque_part(w, data, len, &used);
    if (rc == MS_OK && used < len)
        return ms_error(MS_ERR_CORRUPT, "libxc writer: %zu bytes after libxc END", len - used);
    return rc;
}

int ms_xc_writer_opaque_part(ms_xc_writer *w, const uint8_t *data, size_t len, size_t *used)
{
    const uint8_t *p = data;
    size_t n = len;
    int rc = MS_OK;
    *used = 0;
    if (w->st == W_FAILED)
        return ms_error(MS_ERR_INVAL, "libxc writer: input after an error");
    while (n > 0 && rc == MS_OK && w->st != W_DONE) {
        switch (w->st) {
        case W_HDRS:
            if (wgather(w, &p, &n, MS_XC_HDRS_SIZE))
                rc = check_hdrs(w);
            break;
        case W_RHDR:
            if (wgather(w, &p, &n, MS_XC_RHDR_SIZE))
                rc = check_rhdr(w);
            break;
        case W_PD_HEAD:
            if (wgather(w, &p, &n, MS_XC_PD_HEAD_SIZE))
                rc = check_pd_head(w);
            break;
        case W_BODY: {
            size_t take = w->body_left < n ? w->body_left : n;
            rc = emit(w, p, take);
            p += take;
            n -= take;
            w->body_left -= (uint32_t)take;
            if (!rc && w->body_left == 0)
                next_record(w);
            break;
        }
        case W_PD_LIST:
            rc = list_step(w, &p, &n);
            break;
        case W_PD_PAGES:
            rc = wfail(w, MS_ERR_CORRUPT, "%zu opaque bytes arrived while %u of %u pages are still due",
                       n, w->data_pages - w->pages_got, w->data_pages);
            break;
        default:
            rc = ms_error(MS_ERR_INVAL, "libxc writer: input after an error");
            break;
        }
    }
    *used = (size_t)(p - data);
    return rc;
}

int ms_xc_writer_pages(ms_xc_writer *w, const uint64_t *entries, const uint8_t *pages, size_t count)
{
    if (w->st != W_PD_PAGES) {
        if (w->st == W_FAILED)
            return ms_error(MS_ERR_INVAL, "libxc writer: input after an error");
        return ms_error(MS_ERR_CORRUPT, "libxc writer: %zu pages arrived outside a PAGE_DATA record (offset %llu)",
                        count, (unsigned long long)w->off);
    }
    if (count > (size_t)(w->data_pages - w->pages_got))
        return wfail(w, MS_ERR_CORRUPT, "%zu pages arrived, only %u more expected", count,
                     w->data_pages - w->pages_got);
    for (size_t i = 0; i < count; i++) {
        uint32_t k = w->pages_got + (uint32_t)i;
        if (ms_xc_entry_pfn(entries[i]) != ms_xc_entry_pfn(w->want[k]))
            return wfail(w, MS_ERR_CORRUPT, "page %u arrived for pfn 0x%llx, the pfn list says 0x%llx", k,
                         (unsigned long long)ms_xc_entry_pfn(entries[i]),
                         (unsigned long long)ms_xc_entry_pfn(w->want[k]));
    }
    int rc = emit(w, pages, count * MS_XC_PAGE_SIZE);
    if (rc)
        return rc;
    w->pages_got += (uint32_t)count;
    if (w->pages_got == w->data_pages)
        next_record(w);
    return MS_OK;
}

int ms_xc_writer_finish(ms_xc_writer *w)
{
    if (w->st == W_DONE)
        return MS_OK;
    if (w->st == W_FAILED)
        return ms_last_code() ? ms_last_code() : MS_ERR_CORRUPT;
    if (w->st == W_HDRS)
        return ms_error(MS_ERR_TRUNCATED, "libxc writer: ended inside the headers (%zu of %u bytes)", w->head_len,
                        MS_XC_HDRS_SIZE);
    return ms_error(MS_ERR_TRUNCATED, "libxc writer: ended before libxc END, in record %llu (%s) at offset %llu",
                    (unsigned long long)w->rec_index, ms_xc_rec_name(w->rec_type),
                    (unsigned long long)w->rec_off);
}

/* ---- adapters ------------------------------------------------------------ */

static int sink_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns, const uint8_t *pages,
                      size_t count, size_t page_size)
{
    (void)round;
    (void)fragment;
    if (page_size != MS_XC_PAGE_SIZE)
        return ms_error(MS_ERR_MISMATCH, "libxc writer: page size %zu, libxc streams use 4096", page_size);
    return ms_xc_writer_pages(ctx, pfns, pages, count);
}

static int sink_opaque(void *ctx, const uint8_t *data, size_t len) { return ms_xc_writer_opaque(ctx, data, len); }

static int sink_round_end(void *ctx, uint32_t round)
{
    (void)ctx;
    (void)round;
    return MS_OK;
}

static int sink_end(void *ctx) { return ms_xc_writer_finish(ctx); }

const ms_sink_ops ms_xc_writer_sink_ops = {
    .pages = sink_pages,
    .opaque = sink_opaque,
    .round_end = sink_round_end,
    .end = sink_end,
};

static int rw_opaque(void *ctx, const uint8_t *data, size_t len) { return ms_xc_writer_opaque(ctx, data, len); }

static int rw_pages(void *ctx, const ms_xc_record *rec, const uint64_t *entries, const uint8_t *data, size_t count)
{
    (void)rec;
    return ms_xc_writer_pages(ctx, entries, data, count);
}

const ms_xc_reader_cb ms_xc_reader_to_writer_cb = {
    .opaque = rw_opaque,
    .pages = rw_pages,
};
