/* The stateful page stages (zero, delta) and the page section format.
 *
 * Page section (docs/codecs.md has it byte by byte): the payloads of all
 * pages in page order, then one tag byte per page. Putting the tags last
 * means a raw payload never sits before its page's place in the decoded
 * buffer, so a section can be decoded in place, and an all-raw section costs
 * no copy at all.
 *
 * The sender and receiver caches evolve identically because both apply the
 * same two steps to the same sequence of sections: decide every page of a
 * section against the cache as it was before the section, then commit the
 * section's updates in page order. */
#include "codecs/codecs.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NIL UINT32_MAX

/* ---- delta page cache ---------------------------------------------------
 * Holds the last version sent of up to `cap` pages, keyed by pfn. Slots
 * live in one array sized from the byte bound, so a full cache never
 * allocates and the bound covers everything the cache holds. Eviction: the
 * least recently sent page (LRU list, head = most recent). */

typedef struct cache_entry {
    uint64_t pfn;
    uint32_t prev, next; /* LRU neighbours */
    uint32_t hnext;      /* next in hash bucket, or next free slot */
    uint32_t unused;
} cache_entry;

/* Bucket array is at most 2 slots per entry, 4 bytes each. */
#define ENTRY_OVERHEAD (sizeof(cache_entry) + 2 * sizeof(uint32_t))

typedef struct delta_cache {
    size_t ps;
    uint32_t cap, used;
    uint32_t fresh;     /* slots fresh..cap-1 were never used */
    uint32_t free_head; /* slots freed by zero pages */
    uint32_t head, tail;
    uint32_t hmask;
    uint32_t *buckets;
    cache_entry *e;
    uint8_t *data;
    size_t data_len;
    uint64_t fixed_bytes;
} delta_cache;

static inline uint32_t cache_hash(const delta_cache *dc, uint64_t pfn)
{
    return (uint32_t)((pfn * 0x9e3779b97f4a7c15ull) >> 32) & dc->hmask;
}

static void cache_free(delta_cache *dc)
{
    free(dc->buckets);
    free(dc->e);
    if (dc->data)
        munmap(dc->data, dc->data_len);
    memset(dc, 0, sizeof *dc);
}

static int cache_init(delta_cache *dc, uint64_t bytes, size_t ps)
{
    memset(dc, 0, sizeof *dc);
    dc->ps = ps;
    dc->head = dc->tail = dc->free_head = NIL;
    /* The data mapping is rounded up to whole system pages: keep that
     * rounding inside the bound too. */
    size_t sys_page = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t cap = bytes > sys_page ? (bytes - sys_page) / (ps + ENTRY_OVERHEAD) : 0;
    if (cap >= NIL)
        cap = NIL - 1;
    dc->cap = (uint32_t)cap;
    if (!cap)
        return MS_OK;
    uint32_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    dc->hmask = nb - 1;
    dc->buckets = malloc(nb * sizeof *dc->buckets);
    dc->e = malloc(cap * sizeof *dc->e);
    /* Page data is faulted in as slots are first used, so resident memory
     * grows with the pages actually cached; huge pages make those faults
     * 512 times fewer where the kernel allows them. */
    dc->data_len = (cap * ps + sys_page - 1) / sys_page * sys_page;
    dc->data = mmap(NULL, dc->data_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dc->data == MAP_FAILED)
        dc->data = NULL;
    else
        madvise(dc->data, dc->data_len, MADV_HUGEPAGE);
    if (!dc->buckets || !dc->e || !dc->data) {
        cache_free(dc);
        return ms_error(MS_ERR_NOMEM, "cannot allocate a delta cache of %llu bytes",
                        (unsigned long long)bytes);
    }
    memset(dc->buckets, 0xff, nb * sizeof *dc->buckets);
    dc->fixed_bytes = nb * sizeof *dc->buckets + cap * sizeof *dc->e;
    return MS_OK;
}

static inline uint8_t *cache_data(const delta_cache *dc, uint32_t idx)
{
    return dc->data + (size_t)idx * dc->ps;
}

