/* trace: recorded dirty bitmaps, written by the engine and replayed as a
 * page source (format: docs/trace-format.md). */
#include "sources/sources_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define TRACE_MAGIC "MSDTRACE"
#define TRACE_VERSION 1
#define HDR_FIXED 34 /* bytes before the description */
#define DESC_MAX 255
#define REC_INTERVAL 0x01
#define REC_END 0xFF
#define NPAGES_MAX (1ull << 40)
/* The stream layer carries pages of at most 64 KiB (hello limit), so a
 * larger page could never be migrated; refusing it also keeps a corrupt
 * header from asking readers for a multi-GiB page buffer. */
#define PSIZE_MAX 65536u

/* ---------------------------------------------------------------- writer */

struct ms_trace_writer {
    FILE *f;
    char *path;
    uint64_t npages;
    uint64_t last_t;
    uint64_t records;
    uint64_t dirty_total;
    ms_buf rec;
    int err; /* first failure; later calls repeat it */
};

static int writer_put(ms_trace_writer *w, const void *p, size_t n)
{
    if (fwrite(p, 1, n, w->f) != n)
        return w->err = ms_error(MS_ERR_IO, "trace %s: write failed: %s", w->path, strerror(errno));
    return MS_OK;
}

/* Append the checksum (seeded with the record's index, so a record moved
 * or repeated is caught) and write the record out. */
static int writer_emit(ms_trace_writer *w)
{
    uint8_t sum[4];
    ms_put_le32(sum, XXH32(w->rec.data, w->rec.len, (uint32_t)w->records));
    int rc = ms_buf_append(&w->rec, sum, 4);
    if (rc)
        return w->err = rc;
    return writer_put(w, w->rec.data, w->rec.len);
}

static int rec_uleb(ms_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    return ms_buf_append(b, tmp, ms_uleb_put(tmp, v));
}

