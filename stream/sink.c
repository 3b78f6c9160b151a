/* Sinks: where a receiver delivers pages and opaque bytes, in order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3 states on the stack */
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
#include <xxh_x86dispatch.h> /* AVX2 at run time: see wire.c */
#endif

#include "stream/stream.h"

/* An image sink without a bound still refuses absurd pfns from a peer. */
#define IMAGE_DEFAULT_MAX (64ull << 30)

/* A pfn that no page size could place inside an addressable image. */
static int check_pfn(const char *sink, uint64_t pfn)
{
    if (pfn >= MS_PFN_LIMIT)
        return ms_error(MS_ERR_CORRUPT, "%s sink: pfn %llu is beyond 2^52", sink, (unsigned long long)pfn);
    return MS_OK;
}

/* Capacity for `need` units, grown from `cap` (`first` when empty) by
 * doubling, which keeps growth amortised; `max` caps the last step. */
static uint64_t grown_cap(uint64_t cap, uint64_t first, uint64_t need, uint64_t max)
{
    if (!cap)
        cap = first;
    while (cap < need)
        cap *= 2;
    return cap > max ? max : cap;
}

/* ---- memory image ------------------------------------------------------ */

static int image_grow(ms_image_sink *s, uint64_t need)
{
    uint64_t max = s->max_bytes ? s->max_bytes : IMAGE_DEFAULT_MAX;
    if (need > max)
        return ms_error(MS_ERR_LIMIT, "image sink: page ending at byte %llu is beyond the %llu-byte image bound",
                        (unsigned long long)need, (unsigned long long)max);
    if (need > s->mem_cap) {
        uint64_t cap = grown_cap(s->mem_cap, 1u << 20, need, max);
        uint8_t *m = realloc(s->mem, cap);
        if (!m)
            return ms_error(MS_ERR_NOMEM, "image sink: cannot grow the image to %llu bytes",
                            (unsigned long long)cap);
        memset(m + s->mem_cap, 0, cap - s->mem_cap);
        s->mem = m;
        s->mem_cap = cap;
    }
    if (need > s->mem_len)
        s->mem_len = need;
    return MS_OK;
}

static int image_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                       const uint8_t *pages, size_t count, size_t page_size)
{
    ms_image_sink *s = ctx;
    (void)round;
    (void)fragment;
    for (size_t i = 0; i < count; i++) {
        uint64_t off = pfns[i] * page_size;
        int rc = check_pfn("image", pfns[i]);
        if (rc == MS_OK)
            rc = image_grow(s, off + page_size);
        if (rc < 0)
            return rc;
        memcpy(s->mem + off, pages + i * page_size, page_size);
    }
    s->pages_written += count;
    return MS_OK;
}

static int image_opaque(void *ctx, const uint8_t *data, size_t len)
{
    ms_image_sink *s = ctx;
    if (!len) /* an empty record: nothing to keep (and data may be NULL) */
        return MS_OK;
    return ms_buf_append(&s->opaque, data, len);
}

static int no_round_end(void *ctx, uint32_t round)
{
    (void)ctx;
    (void)round;
    return MS_OK;
}

static int no_end(void *ctx)
{
    (void)ctx;
    return MS_OK;
}

const ms_sink_ops ms_image_sink_ops = {
    .pages = image_pages,
    .opaque = image_opaque,
    .round_end = no_round_end,
    .end = no_end,
};

void ms_image_sink_free(ms_image_sink *s)
{
    if (!s)
        return;
    free(s->mem);
    ms_buf_free(&s->opaque);
    s->mem = NULL;
    s->mem_len = s->mem_cap = 0;
    s->pages_written = 0;
}

/* ---- file -------------------------------------------------------------- */

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ms_error(MS_ERR_IO, "file sink: write at offset %llu: %s", (unsigned long long)off,
                            w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return MS_OK;
}

static int file_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                      const uint8_t *pages, size_t count, size_t page_size)
{
    ms_file_sink *s = ctx;
    (void)round;
    (void)fragment;
    if (s->fd < 0)
        return MS_OK;
    /* Runs of consecutive pfns go out in one write. */
    for (size_t i = 0; i < count;) {
        size_t j = i + 1;
        while (j < count && pfns[j] == pfns[j - 1] + 1)
            j++;
        int rc = check_pfn("file", pfns[i]);
        if (rc == MS_OK)
            rc = pwrite_all(s->fd, pages + i * page_size, (j - i) * page_size, pfns[i] * page_size);
        if (rc < 0)
            return rc;
        i = j;
    }
    return MS_OK;
}

static int file_opaque(void *ctx, const uint8_t *data, size_t len)
{
    ms_file_sink *s = ctx;
    if (s->opaque_fd < 0)
        return MS_OK;
    while (len) {
        ssize_t w = write(s->opaque_fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ms_error(MS_ERR_IO, "file sink: writing opaque bytes: %s", w < 0 ? strerror(errno) : "no progress");
        data += w;
        len -= (size_t)w;
    }
    return MS_OK;
}

const ms_sink_ops ms_file_sink_ops = {
    .pages = file_pages,
    .opaque = file_opaque,
    .round_end = no_round_end,
    .end = no_end,
};

/* ---- discard ----------------------------------------------------------- */

static int discard_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                         const uint8_t *pages, size_t count, size_t page_size)
{
    (void)ctx, (void)round, (void)fragment, (void)pfns, (void)pages, (void)count, (void)page_size;
    return MS_OK;
}