static uint32_t cache_find(const delta_cache *dc, uint64_t pfn)
{
    if (!dc->cap)
        return NIL;
    uint32_t i = dc->buckets[cache_hash(dc, pfn)];
    while (i != NIL && dc->e[i].pfn != pfn)
        i = dc->e[i].hnext;
    return i;
}

static void lru_unlink(delta_cache *dc, uint32_t i)
{
    cache_entry *e = &dc->e[i];
    if (e->prev != NIL)
        dc->e[e->prev].next = e->next;
    else
        dc->head = e->next;
    if (e->next != NIL)
        dc->e[e->next].prev = e->prev;
    else
        dc->tail = e->prev;
}

static void lru_push_head(delta_cache *dc, uint32_t i)
{
    dc->e[i].prev = NIL;
    dc->e[i].next = dc->head;
    if (dc->head != NIL)
        dc->e[dc->head].prev = i;
    dc->head = i;
    if (dc->tail == NIL)
        dc->tail = i;
}

static void hash_unlink(delta_cache *dc, uint32_t i)
{
    uint32_t *link = &dc->buckets[cache_hash(dc, dc->e[i].pfn)];
    while (*link != i)
        link = &dc->e[*link].hnext;
    *link = dc->e[i].hnext;
}

/* Forget a pfn (its page became zero: the receiver no longer needs it). */
static void cache_drop(delta_cache *dc, uint64_t pfn)
{
    uint32_t i = cache_find(dc, pfn);
    if (i == NIL)
        return;
    hash_unlink(dc, i);
    lru_unlink(dc, i);
    dc->e[i].hnext = dc->free_head;
    dc->free_head = i;
    dc->used--;
}

/* Record `page` as the last version sent of `pfn`. */
static void cache_put(delta_cache *dc, uint64_t pfn, const uint8_t *page)
{
    uint32_t i = cache_find(dc, pfn);
    if (i != NIL) {
        lru_unlink(dc, i);
    } else if (!dc->cap) {
        return;
    } else {
        if (dc->free_head != NIL) {
            i = dc->free_head;
            dc->free_head = dc->e[i].hnext;
            dc->used++;
        } else if (dc->fresh < dc->cap) {
            i = dc->fresh++;
            dc->used++;
        } else {
            i = dc->tail;
            hash_unlink(dc, i);
            lru_unlink(dc, i);
        }
        uint32_t h = cache_hash(dc, pfn);
        dc->e[i].pfn = pfn;
        dc->e[i].hnext = dc->buckets[h];
        dc->buckets[h] = i;
    }
    lru_push_head(dc, i);
    memcpy(cache_data(dc, i), page, dc->ps);
}

static uint64_t cache_bytes(const delta_cache *dc)
{
    return dc->cap ? dc->fixed_bytes + (uint64_t)dc->used * dc->ps + (dc->data_len - dc->cap * dc->ps) : 0;
}

/* ---- page coder ---------------------------------------------------------- */

typedef struct page_item {
    size_t off;     /* payload offset in the section */
    size_t len;     /* payload bytes (DELTA: the delta without its length) */
    uint32_t entry; /* DELTA: cache slot of the base version */
    uint8_t tag;
} page_item;

struct ms_page_coder {
    uint32_t stages;
    size_t ps;
    size_t len_size; /* ULEB128 bytes reserved for a delta length */
    delta_cache dc;
    page_item *items;
    uint8_t *tags;
    size_t items_cap;
    uint8_t *scratch; /* one page */
};

#define DEFAULT_CACHE_BYTES (64ull << 20)

void ms_stage_stats_add(ms_stage_stats *into, const ms_stage_stats *s)
{
    into->pages += s->pages;
    into->zero += s->zero;
    into->dup += s->dup;
    into->delta += s->delta;
    into->delta_miss += s->delta_miss;
    into->delta_nogain += s->delta_nogain;
    into->raw += s->raw;
    into->in_bytes += s->in_bytes;
    into->out_bytes += s->out_bytes;
}

void ms_page_coder_free(ms_page_coder *pc)
{
    if (!pc)
        return;
    cache_free(&pc->dc);
    free(pc->items);
    free(pc->tags);
    free(pc->scratch);
    free(pc);
}