int ms_trace_writer_open(const char *path, uint64_t npages, uint32_t page_size, const char *desc,
                         ms_trace_writer **out)
{
    *out = NULL;
    if (npages == 0 || npages > NPAGES_MAX)
        return ms_error(MS_ERR_INVAL, "trace %s: %llu pages (need 1 .. 2^40)", path, (unsigned long long)npages);
    if (page_size < 512 || page_size > PSIZE_MAX || (page_size & (page_size - 1)))
        return ms_error(MS_ERR_INVAL, "trace %s: page size %u is not a power of two in 512..%u", path, page_size,
                        PSIZE_MAX);
    size_t dlen = desc ? strlen(desc) : 0;
    if (dlen > DESC_MAX)
        dlen = DESC_MAX;
    ms_trace_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return ms_error(MS_ERR_NOMEM, "trace writer: out of memory");
    }
    w->npages = npages;
    w->f = fopen(path, "wb");
    if (!w->f) {
        int rc = ms_error(MS_ERR_IO, "trace %s: cannot create: %s", path, strerror(errno));
        free(w->path);
        free(w);
        return rc;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint8_t h[HDR_FIXED + DESC_MAX + 4];
    memcpy(h, TRACE_MAGIC, 8);
    ms_put_le16(h + 8, TRACE_VERSION);
    ms_put_le16(h + 10, 0);
    ms_put_le32(h + 12, page_size);
    ms_put_le64(h + 16, npages);
    ms_put_le64(h + 24, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    ms_put_le16(h + 32, (uint16_t)dlen);
    if (dlen)
        memcpy(h + HDR_FIXED, desc, dlen);
    ms_put_le32(h + HDR_FIXED + dlen, XXH32(h, HDR_FIXED + dlen, 0));
    int rc = writer_put(w, h, HDR_FIXED + dlen + 4);
    if (rc) {
        fclose(w->f);
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return MS_OK;
}

int ms_trace_writer_add(ms_trace_writer *w, uint64_t t_ns, const uint64_t *bitmap, uint64_t nbits)
{
    if (w->err)
        return ms_error(w->err, "trace %s: an earlier write failed", w->path);
    if (nbits > w->npages)
        return ms_error(MS_ERR_INVAL, "trace %s: bitmap of %llu pages exceeds the trace's %llu", w->path,
                        (unsigned long long)nbits, (unsigned long long)w->npages);
    if (t_ns < w->last_t)
        return ms_error(MS_ERR_INVAL, "trace %s: time %llu ns goes back (last %llu ns)", w->path,
                        (unsigned long long)t_ns, (unsigned long long)w->last_t);
    uint64_t count = ms_bitmap_count(bitmap, nbits);
    w->rec.len = 0;
    uint8_t type = REC_INTERVAL;
    int rc = ms_buf_append(&w->rec, &type, 1);
    rc = rc ? rc : rec_uleb(&w->rec, t_ns - w->last_t);
    rc = rc ? rc : rec_uleb(&w->rec, count);
    uint64_t next = 0; /* first page not yet covered by a gap */
    for (size_t wi = 0; !rc && wi < ms_bitmap_words(nbits); wi++) {
        uint64_t word = bitmap[wi];
        if (wi == nbits / 64 && nbits % 64)
            word &= (1ull << (nbits % 64)) - 1;
        while (word && !rc) {
            uint64_t page = wi * 64 + (uint64_t)__builtin_ctzll(word);
            word &= word - 1;
            rc = rec_uleb(&w->rec, page - next);
            next = page + 1;
        }
    }
    rc = rc ? rc : writer_emit(w);
    if (rc)
        return w->err = rc;
    w->last_t = t_ns;
    w->records++;
    w->dirty_total += count;
    return MS_OK;
}

int ms_trace_writer_close(ms_trace_writer *w)
{
    if (!w)
        return MS_OK;
    int rc = w->err;
    if (!rc) {
        w->rec.len = 0;
        uint8_t type = REC_END;
        rc = ms_buf_append(&w->rec, &type, 1);
        rc = rc ? rc : rec_uleb(&w->rec, w->records);
        rc = rc ? rc : rec_uleb(&w->rec, w->dirty_total);
        rc = rc ? rc : writer_emit(w);
    } else {
        rc = ms_error(rc, "trace %s: not finished because an earlier write failed", w->path);
    }
    if (fflush(w->f) != 0 && !rc)
        rc = ms_error(MS_ERR_IO, "trace %s: flush failed: %s", w->path, strerror(errno));
    if (fclose(w->f) != 0 && !rc)
        rc = ms_error(MS_ERR_IO, "trace %s: close failed: %s", w->path, strerror(errno));
    ms_buf_free(&w->rec);
    free(w->path);
    free(w);
    return rc;
}

/* ---------------------------------------------------------------- reader */

typedef struct trace_rec {
    size_t pages_off; /* offset of the first gap */
    uint64_t count;
    uint64_t t0, t1;  /* interval (t0, t1] in ns */
} trace_rec;

typedef struct trace_src {
    const uint8_t *data;
    size_t len;
    uint8_t *copy;    /* the whole file, or a copy of caller memory */
    ms_trace_info info;
    ms_trace_opts o;
    trace_rec *recs;
    uint64_t *pending;
    ms_src_versions vers;
    /* playback */
    double now_ns;          /* virtual clock, relative to the current loop */
    uint64_t cur;           /* record being played */
    uint64_t applied;       /* pages of recs[cur] already applied */
    uint64_t *cur_pages;    /* recs[cur] decoded */
    uint64_t cur_loaded;    /* index + 1 of the decoded record, 0 if none */
    uint64_t stride, offset;/* order of application inside a record */
    bool paused;
    bool done;
} trace_src;

/* The parser: every check happens at open, so playback never meets a bad
 * byte. `where` names the record for the messages. */
typedef struct parser {
    const uint8_t *p;
    size_t len, pos;
    const char *name;
} parser;

static int need(parser *ps, size_t n, const char *what, uint64_t rec)
{
    if (ps->len - ps->pos < n)
        return ms_error(MS_ERR_TRUNCATED, "trace %s: record %llu: %s cut off at byte %zu of %zu", ps->name,
                        (unsigned long long)rec, what, ps->pos, ps->len);
    return MS_OK;
}

static int get_uleb(parser *ps, uint64_t *v, const char *what, uint64_t rec)
{
    size_t n = ms_uleb_get(ps->p + ps->pos, ps->len - ps->pos, v);
    if (n == 0) {
        size_t left = ps->len - ps->pos;
        bool cut = true; /* truncated unless 10 bytes were there and still no end */
        for (size_t i = 0; i < left && i < 10; i++)
            if (!(ps->p[ps->pos + i] & 0x80))
                cut = false;
        if (cut && left < 10)
            return ms_error(MS_ERR_TRUNCATED, "trace %s: record %llu: %s cut off at byte %zu", ps->name,
                            (unsigned long long)rec, what, ps->pos);
        return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu: %s at byte %zu is not a valid varint", ps->name,
                        (unsigned long long)rec, what, ps->pos);
    }
    ps->pos += n;
    return MS_OK;
}

static int parse_header(parser *ps, trace_src *t)
{
    if (ps->len < HDR_FIXED + 4)
        return ms_error(MS_ERR_TRUNCATED, "trace %s: %zu bytes, shorter than the %u-byte header", ps->name, ps->len,
                        HDR_FIXED + 4);
    const uint8_t *h = ps->p;
    if (memcmp(h, TRACE_MAGIC, 8))
        return ms_error(MS_ERR_CORRUPT, "trace %s: bad magic (not a migstream dirty trace)", ps->name);
    if (ms_get_le16(h + 8) != TRACE_VERSION)
        return ms_error(MS_ERR_VERSION, "trace %s: format version %u, this build reads %u", ps->name,
                        ms_get_le16(h + 8), TRACE_VERSION);
    size_t dlen = ms_get_le16(h + 32);
    if (dlen > DESC_MAX)
        return ms_error(MS_ERR_CORRUPT, "trace %s: description length %zu exceeds %u", ps->name, dlen, DESC_MAX);
    if (ps->len < HDR_FIXED + dlen + 4)
        return ms_error(MS_ERR_TRUNCATED, "trace %s: header cut off (%zu of %zu bytes)", ps->name, ps->len,
                        HDR_FIXED + dlen + 4);
    if (XXH32(h, HDR_FIXED + dlen, 0) != ms_get_le32(h + HDR_FIXED + dlen))
        return ms_error(MS_ERR_CORRUPT, "trace %s: header checksum mismatch", ps->name);
    if (ms_get_le16(h + 10) != 0)
        return ms_error(MS_ERR_CORRUPT, "trace %s: unknown header flags 0x%x", ps->name, ms_get_le16(h + 10));
    uint32_t psize = ms_get_le32(h + 12);
    uint64_t npages = ms_get_le64(h + 16);
    if (psize < 512 || psize > PSIZE_MAX || (psize & (psize - 1)))
        return ms_error(MS_ERR_CORRUPT, "trace %s: page size %u is not a power of two in 512..%u", ps->name, psize,
                        PSIZE_MAX);
    if (npages == 0 || npages > NPAGES_MAX)
        return ms_error(MS_ERR_CORRUPT, "trace %s: %llu pages (need 1 .. 2^40)", ps->name, (unsigned long long)npages);
    t->info.page_size = psize;
    t->info.npages = npages;
    memcpy(t->info.desc, h + HDR_FIXED, dlen);
    t->info.desc[dlen] = 0;
    ps->pos = HDR_FIXED + dlen + 4;
    return MS_OK;
}

static int check_sum(parser *ps, size_t start, uint64_t rec)
{
    int rc = need(ps, 4, "checksum", rec);
    if (rc)
        return rc;
    uint32_t want = ms_get_le32(ps->p + ps->pos);
    if (XXH32(ps->p + start, ps->pos - start, (uint32_t)rec) != want)
        return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu (byte %zu): checksum mismatch", ps->name,
                        (unsigned long long)rec, start);
    ps->pos += 4;
    return MS_OK;
}