static int discard_opaque(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx, (void)data, (void)len;
    return MS_OK;
}

const ms_sink_ops ms_discard_sink_ops = {
    .pages = discard_pages,
    .opaque = discard_opaque,
    .round_end = no_round_end,
    .end = no_end,
};

/* ---- image digest ------------------------------------------------------ */

static uint64_t zero_page_hash(size_t page_size)
{
    static _Thread_local uint64_t cached;
    static _Thread_local size_t cached_size;
    if (cached_size != page_size) {
        uint8_t *z = calloc(1, page_size);
        cached = z ? XXH3_64bits(z, page_size) : 0;
        free(z);
        cached_size = page_size;
    }
    return cached;
}

static int digest_grow(ms_digest_sink *d, uint64_t npages)
{
    uint64_t max = d->max_pages ? d->max_pages : IMAGE_DEFAULT_MAX / MS_PAGE_SIZE;
    if (npages > max)
        return ms_error(MS_ERR_LIMIT, "digest sink: pfn %llu is beyond the %llu-page image bound",
                        (unsigned long long)(npages - 1), (unsigned long long)max);
    if (npages > d->cap) {
        uint64_t cap = grown_cap(d->cap, 4096, npages, max);
        uint64_t *h = realloc(d->page_hash, cap * sizeof *h);
        if (!h)
            return ms_error(MS_ERR_NOMEM, "digest sink: cannot track %llu pages", (unsigned long long)cap);
        uint64_t z = zero_page_hash(d->page_size ? d->page_size : MS_PAGE_SIZE);
        for (uint64_t i = d->cap; i < cap; i++)
            h[i] = z;
        d->page_hash = h;
        d->cap = cap;
    }
    if (npages > d->npages)
        d->npages = npages;
    return MS_OK;
}

static int digest_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                        const uint8_t *pages, size_t count, size_t page_size)
{
    ms_digest_sink *d = ctx;
    if (!d->page_size)
        d->page_size = page_size;
    for (size_t i = 0; i < count; i++) {
        int rc = check_pfn("digest", pfns[i]);
        if (rc == MS_OK)
            rc = digest_grow(d, pfns[i] + 1);
        if (rc < 0)
            return rc;
        d->page_hash[pfns[i]] = XXH3_64bits(pages + i * page_size, page_size);
    }
    return d->inner ? d->inner->pages(d->inner_ctx, round, fragment, pfns, pages, count, page_size) : MS_OK;
}

static int digest_opaque(void *ctx, const uint8_t *data, size_t len)
{
    ms_digest_sink *d = ctx;
    if (!len)
        return d->inner ? d->inner->opaque(d->inner_ctx, data, len) : MS_OK;
    if (!d->opaque_state) {
        d->opaque_state = XXH3_createState();
        if (!d->opaque_state)
            return ms_error(MS_ERR_NOMEM, "digest sink: out of memory");
        XXH3_64bits_reset(d->opaque_state);
    }
    XXH3_64bits_update(d->opaque_state, data, len);
    d->opaque_bytes += len;
    return d->inner ? d->inner->opaque(d->inner_ctx, data, len) : MS_OK;
}

static int digest_round_end(void *ctx, uint32_t round)
{
    ms_digest_sink *d = ctx;
    return d->inner ? d->inner->round_end(d->inner_ctx, round) : MS_OK;
}

static int digest_end(void *ctx)
{
    ms_digest_sink *d = ctx;
    return d->inner ? d->inner->end(d->inner_ctx) : MS_OK;
}

const ms_sink_ops ms_digest_sink_ops = {
    .pages = digest_pages,
    .opaque = digest_opaque,
    .round_end = digest_round_end,
    .end = digest_end,
};

/* XXH3-64 over little-endian u64s is what ms_content_hash computes of a
 * pfn list: the same function serves for a list of page hashes. */
uint64_t ms_page_hashes_digest(const uint64_t *page_hashes, uint64_t npages)
{
    return ms_content_hash(page_hashes, (size_t)npages, NULL, 0);
}

uint64_t ms_digest_sink_value(const ms_digest_sink *d) { return ms_page_hashes_digest(d->page_hash, d->npages); }

uint64_t ms_digest_sink_opaque(const ms_digest_sink *d)
{
    if (!d->opaque_state)
        return XXH3_64bits(NULL, 0);
    return XXH3_64bits_digest(d->opaque_state);
}

void ms_digest_sink_free(ms_digest_sink *d)
{
    if (!d)
        return;
    free(d->page_hash);
    XXH3_freeState(d->opaque_state);
    d->opaque_state = NULL;
    d->page_hash = NULL;
    d->npages = d->cap = 0;
}

uint64_t ms_image_digest(const uint8_t *mem, uint64_t len, size_t page_size)
{
    XXH3_state_t st;
    uint8_t le[8];
    uint8_t *tail = NULL;
    XXH3_64bits_reset(&st);
    for (uint64_t off = 0; off < len; off += page_size) {
        uint64_t h;
        if (len - off >= page_size) {
            h = XXH3_64bits(mem + off, page_size);
        } else {
            /* A short last page counts as zero-padded, as a receiver stores it. */
            if (!tail)
                tail = calloc(1, page_size);
            if (!tail)
                return 0;
            memcpy(tail, mem + off, (size_t)(len - off));
            h = XXH3_64bits(tail, page_size);
        }
        ms_put_le64(le, h);
        XXH3_64bits_update(&st, le, 8);
    }
    free(tail);
    return XXH3_64bits_digest(&st);
}