ms_page_coder *ms_page_coder_new(const ms_page_coder_config *cfg)
{
    size_t ps = cfg->page_size ? cfg->page_size : MS_PAGE_SIZE;
    if (ps < 64 || ps > (1u << 20)) {
        ms_error(MS_ERR_INVAL, "page size %zu out of range 64..1048576", ps);
        return NULL;
    }
    if (cfg->stages & ~(MS_STAGE_ZERO | MS_STAGE_DELTA | MS_STAGE_DEDUP)) {
        ms_error(MS_ERR_INVAL, "unknown page stage bits 0x%x", cfg->stages);
        return NULL;
    }
    if (cfg->stages & MS_STAGE_DEDUP) {
        ms_error(MS_ERR_UNSUPPORTED, "the dedup page stage is not implemented in this build; "
                                     "use a chain without \"dedup\"");
        return NULL;
    }
    ms_page_coder *pc = calloc(1, sizeof *pc);
    if (!pc) {
        ms_error(MS_ERR_NOMEM, "cannot allocate a page coder");
        return NULL;
    }
    pc->stages = cfg->stages;
    pc->ps = ps;
    pc->len_size = ms_uleb_size(ps);
    pc->scratch = malloc(ps);
    if (!pc->scratch) {
        ms_error(MS_ERR_NOMEM, "cannot allocate a page coder");
        goto fail;
    }
    if (pc->stages & MS_STAGE_DELTA) {
        uint64_t bytes = cfg->delta_cache_bytes ? cfg->delta_cache_bytes : DEFAULT_CACHE_BYTES;
        if (cache_init(&pc->dc, bytes, ps))
            goto fail;
    }
    return pc;
fail:
    ms_page_coder_free(pc);
    return NULL;
}

uint64_t ms_page_coder_cache_bytes(const ms_page_coder *pc) { return cache_bytes(&pc->dc); }

uint64_t ms_page_coder_cache_capacity(const ms_page_coder *pc) { return pc->dc.cap; }

size_t ms_page_section_bound(uint32_t stages, size_t page_size, size_t count)
{
    if (page_size && count > (SIZE_MAX - count) / page_size)
        return SIZE_MAX;
    return count * page_size + (stages ? count : 0);
}

static int reserve_items(ms_page_coder *pc, size_t count)
{
    if (count <= pc->items_cap)
        return MS_OK;
    page_item *items = realloc(pc->items, count * sizeof *items);
    if (items)
        pc->items = items;
    uint8_t *tags = realloc(pc->tags, count);
    if (tags)
        pc->tags = tags;
    if (!items || !tags)
        return ms_error(MS_ERR_NOMEM, "cannot allocate page coder state for %zu pages", count);
    pc->items_cap = count;
    return MS_OK;
}

static int check_count(const ms_page_coder *pc, size_t count)
{
    if (ms_page_section_bound(pc->stages, pc->ps, count) >= SIZE_MAX / 2)
        return ms_error(MS_ERR_LIMIT, "%zu pages of %zu bytes are too many for one section", count,
                        pc->ps);
    return MS_OK;
}

/* Payload of one page; returns its tag. Reads the cache, never changes it. */
static uint8_t encode_page(ms_page_coder *pc, uint64_t pfn, const uint8_t *page, uint8_t **pp,
                           ms_stage_stats *st)
{
    uint8_t *p = *pp;
    if ((pc->stages & MS_STAGE_ZERO) && ms_page_is_zero(page, pc->ps)) {
        st->zero++;
        return MS_TAG_ZERO;
    }
    if (pc->stages & MS_STAGE_DELTA) {
        uint32_t i = cache_find(&pc->dc, pfn);
        if (i == NIL) {
            st->delta_miss++;
        } else {
            /* Cap the delta so that length + delta stays below a page. */
            size_t u = pc->len_size;
            size_t n = ms_delta_encode(cache_data(&pc->dc, i), page, pc->ps, p + u, pc->ps - u);
            if (n) {
                size_t l = ms_uleb_size(n);
                if (l != u)
                    memmove(p + l, p + u, n);
                ms_uleb_put(p, n);
                *pp = p + l + n;
                st->delta++;
                return MS_TAG_DELTA;
            }
            st->delta_nogain++;
        }
    }
    memcpy(p, page, pc->ps);
    *pp = p + pc->ps;
    st->raw++;
    return MS_TAG_RAW;
}