static int parse_interval(parser *ps, trace_src *t, trace_rec *r, uint64_t idx, uint64_t *clock)
{
    size_t start = ps->pos - 1;
    uint64_t dt, count;
    int rc = get_uleb(ps, &dt, "time delta", idx);
    rc = rc ? rc : get_uleb(ps, &count, "page count", idx);
    if (rc)
        return rc;
    if (dt > UINT64_MAX - *clock)
        return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu: time overflows", ps->name, (unsigned long long)idx);
    if (count > t->info.npages)
        return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu: %llu pages of a %llu-page trace", ps->name,
                        (unsigned long long)idx, (unsigned long long)count, (unsigned long long)t->info.npages);
    r->t0 = *clock;
    r->t1 = *clock + dt;
    r->count = count;
    r->pages_off = ps->pos;
    uint64_t next = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t gap;
        if ((rc = get_uleb(ps, &gap, "page", idx)))
            return rc;
        if (gap >= t->info.npages - next)
            return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu: page %llu beyond the trace's %llu pages", ps->name,
                            (unsigned long long)idx, (unsigned long long)(next + gap),
                            (unsigned long long)t->info.npages);
        next += gap + 1;
    }
    if ((rc = check_sum(ps, start, idx)))
        return rc;
    *clock = r->t1;
    t->info.dirty_total += count;
    return MS_OK;
}

static int parse_end(parser *ps, trace_src *t, uint64_t idx)
{
    size_t start = ps->pos - 1;
    uint64_t nrec, total;
    int rc = get_uleb(ps, &nrec, "record count", idx);
    rc = rc ? rc : get_uleb(ps, &total, "page total", idx);
    rc = rc ? rc : check_sum(ps, start, idx);
    if (rc)
        return rc;
    if (nrec != idx || total != t->info.dirty_total)
        return ms_error(MS_ERR_CORRUPT,
                        "trace %s: end record says %llu records / %llu pages, file has %llu / %llu", ps->name,
                        (unsigned long long)nrec, (unsigned long long)total, (unsigned long long)idx,
                        (unsigned long long)t->info.dirty_total);
    if (ps->pos != ps->len)
        return ms_error(MS_ERR_CORRUPT, "trace %s: %zu stray bytes after the end record", ps->name, ps->len - ps->pos);
    return MS_OK;
}

static int parse_all(trace_src *t, const char *name)
{
    parser ps = {.p = t->data, .len = t->len, .name = name};
    int rc = parse_header(&ps, t);
    if (rc)
        return rc;
    size_t cap = 0;
    uint64_t clock = 0;
    for (uint64_t idx = 0;; idx++) {
        if (ps.pos == ps.len)
            return ms_error(MS_ERR_TRUNCATED, "trace %s: ends after %llu records without its end record", name,
                            (unsigned long long)idx);
        uint8_t type = ps.p[ps.pos++];
        if (type == REC_END) {
            t->info.records = idx;
            t->info.duration_ns = clock;
            return parse_end(&ps, t, idx);
        }
        if (type != REC_INTERVAL)
            return ms_error(MS_ERR_CORRUPT, "trace %s: record %llu (byte %zu): unknown type 0x%02x", name,
                            (unsigned long long)idx, ps.pos - 1, type);
        if (idx == cap) {
            cap = cap ? cap * 2 : 64;
            trace_rec *nr = realloc(t->recs, cap * sizeof *nr);
            if (!nr)
                return ms_error(MS_ERR_NOMEM, "trace %s: record table", name);
            t->recs = nr;
        }
        if ((rc = parse_interval(&ps, t, &t->recs[idx], idx, &clock)))
            return rc;
    }
}

static int load_record(trace_src *t, uint64_t i)
{
    if (t->cur_loaded == i + 1)
        return MS_OK;
    trace_rec *r = &t->recs[i];
    free(t->cur_pages);
    t->cur_pages = malloc((r->count ? r->count : 1) * sizeof *t->cur_pages);
    if (!t->cur_pages) {
        t->cur_loaded = 0;
        return ms_error(MS_ERR_NOMEM, "trace: %llu pages of record %llu", (unsigned long long)r->count,
                        (unsigned long long)i);
    }
    size_t pos = r->pages_off;
    uint64_t next = 0, gap = 0;
    for (uint64_t k = 0; k < r->count; k++) {
        pos += ms_uleb_get(t->data + pos, t->len - pos, &gap); /* validated at open */
        t->cur_pages[k] = next + gap;
        next += gap + 1;
    }
    t->cur_loaded = i + 1;
    /* Pages of a record are applied in a scattered order (k -> a*k+b mod
     * count with a coprime to count), so a partial interval dirties a
     * spread-out share rather than the lowest pages. */
    uint64_t n = r->count ? r->count : 1;
    uint64_t h = ms_src_mix64(t->o.seed ^ (i * 0x9e3779b97f4a7c15ull));
    uint64_t a = (uint64_t)((double)n * 0.6180339887) | 1;
    while (n > 1) {
        uint64_t x = a % n, y = n; /* gcd */
        while (x) {
            uint64_t tmp = y % x;
            y = x;
            x = tmp;
        }
        if (y == 1)
            break;
        a += 2;
    }
    t->stride = a % n;
    t->offset = h % n;
    return MS_OK;
}