/* Cache updates of a section, identical on both sides. */
static void commit(ms_page_coder *pc, const uint64_t *pfns, const uint8_t *tags, const uint8_t *pages,
                   size_t count)
{
    if (!(pc->stages & MS_STAGE_DELTA))
        return;
    for (size_t i = 0; i < count; i++) {
        if (tags[i] == MS_TAG_ZERO)
            cache_drop(&pc->dc, pfns[i]);
        else
            cache_put(&pc->dc, pfns[i], pages + i * pc->ps);
    }
}

int ms_page_coder_encode(ms_page_coder *pc, const uint64_t *pfns, const uint8_t *pages, size_t count,
                         ms_buf *out, ms_stage_stats *st)
{
    ms_stage_stats local = {0};
    int rc = check_count(pc, count);
    if (!rc)
        rc = reserve_items(pc, count);
    if (!rc)
        rc = ms_buf_reserve(out, ms_page_section_bound(pc->stages, pc->ps, count));
    if (rc)
        return rc;
    uint8_t *start = out->data + out->len, *p = start;
    if (!count) {
        /* nothing to write */
    } else if (!pc->stages) {
        memcpy(p, pages, count * pc->ps);
        p += count * pc->ps;
        local.raw = count;
    } else {
        for (size_t i = 0; i < count; i++)
            pc->tags[i] = encode_page(pc, pfns[i], pages + i * pc->ps, &p, &local);
        memcpy(p, pc->tags, count);
        p += count;
        commit(pc, pfns, pc->tags, pages, count);
    }
    out->len += (size_t)(p - start);
    local.pages = count;
    local.in_bytes = count * pc->ps;
    local.out_bytes = (size_t)(p - start);
    if (st)
        ms_stage_stats_add(st, &local);
    return MS_OK;
}

static const char *tag_name(uint8_t tag)
{
    static const char *const names[] = {"RAW", "ZERO", "DELTA", "DUP"};
    return tag < 4 ? names[tag] : "unknown";
}

/* Check the section's structure and locate every payload. Reads the cache
 * but does not change it. */
static int parse_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         size_t pay_len, const uint8_t *tags)
{
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        page_item *it = &pc->items[i];
        uint8_t tag = tags[i];
        it->tag = tag;
        it->off = off;
        switch (tag) {
        case MS_TAG_RAW:
            it->len = pc->ps;
            break;
        case MS_TAG_ZERO:
            if (!(pc->stages & MS_STAGE_ZERO))
                return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): ZERO tag but the zero stage is off",
                                i, (unsigned long long)pfns[i]);
            it->len = 0;
            break;
        case MS_TAG_DELTA: {
            if (!(pc->stages & MS_STAGE_DELTA))
                return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): DELTA tag but the delta stage is off",
                                i, (unsigned long long)pfns[i]);
            uint64_t n;
            size_t l = ms_uleb_get(in + off, pay_len - off, &n);
            if (!l)
                return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): bad or truncated delta length at section offset %zu",
                                i, (unsigned long long)pfns[i], off);
            if (!n || n >= pc->ps - l)
                return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): delta length %llu out of range 1..%zu",
                                i, (unsigned long long)pfns[i], (unsigned long long)n, pc->ps - 1 - l);
            it->entry = cache_find(&pc->dc, pfns[i]);
            if (it->entry == NIL)
                return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): DELTA but no cached version of this page",
                                i, (unsigned long long)pfns[i]);
            it->off = off + l;
            it->len = (size_t)n;
            off += l;
            break;
        }
        default:
            return ms_error(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx): %s tag %u not valid here", i,
                            (unsigned long long)pfns[i], tag_name(tag), tag);
        }
        if (it->len > pay_len - off)
            return ms_error(MS_ERR_CORRUPT,
                            "page %zu (pfn 0x%llx): %s payload of %zu bytes at section offset %zu runs past the payload end (%zu)",
                            i, (unsigned long long)pfns[i], tag_name(tag), it->len, off, pay_len);
        off += it->len;
    }
    if (off != pay_len)
        return ms_error(MS_ERR_CORRUPT, "page section has %zu bytes after the last payload", pay_len - off);
    return MS_OK;
}