static void apply_pages(trace_src *t, uint64_t upto)
{
    uint64_t n = t->recs[t->cur].count;
    for (; t->applied < upto; t->applied++) {
        uint64_t k = (uint64_t)(((unsigned __int128)t->applied * t->stride + t->offset) % n);
        uint64_t page = t->cur_pages[k];
        ms_bit_set(t->pending, page);
        ms_src_versions_bump(&t->vers, page);
    }
}

static int trace_advance(ms_page_source *s, double seconds)
{
    trace_src *t = s->priv;
    if (!(seconds >= 0) || !isfinite(seconds))
        return ms_error(MS_ERR_INVAL, "trace: advance by %g s", seconds);
    if (t->paused || t->done)
        return MS_OK;
    t->now_ns += seconds * 1e9;
    double dur = (double)t->info.duration_ns;
    if (t->o.loop && dur > 0 && t->now_ns >= 3 * dur) {
        /* Whole loops in one step dirty every page of every record: do
         * that once instead of looping (a 1 ns trace would never end). */
        for (uint64_t i = 0; i < t->info.records; i++) {
            int rc = t->recs[i].count ? load_record(t, i) : MS_OK;
            if (rc)
                return rc;
            uint64_t keep = t->applied;
            t->applied = 0;
            uint64_t save = t->cur;
            t->cur = i;
            apply_pages(t, t->recs[i].count);
            t->cur = save;
            t->applied = keep;
        }
        t->now_ns = fmod(t->now_ns, dur) + dur;
    }
    while (!t->done) {
        if (t->cur == t->info.records) {
            if (!t->o.loop || t->info.duration_ns == 0) {
                t->done = true;
                break;
            }
            t->now_ns -= (double)t->info.duration_ns;
            t->cur = 0;
            t->applied = 0;
            continue;
        }
        trace_rec *r = &t->recs[t->cur];
        if (r->count) {
            int rc = load_record(t, t->cur);
            if (rc)
                return rc;
        }
        if (t->now_ns >= (double)r->t1) {
            apply_pages(t, r->count);
            t->cur++;
            t->applied = 0;
            continue;
        }
        if (t->now_ns > (double)r->t0 && r->count) {
            double f = (t->now_ns - (double)r->t0) / (double)(r->t1 - r->t0);
            apply_pages(t, (uint64_t)(f * (double)r->count));
        }
        break;
    }
    return MS_OK;
}

static int trace_start(ms_page_source *s)
{
    trace_src *t = s->priv;
    memset(t->pending, 0, ms_bitmap_words(t->info.npages) * 8);
    return MS_OK;
}

static int trace_dirty(ms_page_source *s, uint64_t *bm)
{
    trace_src *t = s->priv;
    size_t nw = ms_bitmap_words(t->info.npages);
    for (size_t i = 0; i < nw; i++) {
        bm[i] |= t->pending[i];
        t->pending[i] = 0;
    }
    return MS_OK;
}

static int trace_read(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out)
{
    trace_src *t = s->priv;
    return ms_src_versions_read(&t->vers, t->o.seed, t->info.npages, s->page_size, idx, n, out);
}

static int trace_pause(ms_page_source *s)
{
    ((trace_src *)s->priv)->paused = true;
    return MS_OK;
}

static int trace_resume(ms_page_source *s)
{
    ((trace_src *)s->priv)->paused = false;
    return MS_OK;
}

static void trace_destroy(ms_page_source *s)
{
    trace_src *t = s->priv;
    free(t->copy);
    free(t->recs);
    free(t->pending);
    free(t->cur_pages);
    free(t->vers.v);
    free(t);
    free(s);
}

static const ms_page_source_ops trace_ops = {
    .name = "trace",
    .start = trace_start,
    .dirty = trace_dirty,
    .read = trace_read,
    .pause = trace_pause,
    .resume = trace_resume,
    .advance = trace_advance,
    .destroy = trace_destroy,
};

static int finish_open(ms_page_source *s, const char *name, ms_page_source **out)
{
    trace_src *t = s->priv;
    int rc = parse_all(t, name);
    if (!rc) {
        t->pending = calloc(ms_bitmap_words(t->info.npages), 8);
        if (!t->pending)
            rc = ms_error(MS_ERR_NOMEM, "trace %s: bitmap of %llu pages", name, (unsigned long long)t->info.npages);
    }
    if (rc) {
        trace_destroy(s);
        return rc;
    }
    s->npages = t->info.npages;
    s->page_size = t->info.page_size;
    const char *base = strrchr(name, '/');
    snprintf(s->desc, sizeof s->desc, "trace %.60s: %llu records, %.1f s, %llu MiB", base ? base + 1 : name,
             (unsigned long long)t->info.records, (double)t->info.duration_ns / 1e9,
             (unsigned long long)(t->info.npages * t->info.page_size >> 20));
    *out = s;
    return MS_OK;
}

static int new_source(const ms_trace_opts *opts, ms_page_source **sp)
{
    ms_page_source *s = calloc(1, sizeof *s);
    trace_src *t = calloc(1, sizeof *t);
    if (!s || !t) {
        free(s);
        free(t);
        return ms_error(MS_ERR_NOMEM, "trace: out of memory");
    }
    if (opts)
        t->o = *opts;
    s->ops = &trace_ops;
    s->priv = t;
    *sp = s;
    return MS_OK;
}

int ms_trace_source_open_mem(const void *data, size_t len, const ms_trace_opts *opts, ms_page_source **out)
{
    *out = NULL;
    ms_page_source *s = NULL;
    int rc = new_source(opts, &s);
    if (rc)
        return rc;
    trace_src *t = s->priv;
    t->copy = malloc(len ? len : 1);
    if (!t->copy) {
        trace_destroy(s);
        return ms_error(MS_ERR_NOMEM, "trace: copy of %zu bytes", len);
    }
    if (len)
        memcpy(t->copy, data, len);
    t->data = t->copy;
    t->len = len;
    return finish_open(s, "(memory)", out);
}

/* Read into memory rather than mmap: a file truncated under us must give
 * an error, not SIGBUS. */
static int slurp(int fd, const char *path, size_t size, uint8_t **out)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return ms_error(MS_ERR_NOMEM, "trace %s: %zu bytes", path, size);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return n < 0 ? ms_error(MS_ERR_IO, "trace %s: read: %s", path, strerror(errno))
                         : ms_error(MS_ERR_TRUNCATED, "trace %s: shrank while being read", path);
        }
        got += (size_t)n;
    }
    *out = buf;
    return MS_OK;
}

int ms_trace_source_open(const char *path, const ms_trace_opts *opts, ms_page_source **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ms_error(MS_ERR_IO, "trace %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ms_error(MS_ERR_INVAL, "trace %s: not a regular file", path);
    }
    ms_page_source *s = NULL;
    int rc = new_source(opts, &s);
    if (rc) {
        close(fd);
        return rc;
    }
    trace_src *t = s->priv;
    t->len = (size_t)st.st_size;
    rc = slurp(fd, path, t->len, &t->copy);
    close(fd);
    if (rc) {
        trace_destroy(s);
        return rc;
    }
    t->data = t->copy;
    return finish_open(s, path, out);
}

int ms_trace_source_info(const ms_page_source *s, ms_trace_info *info)
{
    if (s->ops != &trace_ops)
        return ms_error(MS_ERR_INVAL, "%s is not a trace source", s->ops->name);
    *info = ((const trace_src *)s->priv)->info;
    return MS_OK;
}