/* Rebuild the pages from the parsed items. Walks backwards so that, when
 * `in` and `pages` are the same buffer, no page overwrites a payload not yet
 * used: payload i always starts at or before page i's place. */
static int apply_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         uint8_t *pages, bool inplace)
{
    for (size_t k = count; k-- > 0;) {
        const page_item *it = &pc->items[k];
        uint8_t *dst = pages + k * pc->ps;
        const uint8_t *src = in + it->off;
        switch (it->tag) {
        case MS_TAG_RAW:
            if (src != dst)
                memmove(dst, src, pc->ps);
            break;
        case MS_TAG_ZERO:
            memset(dst, 0, pc->ps);
            break;
        case MS_TAG_DELTA:
            if (inplace) {
                memcpy(pc->scratch, src, it->len);
                src = pc->scratch;
            }
            memcpy(dst, cache_data(&pc->dc, it->entry), pc->ps);
            if (ms_delta_decode(src, it->len, dst, pc->ps))
                return ms_error_wrap(MS_ERR_CORRUPT, "page %zu (pfn 0x%llx)", k,
                                     (unsigned long long)pfns[k]);
            break;
        }
    }
    return MS_OK;
}

static int decode_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                          size_t in_len, uint8_t *pages, bool inplace, ms_stage_stats *st)
{
    int rc = check_count(pc, count);
    if (rc)
        return rc;
    size_t raw_len = count * pc->ps;
    ms_stage_stats local = {.pages = count, .in_bytes = raw_len, .out_bytes = in_len};
    if (!pc->stages) {
        if (in_len != raw_len)
            return ms_error(MS_ERR_CORRUPT, "page section is %zu bytes, expected %zu for %zu raw pages",
                            in_len, raw_len, count);
        if (!inplace && raw_len)
            memcpy(pages, in, raw_len);
        local.raw = count;
        goto done;
    }
    if (!count) {
        if (in_len)
            return ms_error(MS_ERR_CORRUPT, "page section of %zu bytes for no pages", in_len);
        goto done;
    }
    if (in_len < count)
        return ms_error(MS_ERR_CORRUPT, "page section of %zu bytes is shorter than its %zu tags", in_len,
                        count);
    rc = reserve_items(pc, count);
    if (rc)
        return rc;
    size_t pay_len = in_len - count;
    /* In place, the pages will overwrite the tags: keep a copy. */
    memcpy(pc->tags, in + pay_len, count);
    rc = parse_section(pc, pfns, count, in, pay_len, pc->tags);
    if (!rc)
        rc = apply_section(pc, pfns, count, in, pages, inplace);
    if (rc)
        return rc;
    for (size_t i = 0; i < count; i++) {
        local.raw += pc->tags[i] == MS_TAG_RAW;
        local.zero += pc->tags[i] == MS_TAG_ZERO;
        local.delta += pc->tags[i] == MS_TAG_DELTA;
    }
    commit(pc, pfns, pc->tags, pages, count);
done:
    if (st)
        ms_stage_stats_add(st, &local);
    return MS_OK;
}

int ms_page_coder_decode(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         size_t in_len, uint8_t *pages, ms_stage_stats *st)
{
    return decode_section(pc, pfns, count, in, in_len, pages, false, st);
}

int ms_page_coder_decode_inplace(ms_page_coder *pc, const uint64_t *pfns, size_t count, uint8_t *buf,
                                 size_t in_len, size_t cap, ms_stage_stats *st)
{
    int rc = check_count(pc, count);
    if (rc)
        return rc;
    if (cap < in_len || cap < count * pc->ps)
        return ms_error(MS_ERR_INVAL, "in-place decode of %zu pages needs a %zu-byte buffer, got %zu",
                        count, in_len > count * pc->ps ? in_len : count * pc->ps, cap);
    return decode_section(pc, pfns, count, buf, in_len, buf, true, st);
}
